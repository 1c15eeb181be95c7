//! What a run measures: CPU of a whole process group, rsync invocations, convergence of the
//! touched paths, the exact comparison, and the report.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncd_tests::Node;

use crate::RunResult;

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

/// CPU seconds of every live process in group `pgid`, including the children each has reaped.
/// Live processes are counted once (a process's own times plus its reaped children's): nothing
/// is counted twice, and an rsync still running counts too.
pub fn tree_cpu_s(pgid: i32) -> f64 {
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        // After the command name: state ppid pgrp … utime(12) stime(13) cutime(14) cstime(15).
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        for i in 11..=14 {
            ticks += f.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ticks as f64 / HZ
}

/// Counts rsync invocations through a shim first on PATH (`shim/rsync` appends a line, then
/// execs the real rsync). The shim costs every tool the same one `sh` per invocation.
pub struct Rsyncs {
    pub shim_dir: PathBuf,
    counter: PathBuf,
}

impl Rsyncs {
    pub fn new(dir: &Path) -> anyhow::Result<Rsyncs> {
        let shim_dir = dir.join("shim");
        std::fs::create_dir_all(&shim_dir)?;
        let counter = dir.join("rsync-invocations");
        std::fs::write(&counter, "")?;
        let real = which("rsync")?;
        let shim = shim_dir.join("rsync");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n",
                counter.display(),
                real.display()
            ),
        )?;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
        Ok(Rsyncs { shim_dir, counter })
    }

    pub fn count(&self) -> u64 {
        std::fs::read_to_string(&self.counter)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0)
    }

    /// PATH with the shim first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut p = std::ffi::OsString::from(self.shim_dir.as_os_str());
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_default());
        p
    }
}

/// The first `name` on PATH.
pub fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("{name} not found on PATH"))
}

/// What a path is, for the convergence check: kind, size and mtime to the nanosecond (every
/// tool's rsync keeps nanoseconds; seconds alone let a same-size overwrite within the second of
/// the previous write pass as already converged).
type Quick = (u32, u64, i64, i64);

fn quick(p: &Path) -> Option<Quick> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let kind = m.mode() & 0o170000;
    if m.is_dir() {
        Some((kind, 0, 0, 0))
    } else {
        Some((kind, m.size(), m.mtime(), m.mtime_nsec()))
    }
}

