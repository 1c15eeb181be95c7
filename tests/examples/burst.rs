//! Benchmark: a burst of 5,000 new files (10–100 KB, 50 new directories, written as fast as one
//! process can) reaching a real rsync daemon on 127.0.0.1. Prints the time to converge and the
//! cost. Run: `cargo build --release --workspace && cargo run --release -p syncd-tests --example burst`

use std::time::Instant;

use syncd_tests::*;

fn cpu_ticks(pid: u32) -> (u64, u64) {
    // utime+stime of syncd, cutime+cstime of its reaped children (the rsyncs).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after ')' start at field 3 (state), so utime (14) is index 11.
    (
        f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0),
        f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0),
    )
}

fn main() {
    let files: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let cfg = env.config("delay_ms = 100", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let pid = d.child.id();
    let (cpu0, child0) = cpu_ticks(pid);
    let batches0 = d.log.text().matches("push batch").count();

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let start = Instant::now();
    let mut bytes = 0usize;
    for i in 0..files {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let size = 10_000 + (seed % 90_001) as usize;
        bytes += size;
        let content: Vec<u8> = (0..size).map(|j| (j as u64 ^ seed) as u8).collect();
        write(
            &env.src.join(format!("burst/d{:02}/f{i:05}.bin", i % 50)),
            &content,
        );
    }
    let written = start.elapsed();
    d.settle();
    let converged = start.elapsed();
    assert_same_tree(&env.src, &module);
    let (cpu1, child1) = cpu_ticks(pid);
    let hz = 100.0; // USER_HZ on Linux
    let batches = d.log.text().matches("push batch").count() - batches0;
    println!(
        "burst: {files} files, {:.1} MB, 50 new directories, rsync daemon on 127.0.0.1",
        bytes as f64 / 1e6
    );
    println!("  writing took            {:>8.3} s", written.as_secs_f64());
    println!(
        "  converged after start   {:>8.3} s",
        converged.as_secs_f64()
    );
    println!(
        "  converged after last write {:>5.3} s",
        (converged - written).as_secs_f64()
    );
    println!("  rsync batches           {batches:>8}");
    println!(
        "  CPU syncd               {:>8.2} s",
        (cpu1 - cpu0) as f64 / hz
    );
    println!(
        "  CPU rsync children      {:>8.2} s",
        (child1 - child0) as f64 / hz
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .trim_start_matches("VmHWM:")
        .trim();
    println!("  syncd peak RSS          {hwm:>11}");
    println!("  target tree identical   {:>8}", "yes");
}
