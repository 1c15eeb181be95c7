//! What a catch-up costs: `cargo run --release -p syncd --example catchup_time -- SRC STATE`
//! builds the index of the tree at SRC into a new journal in STATE (as a first start does),
//! then times catch-ups of the unchanged tree (the walk, the index read and the diff), printing
//! each one's time, entries walked and found, and the peak RSS.

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: catchup_time SRC STATE";
    let src = std::path::PathBuf::from(args.next().expect(usage));
    let state = std::path::PathBuf::from(args.next().expect(usage));
    let j = syncd::journal::Journal::open(&state).unwrap();
    let root = syncd::config::RootConfig {
        name: "r".into(),
        source: src,
        excludes: Default::default(),
        delay: std::time::Duration::ZERO,
        modify_delay: std::time::Duration::ZERO,
        full_resync_interval: std::time::Duration::ZERO,
        delete_guard: Default::default(),
        targets: Vec::new(),
    };
    let t = std::time::Instant::now();
    let n = syncd::catchup::rebuild(&j, &root).unwrap();
    println!(
        "index built: {n} entries in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let c = syncd::catchup::catch_up(&j, &root, None).unwrap();
        println!(
            "caught up in {:.2} s: {} walked, {} found, untrusted {:?}",
            t.elapsed().as_secs_f64(),
            c.walked,
            c.found.len(),
            c.untrusted
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("");
    println!("{peak}");
}
