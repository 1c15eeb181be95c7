//! What a run measures: CPU of a whole process group, rsync invocations, convergence of the
//! touched paths, the exact comparison, and the report.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncd_tests::Node;

use crate::scale::ScaleResult;
use crate::{IdleResult, RunResult};

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

/// The fields of /proc/PID/stat after the command name (state, ppid, pgrp, …), for every
/// process, with its /proc directory.
fn processes() -> impl Iterator<Item = (PathBuf, Vec<String>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let f = rest.split_whitespace().map(str::to_string).collect();
            Some((e.path(), f))
        })
}

/// Field `i` (0 = state) of a stat line, as a number.
fn num<T: std::str::FromStr>(f: &[String], i: usize) -> Option<T> {
    f.get(i).and_then(|v| v.parse().ok())
}

/// utime + stime + cutime + cstime ticks of one stat line.
fn ticks(f: &[String]) -> u64 {
    (11..=14).map(|i| num::<u64>(f, i).unwrap_or(0)).sum()
}

/// CPU seconds of every live process in group `pgid`, including the children each has reaped.
/// Live processes are counted once (a process's own times plus its reaped children's): nothing
/// is counted twice, and an rsync still running counts too.
pub fn tree_cpu_s(pgid: i32) -> f64 {
    processes()
        .filter(|(_, f)| num::<i32>(f, 2) == Some(pgid))
        .map(|(_, f)| ticks(&f))
        .sum::<u64>() as f64
        / HZ
}

/// CPU seconds of process `pid` itself: its own threads, not the children it has reaped (for
/// syncd and lsyncd, the tool without its rsyncs).
pub fn own_cpu_s(pid: i32) -> f64 {
    processes()
        .filter(|(dir, _)| {
            dir.file_name()
                .is_some_and(|n| n == pid.to_string().as_str())
        })
        .map(|(_, f)| {
            (11..=12)
                .map(|i| num::<u64>(&f, i).unwrap_or(0))
                .sum::<u64>()
        })
        .sum::<u64>() as f64
        / HZ
}

/// CPU seconds of the rsync daemon `pid` serving the transfers: its own, its reaped children's
/// and its live children's (one forked process per connection).
pub fn server_cpu_s(pid: u32) -> f64 {
    let pid = pid as i32;
    processes()
        .filter(|(dir, f)| {
            num::<i32>(f, 1) == Some(pid)
                || dir
                    .file_name()
                    .is_some_and(|n| n == pid.to_string().as_str())
        })
        .map(|(_, f)| ticks(&f))
        .sum::<u64>() as f64
        / HZ
}

/// CPU seconds the calling thread has used (the workload runs on it).
pub fn thread_cpu_s() -> f64 {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(ru.user_time()) + t(ru.system_time())
}

/// Wake-ups so far of every thread of every process in group `pgid` (voluntary and
/// involuntary context switches), per thread name.
pub fn group_wakeups(pgid: i32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (dir, _) in processes().filter(|(_, f)| num::<i32>(f, 2) == Some(pgid)) {
        for t in std::fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let n: u64 = status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            *out.entry(name.trim().to_string()).or_insert(0) += n;
        }
    }
    out
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

