//! Crash cycles under a continuous writer: `kill -9` of syncd at random moments, restarted each
//! time, then an exact comparison of the whole tree. Used by the CI test (a few cycles) and by
//! the soak example (`cargo run --release -p syncd-tests --example soak -- 100`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::{assert_same_tree, now_ms, snapshot, Env, Statuses, Stream, Syncd};

/// A small deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A writer thread doing creates, appends, renames (of files and directories) and deletes in a
/// bounded namespace (so the tree stays small however long it runs), until stopped.
pub struct Writer {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub ops: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
}

impl Writer {
    pub fn start(root: &Path, seed: u64) -> Writer {
        let (stop, stopped) = mpsc::channel();
        let ops = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let (root, n, p) = (root.to_path_buf(), ops.clone(), paused.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            // Pace: a handful of operations, then wait for the stop signal for a moment. The
            // wait is the writer's own rhythm (about 2,000 operations a second), not a settle.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(2))
            {
                if p.load(Ordering::Relaxed) {
                    continue;
                }
                for _ in 0..4 {
                    one_op(&root, &mut rng);
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Writer {
            stop,
            thread: Some(thread),
            ops,
            paused,
        }
    }

    /// Stop and wait for the thread.
    pub fn finish(mut self) -> u64 {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.ops.load(Ordering::Relaxed)
    }

    /// Hold the writer between operations (or let it go again).
    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pick(rng: &mut Rng) -> PathBuf {
    PathBuf::from(format!("d{}/f{}", rng.below(8), rng.below(40)))
}

/// One random operation; failures (a name that does not exist right now) are part of the game.
fn one_op(root: &Path, rng: &mut Rng) {
    let p = root.join(pick(rng));
    let what = apply_op(root, rng, p);
    oplog(&what);
}

/// Do one operation; what was done (empty when nothing was tried).
fn apply_op(root: &Path, rng: &mut Rng, p: PathBuf) -> String {
    match rng.below(10) {
        0..=3 => {
            let _ = std::fs::create_dir_all(p.parent().unwrap());
            let len = rng.below(3000) as usize;
            let fill = b'a' + rng.below(26) as u8;
            let r = std::fs::write(&p, vec![fill; len]);
            format!("write {} {:?}", p.display(), r.is_ok())
        }
        4..=5 => {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&p) {
                let _ = writeln!(f, "appended {}", rng.next_u64());
                return format!("append {}", p.display());
            }
            String::new()
        }
        6 => {
            let to = root.join(pick(rng));
            let _ = std::fs::create_dir_all(to.parent().unwrap());
            let r = std::fs::rename(&p, &to);
            format!("rename {} {} {:?}", p.display(), to.display(), r.is_ok())
        }
        7 => {
            let r = std::fs::remove_file(&p);
            format!("rm {} {:?}", p.display(), r.is_ok())
        }
        8 => {
            // A whole directory renamed to another slot (swapping content around).
            let a = root.join(format!("d{}", rng.below(8)));
            let b = root.join(format!("d{}", rng.below(8)));
            if !b.exists() {
                let r = std::fs::rename(&a, &b);
                return format!("dirrename {} {} {:?}", a.display(), b.display(), r.is_ok());
            }
            String::new()
        }
        _ => {
            let d = root.join(format!("d{}", rng.below(8)));
            if rng.below(4) == 0 {
                let r = std::fs::remove_dir_all(&d);
                format!("rmrf {} {:?}", d.display(), r.is_ok())
            } else {
                let _ = std::fs::create_dir_all(d.join("sub"));
                let _ = std::fs::write(d.join("sub/deep"), rng.next_u64().to_string());
                format!("deep {}", d.display())
            }
        }
    }
}

/// With `SOAK_OPLOG=FILE`, every operation and cycle is appended to FILE with its time in ms
/// (to follow a path's history when a run loses one; `SYNCD_TEST_ECHO=1` shows syncd's side).
fn oplog(what: &str) {
    if what.is_empty() {
        return;
    }
    if let Some(f) = std::env::var_os("SOAK_OPLOG") {
        use std::io::Write;
        if let Ok(mut o) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            let _ = writeln!(o, "{} {}", crate::now_ms(), what);
        }
    }
}

/// What a soak run found.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoakReport {
    pub cycles: u32,
    pub ops: u64,
    pub lost: usize,
    /// Highest peak RSS of any syncd process of the run, in KiB.
    pub peak_rss_kib: u64,
}

/// Run `cycles` kill-9/restart cycles on `cfg` with a writer in `env.src`. Each kill comes at a
/// random point of syncd's own work: right after it is ready (journal replay, startup sync), just
/// after the k-th batch push was seen running (an rsync running or finishing, its paths still journaled),
/// or just after a full sync finished. Finally the writer stops, syncd settles and the trees are
/// compared with `dst` (the target's directory): `lost` counts entries that differ.
pub fn kill9_cycles(env: &Env, cfg: &Path, dst: &Path, cycles: u32, seed: u64) -> SoakReport {
    cycles_of(env, cfg, dst, cycles, seed, Syncd::kill9)
}

/// Like [`kill9_cycles`] with an orderly stop (SIGTERM) each time: every restart catches up
/// from the index with what the writer did while syncd was down.
pub fn stop_cycles(env: &Env, cfg: &Path, dst: &Path, cycles: u32, seed: u64) -> SoakReport {
    cycles_of(env, cfg, dst, cycles, seed, |d| {
        assert_eq!(d.stop(), Some(0), "an orderly stop");
    })
}

fn cycles_of(
    env: &Env,
    cfg: &Path,
    dst: &Path,
    cycles: u32,
    seed: u64,
    end: impl Fn(Syncd),
) -> SoakReport {
    let mut rng = Rng(seed | 1);
    let writer = Writer::start(&env.src, seed.wrapping_mul(31));
    let mut peak = 0;
    for c in 0..cycles {
        let d = Syncd::start(cfg, &env.socket);
        let since = now_ms();
        oplog(&format!("started cycle {c}"));
        match rng.below(3) {
            0 => {}
            1 => pushes_started(&d, 1 + rng.below(4) as usize, Duration::from_secs(5)),
            _ => {
                let events = Stream::events(&d.socket);
                let _ = events.next(0, Duration::from_secs(5), |e| {
                    e["kind"] == "full-sync" && e["time_ms"].as_u64() >= Some(since)
                });
            }
        }
        assert!(
            !d.log.text().contains("panicked"),
            "cycle {c}: syncd panicked:\n{}",
            d.log.text()
        );
        peak = peak.max(crate::peak_rss_kib(d.child.id()));
        oplog(&format!("stopping cycle {c}"));
        end(d);
        oplog(&format!("stopped cycle {c}"));
    }
    // Last start: the writer stops, everything seen must arrive.
    let d = Syncd::start(cfg, &env.socket);
    let ops = writer.finish();
    d.settle();
    let a = snapshot(&env.src);
    let b = snapshot(dst);
    let lost = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
        + b.keys().filter(|k| !a.contains_key(*k)).count();
    if lost > 0 {
        assert_same_tree(&env.src, dst);
    }
    peak = peak.max(crate::peak_rss_kib(d.child.id()));
    d.stop();
    SoakReport {
        cycles,
        ops,
        lost,
        peak_rss_kib: peak,
    }
}

/// Return once `k` pushes were seen running (paths in flight, each at another delivered
/// count of all targets together), or after `timeout`.
fn pushes_started(d: &Syncd, k: usize, timeout: Duration) {
    let mut status = Statuses::new(&d.socket);
    let sum = |v: &serde_json::Value, key: &str| -> u64 {
        v["targets"]
            .as_array()
            .map(|ts| ts.iter().filter_map(|t| t[key].as_u64()).sum())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + timeout;
    let (mut seen, mut last) = (0, None);
    while seen < k {
        let Some(v) = status.find(deadline, |v| sum(v, "in_flight") > 0) else {
            return;
        };
        let delivered = sum(&v, "delivered");
        if last != Some(delivered) {
            seen += 1;
            last = Some(delivered);
        }
    }
}
