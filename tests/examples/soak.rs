//! Soak: N `kill -9` / restart cycles of syncd under a continuous writer (creates, appends,
//! renames, deletes), each kill at a random point of syncd's work, then an exact comparison.
//! Not in CI (minutes). Run as root, after `cargo build --release --workspace`:
//!
//! `SYNCD_BIN=target/release/syncd SYNCCTL_BIN=target/release/syncctl cargo run --release -p syncd-tests --example soak -- 100 [seed]`
//!
//! Prints `cycles, paths written, paths lost`.

use syncd_tests::soak::kill9_cycles;
use syncd_tests::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let env = Env::new();
    let cfg = env.local_config("");
    let started = std::time::Instant::now();
    let r = kill9_cycles(&env, &cfg, &env.dst, cycles, seed);
    println!("cycles, paths written, paths lost");
    println!("{}, {}, {}", r.cycles, r.ops, r.lost);
    eprintln!("({:.1} s, seed {seed})", started.elapsed().as_secs_f64());
    if r.lost > 0 {
        std::process::exit(1);
    }
}