/// Wait until every touched path is at the target as it is at the source (or absent at both),
/// polling every few milliseconds; false at `deadline`.
pub fn wait_converged(src: &Path, dst: &Path, touched: &[PathBuf], deadline: Instant) -> bool {
    let want: Vec<(PathBuf, Option<Quick>)> = touched
        .iter()
        .map(|p| (p.clone(), quick(&src.join(p))))
        .collect();
    let mut first_unmet = 0;
    loop {
        // Start where the last poll failed: the check is cheap once most paths arrived.
        let unmet = want[first_unmet..]
            .iter()
            .position(|(p, w)| quick(&dst.join(p)) != *w)
            .map(|i| i + first_unmet);
        match unmet {
            None => {
                // Everything seen once: confirm the whole list in one pass.
                if want.iter().all(|(p, w)| quick(&dst.join(p)) == *w) {
                    return true;
                }
                first_unmet = 0;
            }
            Some(i) => first_unmet = i,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Paths that differ between two snapshots (missing, extra or different).
pub fn differing(a: &BTreeMap<Vec<u8>, Node>, b: &BTreeMap<Vec<u8>, Node>) -> usize {
    a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
        + b.keys().filter(|k| !a.contains_key(*k)).count()
}

/// Run `cmd` with `input` on stdin; (success, CPU seconds of it and its children).
pub fn run_timed(cmd: &mut Command, input: &[u8]) -> anyhow::Result<(bool, f64)> {
    use std::io::Write;
    let before = children_cpu_s();
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
    child.stdin.take().unwrap().write_all(input)?;
    let ok = child.wait()?.success();
    Ok((ok, children_cpu_s() - before))
}

fn children_cpu_s() -> f64 {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(ru.user_time()) + t(ru.system_time())
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64()))
        .unwrap_or_else(|| "not converged".into())
}

/// One line for the terminal.
pub fn row(r: &RunResult) -> String {
    format!(
        "{:<12} {:<8} base {:>7}: from start {} s, after last op {} s, CPU {:.2} s, {} rsync runs, peak RSS {} KiB, busy after {}, CPU after {:.2} s, {} differing",
        r.tool,
        r.workload,
        r.base,
        secs(r.from_start),
        secs(r.after_last),
        r.cpu_s,
        r.rsyncs,
        r.peak_rss_kib,
        busy(r.busy_for),
        r.cpu_after_s,
        r.differing
    ) + &r.lag.map(|l| format!(", lag p50/p95/p99/max {}", lag_text(&l))).unwrap_or_default()
}

fn busy(d: Option<Duration>) -> String {
    match d {
        // Quiet in the first half-second window: not busy (the window is the resolution).
        Some(d) if d < Duration::from_millis(50) => "no".into(),
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
        None => "> 30 s".into(),
    }
}

/// The Markdown report: machine, versions, date, then one table per workload and base size.
pub fn report(results: &[RunResult]) -> anyhow::Result<String> {
    let out = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "not found".into())
    };
    let first_line = |s: String| s.lines().next().unwrap_or("").to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str("Generated by `bench/run` (the `syncd-bench` harness); do not edit by hand.\n\n");
    s.push_str(&format!(
        "- date: {}\n- machine: {} cores, {cpu}; kernel {}\n- {}\n- {}\n- lsyncd {}\n- {}\n\n",
        out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        out("uname", &["-r"]),
        first_line(out("rsync", &["--version"])),
        first_line(out(
            std::env::current_exe()?
                .with_file_name("syncd")
                .to_str()
                .unwrap_or("syncd"),
            &["--version"]
        )),
        out("lsyncd", &["--version"]).replace("Version: ", ""),
        first_line(out("inotifywait", &["--help"])),
    ));
    s.push_str(
        "Every tool pushes to the same rsync daemon on 127.0.0.1, from an identical start. \
\"from start\" and \"after last op\" are the times until every path the workload touched is at \
the target as at the source; CPU is the tool's whole process group (its rsyncs included) from \
the workload's start to convergence; \"busy after\" is how long it kept working once the target was right (no rsync and no CPU \
for half a second ends it; checked for 30 s) and \"CPU after\" what it used meanwhile; \
\"differing\" counts paths that differ in the final exact comparison (0 = exact).\n\n",
    );
    let mut keys: Vec<(usize, String)> = results
        .iter()
        .map(|r| (r.base, r.workload.clone()))
        .collect();
    keys.dedup();
    for (base, load) in keys {
        s.push_str(&format!("## {load}, base tree {base} files\n\n"));
        s.push_str("| tool | from start (s) | after last op (s) | lag p50 / p95 / p99 / max (s) | CPU (s) | rsync runs | peak RSS (MiB) | busy after | CPU after (s) | differing |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for r in results
            .iter()
            .filter(|r| r.base == base && r.workload == load)
        {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {} |\n",
                r.tool,
                secs(r.from_start),
                secs(r.after_last),
                r.lag.map(|l| lag_text(&l)).unwrap_or_else(|| "–".into()),
                r.cpu_s,
                r.rsyncs,
                if r.peak_rss_kib == 0 {
                    "–".to_string()
                } else {
                    format!("{:.1}", r.peak_rss_kib as f64 / 1024.0)
                },
                busy(r.busy_for),
                r.cpu_after_s,
                r.differing
            ));
        }
        s.push('\n');
    }
    Ok(s)
}

/// Per-file lag percentiles.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Files never seen at the target while tracking.
    pub missing: usize,
}

/// Tracks, for every file the workload reports as written, when it first appears at the target
/// as it is at the source: a thread polling the target for the files not seen yet.
pub struct LagTracker {
    tx: std::sync::mpsc::Sender<(PathBuf, Instant)>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Option<Duration>>>,
}

impl LagTracker {
    pub fn start(src: &Path, dst: &Path) -> LagTracker {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, Instant)>();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (src, dst, stop) = (src.to_path_buf(), dst.to_path_buf(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut waiting: Vec<(PathBuf, Instant, Option<Quick>)> = Vec::new();
            let mut lags = Vec::new();
            loop {
                while let Ok((p, at)) = rx.try_recv() {
                    let want = quick(&src.join(&p));
                    waiting.push((p, at, want));
                }
                let now = Instant::now();
                waiting.retain(|(p, at, want)| {
                    if quick(&dst.join(p)) == *want {
                        lags.push(Some(now.saturating_duration_since(*at)));
                        false
                    } else {
                        true
                    }
                });
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lags.extend(waiting.iter().map(|_| None));
                    return lags;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        LagTracker { tx, done, thread }
    }

    pub fn sender(&self) -> &std::sync::mpsc::Sender<(PathBuf, Instant)> {
        &self.tx
    }

    pub fn finish(self) -> Lag {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        let lags = self.thread.join().unwrap_or_default();
        let missing = lags.iter().filter(|l| l.is_none()).count();
        let mut seen: Vec<Duration> = lags.into_iter().flatten().collect();
        seen.sort();
        let pct = |q: f64| {
            seen.get(((seen.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Lag {
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: seen.last().copied().unwrap_or_default(),
            missing,
        }
    }
}

/// "p50 / p95 / p99 / max" in seconds.
pub fn lag_text(l: &Lag) -> String {
    let s = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let mut t = format!("{} / {} / {} / {}", s(l.p50), s(l.p95), s(l.p99), s(l.max));
    if l.missing > 0 {
        t.push_str(&format!(" ({} never seen)", l.missing));
    }
    t
}