/// Paths that differ between two whole trees (0: exact).
pub fn differing_count(a: &Path, b: &Path) -> usize {
    differing(&syncd_tests::snapshot(a), &syncd_tests::snapshot(b))
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

/// A run's CPU: its whole process group, and split into the tool itself and its children
/// (its rsyncs; the script's inotifywait and shell too) where there is a tool.
fn cpu_text(r: &RunResult) -> String {
    match r.own_cpu_s {
        Some(own) => format!(
            "{:.2} = {:.2} + {:.2}",
            r.cpu_s,
            own,
            (r.cpu_s - own).max(0.0)
        ),
        None => format!("{:.2}", r.cpu_s),
    }
}

/// One line for the terminal.
pub fn row(r: &RunResult) -> String {
    format!(
        "{:<12} {:<8} base {:>7}: from start {} s, after last op {} s, CPU {} s, {} rsync runs, peak RSS {} KiB, busy after {}, CPU after {:.2} s, {} differing",
        r.tool,
        r.workload,
        r.base,
        secs(r.from_start),
        secs(r.after_last),
        cpu_text(r),
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

/// The figure runs are ranked by: p99 lag where tracked, else time after the last operation;
/// a run that did not converge (or missed files) ranks last.
fn key(r: &RunResult) -> f64 {
    let k = match r.lag {
        Some(l) if l.missing == 0 => Some(l.p99.as_secs_f64()),
        Some(_) => None,
        None => r.after_last.map(|d| d.as_secs_f64()),
    };
    if r.differing > 0 {
        return f64::INFINITY;
    }
    k.unwrap_or(f64::INFINITY)
}

/// The median of several runs of one tool on one workload, with the range of the key figure.
/// A run whose final comparison differed is never hidden: it is the one reported.
pub fn median(mut runs: Vec<RunResult>) -> RunResult {
    if runs.len() == 1 {
        return runs.pop().expect("one run");
    }
    let n = runs.len();
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let (lo, hi) = (key(&runs[0]), key(&runs[n - 1]));
    let pick = if runs.iter().any(|r| r.differing > 0) {
        n - 1
    } else {
        n / 2
    };
    let mut r = runs.swap_remove(pick);
    r.spread = Some((n, lo, hi));
    r
}

/// One line for the terminal: an idle run.
pub fn idle_row(r: &IdleResult) -> String {
    format!(
        "{:<12} idle     base {:>7}: CPU {:.2} s in {} s, {:.1} wake-ups/s ({}), RSS {} KiB",
        r.tool,
        r.base,
        r.cpu_s,
        r.window.as_secs(),
        r.wakeups as f64 / r.window.as_secs_f64(),
        top_text(r),
        r.rss_kib
    )
}

fn top_text(r: &IdleResult) -> String {
    r.top
        .iter()
        .take(4)
        .map(|(n, c)| format!("{n} {:.1}/s", *c as f64 / r.window.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for the terminal: the scale run.
pub fn scale_row(r: &ScaleResult) -> String {
    format!(
        "syncd scale: {} files / {} directories: watched in {:.2} s, first idle after {:.1} s, CPU {:.1} s, peak RSS {} KiB, RSS at idle {} KiB, {} differing",
        r.files,
        r.dirs,
        r.watch.as_secs_f64(),
        r.first_idle.as_secs_f64(),
        r.cpu_s,
        r.peak_rss_kib,
        r.idle_rss_kib,
        r.differing
    )
}

pub fn restart_row(r: &crate::restart::RestartResult) -> String {
    format!(
        "syncd restart: {} files, {} changes while down: ready {:.2} s, idle {:.2} s, {} bytes on the wire ({:.2} % of a plain rsync -a --delete: {} bytes), {} full syncs, CPU {:.2} s, peak RSS {} KiB, index {} bytes, {} differing",
        r.files,
        r.changes,
        r.ready.as_secs_f64(),
        r.idle.as_secs_f64(),
        r.syncd_bytes,
        100.0 * r.syncd_bytes as f64 / r.plain_bytes.max(1) as f64,
        r.plain_bytes,
        r.full_syncs,
        r.cpu_s,
        r.peak_rss_kib,
        r.index_bytes,
        r.differing
    )
}

/// The restart runs as a markdown section (empty without runs).
pub fn restart_table(rs: &[crate::restart::RestartResult]) -> String {
    if rs.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Restart after changes made while syncd was stopped\n\n\
         | tree | changes | ready | idle | bytes on the wire | plain `rsync -a --delete` | share | full syncs | syncd CPU | peak RSS | index on disk | differing |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rs {
        out.push_str(&format!(
            "| {} files | {} | {:.2} s | {:.2} s | {} | {} | {:.2} % | {} | {:.2} s | {} | {:.1} MB | {} |\n",
            r.files,
            r.changes,
            r.ready.as_secs_f64(),
            r.idle.as_secs_f64(),
            r.syncd_bytes,
            r.plain_bytes,
            100.0 * r.syncd_bytes as f64 / r.plain_bytes.max(1) as f64,
            r.full_syncs,
            r.cpu_s,
            mib(r.peak_rss_kib),
            r.index_bytes as f64 / 1e6,
            r.differing
        ));
    }
    out
}

fn fig(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "not converged".into()
    }
}

fn mib(kib: u64) -> String {
    if kib == 0 {
        "–".to_string()
    } else {
        format!("{:.1}", kib as f64 / 1024.0)
    }
}

fn find<'a>(rs: &'a [RunResult], tool: &str, load: &str, base: usize) -> Option<&'a RunResult> {
    rs.iter()
        .find(|r| r.tool == tool && r.workload == load && r.base == base)
}

/// Targets of the issue, checked against this run's figures: (target, figure, met).
fn targets(
    rs: &[RunResult],
    idle: &[IdleResult],
    scale: Option<&ScaleResult>,
    restarts: &[crate::restart::RestartResult],
) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let after = |r: &RunResult| r.after_last.map(|d| d.as_secs_f64());
    let mut bases: Vec<usize> = rs.iter().map(|r| r.base).collect();
    bases.sort_unstable();
    bases.dedup();
    for &base in &bases {
        let at = |s: &str| format!("{s} (base {base})");
        if let (Some(s), l) = (
            find(rs, "syncd", "burst", base),
            find(rs, "lsyncd", "burst", base),
        ) {
            let a = after(s);
            out.push((
                at("burst: converged ≤ 0.3 s after the last write"),
                a.map(|a| format!("{a:.3} s"))
                    .unwrap_or("not converged".into()),
                a.is_some_and(|a| a <= 0.3),
            ));
            if let Some(l) = l {
                out.push((
                    at("burst: CPU of syncd and its rsyncs ≤ 1/5 of lsyncd's"),
                    format!(
                        "{:.2} s vs {:.2} s (1/{:.1})",
                        s.cpu_s,
                        l.cpu_s,
                        l.cpu_s / s.cpu_s.max(0.001)
                    ),
                    s.cpu_s * 5.0 <= l.cpu_s,
                ));
            }
        }
        if let Some(s) = find(rs, "syncd", "burst", base) {
            let own = s.own_cpu_s.unwrap_or(f64::NAN);
            out.push((
                at("burst: CPU of syncd itself ≤ 0.25 s"),
                format!("{own:.2} s"),
                own <= 0.25,
            ));
        }
        if let Some(s) = find(rs, "syncd", "steady 200 files/s", base) {
            let p99 = s.lag.map(|l| l.p99.as_secs_f64());
            out.push((
                at("steady 200 files/s: lag p99 ≤ 0.3 s"),
                p99.map(|p| format!("{p:.3} s")).unwrap_or("–".into()),
                p99.is_some_and(|p| p <= 0.3) && s.lag.is_some_and(|l| l.missing == 0),
            ));
        }
        for (load, factor) in [("steady 200 files/s", 1.0), ("big write", 1.2)] {
            if let (Some(s), Some(l)) = (
                find(rs, "syncd", load, base),
                find(rs, "lsyncd delay=1", load, base),
            ) {
                out.push((
                    at(&format!(
                        "{load}: CPU of syncd and its rsyncs ≤ {factor}× lsyncd delay=1's"
                    )),
                    format!("{:.2} s vs {:.2} s", s.cpu_s, l.cpu_s),
                    s.cpu_s <= factor * l.cpu_s,
                ));
            }
        }
        if let Some(s) = find(rs, "syncd", "steady 2,000 files/s", base) {
            let p99 = s.lag.map(|l| l.p99.as_secs_f64());
            let a = after(s);
            out.push((
                at("steady 2,000 files/s: lag p99 ≤ 1 s, no backlog (drained ≤ 1 s after the last write)"),
                format!(
                    "p99 {}, drained {}",
                    p99.map(|p| format!("{p:.3} s")).unwrap_or("–".into()),
                    a.map(|a| format!("{a:.3} s")).unwrap_or("never".into())
                ),
                p99.is_some_and(|p| p <= 1.0) && a.is_some_and(|a| a <= 1.0),
            ));
        }
        for load in ["tree ops", "renames"] {
            if let Some(s) = find(rs, "syncd", load, base) {
                let a = after(s);
                out.push((
                    at(&format!(
                        "{load}: converged ≤ 0.3 s after the last operation"
                    )),
                    a.map(|a| format!("{a:.3} s"))
                        .unwrap_or("not converged".into()),
                    a.is_some_and(|a| a <= 0.3),
                ));
            }
        }
        if let (Some(s), Some(i)) = (
            find(rs, "syncd", "big file", base),
            find(rs, "ideal (one rsync of the changed set)", "big file", base),
        ) {
            let (a, b) = (after(s), after(i));
            let ratio = a.zip(b).map(|(a, b)| a / b);
            out.push((
                at("big file: ≤ 1.1× one plain rsync of the change"),
                ratio.map(|r| format!("{r:.2}×")).unwrap_or("–".into()),
                ratio.is_some_and(|r| r <= 1.1),
            ));
        }
    }
    // The larger base tree against the smallest: nothing worse by more than 20 %.
    if let (Some(&small), Some(&large)) = (bases.iter().min(), bases.iter().max()) {
        if large != small {
            let mut loads: Vec<&str> = Vec::new();
            for r in rs {
                if !loads.contains(&r.workload.as_str()) {
                    loads.push(&r.workload);
                }
            }
            for load in loads {
                let (Some(a), Some(b)) = (
                    find(rs, "syncd", load, small),
                    find(rs, "syncd", load, large),
                ) else {
                    continue;
                };
                let fig = |r: &RunResult| match r.lag {
                    Some(l) => Some(l.p99.as_secs_f64()),
                    None => after(r),
                };
                let (Some(fa), Some(fb)) = (fig(a), fig(b)) else {
                    continue;
                };
                // Differences under 50 ms are below this machine's noise for a single run.
                let ok = fb <= fa * 1.2 || fb - fa < 0.05;
                out.push((
                    format!("{load}: base {large} within 20 % of base {small} (or within 50 ms)"),
                    format!("{fb:.3} s vs {fa:.3} s"),
                    ok,
                ));
            }
        }
    }
    for i in idle.iter().filter(|i| i.tool == "syncd") {
        out.push((
            format!("idle (base {}): no CPU use while nothing changes", i.base),
            format!(
                "{:.2} s CPU in {} s, {:.1} wake-ups/s",
                i.cpu_s,
                i.window.as_secs(),
                i.wakeups as f64 / i.window.as_secs_f64()
            ),
            i.cpu_s < 0.01 * i.window.as_secs_f64().max(1.0),
        ));
        let rate = i.wakeups as f64 / i.window.as_secs_f64();
        out.push((
            format!("idle (base {}): ≤ 1 wake-up a second", i.base),
            format!("{rate:.1}/s"),
            rate <= 1.05,
        ));
        out.push((
            format!("idle (base {}): RSS ≤ 50 MB", i.base),
            format!("{} MiB", mib(i.rss_kib)),
            i.rss_kib * 1024 <= 50_000_000,
        ));
    }
    for r in restarts {
        let share = 100.0 * r.syncd_bytes as f64 / r.plain_bytes.max(1) as f64;
        let at = |t: &str| format!("restart, {} files, {} changes: {t}", r.files, r.changes);
        out.push((
            at("caught up, no full sync, target exact"),
            format!("{} full syncs, {} differing", r.full_syncs, r.differing),
            r.full_syncs == 0 && r.differing == 0,
        ));
        if r.files >= 1_000_000 {
            out.push((
                at("idle ≤ 4 s after the start"),
                format!("{:.2} s", r.idle.as_secs_f64()),
                r.idle <= Duration::from_secs(4),
            ));
            out.push((
                at("≤ 1 % of a plain rsync -a --delete's bytes"),
                format!("{share:.2} %"),
                share <= 1.0,
            ));
            out.push((
                at("peak RSS ≤ 100 MB"),
                format!("{} MiB", mib(r.peak_rss_kib)),
                r.peak_rss_kib * 1024 <= 100_000_000,
            ));
        }
    }
    if let Some(s) = scale {
        out.push((
            format!(
                "scale ({} files / {} dirs): watched ≤ 10 s",
                s.files, s.dirs
            ),
            format!("{:.2} s", s.watch.as_secs_f64()),
            s.watch <= Duration::from_secs(10) && s.differing == 0,
        ));
    }
    out
}

/// The Markdown report: machine, versions, date, the targets, then one table per workload and
/// base size, the idle runs and the scale run.
pub fn report(
    results: &[RunResult],
    idle: &[IdleResult],
    scale: Option<&ScaleResult>,
    restarts: &[crate::restart::RestartResult],
) -> anyhow::Result<String> {
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
    s.push_str("Generated by `bench/run` (the `syncd-bench` harness) in one run; do not edit by hand. Analysis: `docs/performance.md`.\n\n");
    s.push_str(&format!(
        "- date: {}\n- machine: {} cores, {cpu}; kernel {}\n- {}\n- {}\n- lsyncd {}\n- {}\n- command: `bench/run {}`\n\n",
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
        std::env::args().skip(1).filter(|a| !a.starts_with("--out") && !a.ends_with(".md")).collect::<Vec<_>>().join(" "),
    ));
    s.push_str("## Targets\n\n| target | syncd | met |\n|---|---|---|\n");
    for (t, fig, ok) in targets(results, idle, scale, restarts) {
        s.push_str(&format!(
            "| {t} | {fig} | {} |\n",
            if ok { "yes" } else { "**no**" }
        ));
    }
    s.push('\n');
    s.push_str(
        "Every tool pushes to the same rsync daemon on 127.0.0.1, from an identical start, on a tmpfs. \
\"from start\" and \"after last op\" are the times until every path the workload touched is at \
the target as at the source; CPU is the tool's whole process group (its rsyncs included) from \
the workload's start to convergence, split into the tool's own process and its children (rsyncs; for the script also inotifywait and its shells), \"server CPU\" the rsync daemon's over the same time; \"busy after\" is how long it kept working once the target was right (no rsync and no CPU \
for half a second ends it; checked for 30 s) and \"CPU after\" what it used meanwhile; \
\"differing\" counts paths that differ in the final exact comparison (0 = exact). \
The ideal is one `rsync -a --files-from` of exactly the changed set, started after the workload. \
syncd and the ideal run several times per table (`--repeat`): the row is the median run by the key figure (p99 lag for the \
steady workloads, time after the last operation otherwise) and the last column gives the range over all runs; \
the other tools run once (their runs are long, and their figures far apart from syncd's). The targets are checked on the median rows.\n\n",
    );
    if !idle.is_empty() {
        s.push_str("## Idle\n\nEach tool started on the base tree, ready, then left alone while nothing changes; the window starts 11 s after ready.\n\n| tool | base tree | CPU (s) | window (s) | wake-ups/s | by thread | RSS (MiB, all its processes) |\n|---|---|---|---|---|---|---|\n");
        for r in idle {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {} | {:.1} | {} | {} |\n",
                r.tool,
                r.base,
                r.cpu_s,
                r.window.as_secs(),
                r.wakeups as f64 / r.window.as_secs_f64(),
                top_text(r),
                mib(r.rss_kib)
            ));
        }
        s.push('\n');
    }
    let mut keys: Vec<(usize, String)> = results
        .iter()
        .map(|r| (r.base, r.workload.clone()))
        .collect();
    keys.dedup();
    for (base, load) in keys {
        s.push_str(&format!("## {load}, base tree {base} files\n\n"));
        let rows: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.base == base && r.workload == load)
            .collect();
        if let Some(r) = rows.first() {
            s.push_str(&format!(
                "The workload itself took {:.3} s and {:.2} s of CPU.\n\n",
                r.workload_s, r.workload_cpu_s
            ));
        }
        s.push_str("| tool | from start (s) | after last op (s) | lag p50 / p95 / p99 / max (s) | CPU (s): all = itself + children | server CPU (s) | rsync runs | peak RSS (MiB) | busy after | CPU after (s) | differing | runs: range of the key figure (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {} | {} |\n",
                r.tool,
                secs(r.from_start),
                secs(r.after_last),
                r.lag.map(|l| lag_text(&l)).unwrap_or_else(|| "–".into()),
                cpu_text(r),
                r.server_cpu_s,
                r.rsyncs,
                mib(r.peak_rss_kib),
                busy(r.busy_for),
                r.cpu_after_s,
                r.differing,
                match r.spread {
                    Some((n, lo, hi)) => format!("median of {n}: {} – {}", fig(lo), fig(hi)),
                    None => "1".into(),
                }
            ));
        }
        s.push('\n');
    }
    if let Some(r) = scale {
        s.push_str(&format!(
            "## Scale: syncd alone, {} files in {} directories, into an empty module\n\n\
fs.inotify.max_user_watches was {} for the run.\n\n\
| watched (start to ready) | first idle (initial sync done) | CPU (s, with its rsyncs) | peak RSS (MiB) | RSS at idle (MiB) | differing |\n|---|---|---|---|---|---|\n\
| {:.2} s | {:.1} s | {:.1} | {} | {} | {} |\n\n",
            r.files,
            r.dirs,
            r.max_watches,
            r.watch.as_secs_f64(),
            r.first_idle.as_secs_f64(),
            r.cpu_s,
            mib(r.peak_rss_kib),
            mib(r.idle_rss_kib),
            r.differing
        ));
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
