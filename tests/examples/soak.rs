//! Soak: N `kill -9` (or orderly `stop`) / restart cycles of syncd under a continuous writer
//! (creates, appends, renames, deletes), each at a random point of syncd's work, then an exact
//! comparison.
//! Not in CI (minutes). Run as root, after `cargo build --release --workspace`:
//!
//! `SYNCD_BIN=target/release/syncd SYNCCTL_BIN=target/release/syncctl cargo run --release -p syncd-tests --example soak -- 100 [seed] [local|daemon] [kill9|stop]`
//!
//! Prints `cycles, paths written, paths lost` (paths written: the writer's operations).

use syncd_tests::soak::{kill9_cycles, stop_cycles};
use syncd_tests::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let kind = args.next().unwrap_or_else(|| "local".into());
    let end = args.next().unwrap_or_else(|| "kill9".into());
    let cycles_of = match end.as_str() {
        "kill9" => kill9_cycles,
        "stop" => stop_cycles,
        other => {
            eprintln!("unknown way to end a cycle {other:?}: use kill9 or stop");
            std::process::exit(2);
        }
    };
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let (_daemon, cfg, dst) = match kind.as_str() {
        "local" => (None, env.local_config(""), env.dst.clone()),
        "daemon" => {
            let d = RsyncDaemon::start(env.dir.path(), &module, "");
            let cfg = env.config("", &d.target("remote", ""));
            (Some(d), cfg, module.clone())
        }
        other => {
            eprintln!("unknown target kind {other:?}: use local or daemon");
            std::process::exit(2);
        }
    };
    let started = std::time::Instant::now();
    let r = cycles_of(&env, &cfg, &dst, cycles, seed);
    println!("cycles, paths written, paths lost");
    println!("{}, {}, {}", r.cycles, r.ops, r.lost);
    eprintln!(
        "({kind} target, {end}, {:.1} s, seed {seed}, peak syncd RSS {} MiB)",
        started.elapsed().as_secs_f64(),
        r.peak_rss_kib / 1024
    );
    if r.lost > 0 {
        std::process::exit(1);
    }
}
