//! `syncd-bench`: syncd against the classic `inotifywait | while read; do rsync …; done` script
//! and lsyncd, on the same machine, against the same real rsync daemon on 127.0.0.1, from an
//! identical start for every run. Writes a Markdown report (`docs/benchmarks.md`).
//!
//! Run it through `bench/run` (installs what is missing, builds, runs as root). Every tool is
//! started in its own process group and the whole group is stopped afterwards: nothing is left
//! running. Every run ends with an exact comparison of the target with the source.

mod measure;
mod rename_big;
mod restart;
mod scale;
mod tools;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use syncd_tests::{snapshot, RsyncDaemon};

use crate::measure::{tree_cpu_s, Rsyncs};
use crate::tools::Tool;
use crate::workloads::Workload;

#[derive(Parser)]
#[command(about = "Benchmark syncd against the inotifywait|rsync script and lsyncd")]
struct Args {
    /// Where the Markdown report goes.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Base tree sizes (files) each workload runs on.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    base: Vec<usize>,
    /// Tools: syncd, script, lsyncd, lsyncd-delay1.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "syncd,script,lsyncd,lsyncd-delay1"
    )]
    tools: Vec<String>,
    /// Workloads: burst, steady200, steady2000, treeops, bigfile, bigwrite, renames.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burst,steady200,steady2000,treeops,bigfile,renames"
    )]
    workloads: Vec<String>,
    /// Seconds a run may take to converge before it is reported as not converged.
    #[arg(long, default_value_t = 60)]
    deadline_s: u64,
    /// Seconds each tool is watched doing nothing on every base tree (0: no idle runs).
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
    /// Runs of syncd and of the ideal per workload and base tree; the median run is reported
    /// with the range of all (the other tools run once: their figures are far apart or
    /// their runs are long).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep every tool's log in this directory (named tool-workload-base.log).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Files of the scale run (syncd alone, one directory per ten files, into an empty
    /// module; 0: no scale run).
    #[arg(long, default_value_t = 1_000_000)]
    scale: usize,
    /// Trees (files) of the restart runs: syncd stopped, `--restart-changes` changes made, syncd
    /// started again; bytes on the wire against one plain `rsync -a --delete` (0: none).
    #[arg(long, value_delimiter = ',', default_value = "20000,1000000")]
    restart: Vec<usize>,
    /// Changes made while syncd is stopped, in each restart run.
    #[arg(long, default_value_t = 100)]
    restart_changes: usize,
    /// Tools of the "rename big" runs (bytes on the wire for renaming a 30 MiB directory and a
    /// 16 MiB file and moving an 8 MiB file, then 200, 100 and 8 MiB, with one plain rsync of
    /// the changed paths beside them); empty: no such run.
    #[arg(long, value_delimiter = ',', default_value = "syncd,lsyncd-delay1")]
    rename_big: Vec<String>,
}

/// One measured run.
pub struct RunResult {
    pub tool: String,
    pub workload: String,
    pub base: usize,
    /// From the workload's first operation to convergence (None: did not converge).
    pub from_start: Option<Duration>,
    /// From its last operation to convergence.
    pub after_last: Option<Duration>,
    pub cpu_s: f64,
    /// Of `cpu_s`, the tool's own process (without its rsyncs and other children); None for
    /// the ideal, which is rsync alone.
    pub own_cpu_s: Option<f64>,
    /// CPU of the rsync daemon serving the run (all its transfer processes).
    pub server_cpu_s: f64,
    /// How long the workload itself took, and the CPU it used.
    pub workload_s: f64,
    pub workload_cpu_s: f64,
    pub rsyncs: u64,
    pub peak_rss_kib: u64,
    /// CPU seconds used after convergence until the tool was quiet (or 30 s passed).
    pub cpu_after_s: f64,
    /// How long it kept working after convergence (None: still busy after 30 s).
    pub busy_for: Option<Duration>,
    /// Per-file lag (p50, p95, p99, max) for the steady workloads.
    pub lag: Option<measure::Lag>,
    /// Paths that differ at the end (0: exact).
    pub differing: usize,
    /// Runs behind this row and the range of their key figure (p99 lag for the steady
    /// workloads, time after the last operation otherwise), when more than one.
    pub spread: Option<(usize, f64, f64)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root (bench/run does): the rsync daemon and lsyncd need it");
    }
    let tools: Vec<Tool> = args
        .tools
        .iter()
        .map(|t| Tool::parse(t))
        .collect::<anyhow::Result<_>>()?;
    let loads: Vec<Workload> = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<_>>()?;
    let mut results = Vec::new();
    let mut idle = Vec::new();
    for &base in &args.base {
        if args.idle_s > 0 {
            for tool in &tools {
                let r = idle_one(tool, base, Duration::from_secs(args.idle_s))
                    .with_context(|| format!("{} / idle / base {base}", tool.name()))?;
                eprintln!("{}", measure::idle_row(&r));
                idle.push(r);
            }
        }
        for load in &loads {
            for tool in &tools {
                let n = if matches!(tool, Tool::Syncd) {
                    args.repeat
                } else {
                    1
                };
                let mut runs = Vec::new();
                for _ in 0..n.max(1) {
                    let r = run_one(
                        tool,
                        load,
                        base,
                        Duration::from_secs(args.deadline_s),
                        args.logs.as_deref(),
                    )
                    .with_context(|| format!("{} / {} / base {base}", tool.name(), load.name()))?;
                    eprintln!("{}", measure::row(&r));
                    runs.push(r);
                }
                results.push(measure::median(runs));
            }
            let mut runs = Vec::new();
            for _ in 0..args.repeat.max(1) {
                let r = ideal(load, base)?;
                eprintln!("{}", measure::row(&r));
                runs.push(r);
            }
            results.push(measure::median(runs));
        }
    }
    let scale = if args.scale > 0 {
        let r = scale::run(args.scale).context("scale run")?;
        eprintln!("{}", measure::scale_row(&r));
        Some(r)
    } else {
        None
    };
    let mut restarts = Vec::new();
    for &files in args.restart.iter().filter(|f| **f > 0) {
        let r = restart::run(files, args.restart_changes).context("restart run")?;
        eprintln!("{}", measure::restart_row(&r));
        restarts.push(r);
    }
    let big_tools = args
        .rename_big
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| Tool::parse(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let renamed = match big_tools.is_empty() {
        true => Vec::new(),
        false => rename_big::run(&big_tools, args.logs.as_deref()).context("rename big run")?,
    };
    for r in &renamed {
        eprintln!(
            "rename big ({} MiB directory): {}: {} bytes on the wire, converged after {:?}",
            r.sizes.dir, r.tool, r.bytes, r.converged
        );
    }
    let mut report = measure::report(&results, &idle, scale.as_ref(), &restarts)?;
    report.push_str(&measure::restart_table(&restarts));
    report.push_str(&rename_big::table(&renamed));
    std::fs::write(&args.out, report).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

/// A fresh directory with a base tree in `src/`, the same tree already in the daemon's module,
/// and the daemon running.
pub struct Stage {
    // Unmounted (lazily) on drop, then the directory below it is removed.
    _fs: syncd_tests::Tmpfs,
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub module: PathBuf,
    pub daemon: RsyncDaemon,
    pub rsyncs: Rsyncs,
}

impl Stage {
    fn new(base: usize) -> anyhow::Result<Stage> {
        Stage::build("12g", true, |src| workloads::base_tree(src, base))
    }

    /// A tmpfs of `size` with `src/` filled by `populate`, the module a copy of it (or empty).
    pub fn build(
        size: &str,
        copy: bool,
        populate: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Stage> {
        let dir = tempfile::Builder::new()
            .prefix("syncd-bench")
            .tempdir_in("/tmp")?;
        // In memory: the figures are the tools', not this machine's disk.
        let fs = syncd_tests::Tmpfs::mount(dir.path(), size);
        let src = dir.path().join("src");
        let module = dir.path().join("module");
        std::fs::create_dir(&src)?;
        std::fs::create_dir(&module)?;
        populate(&src)?;
        if copy {
            let st = Command::new("rsync")
                .arg("-a")
                .arg(format!("{}/", src.display()))
                .arg(format!("{}/", module.display()))
                .status()?;
            if !st.success() {
                bail!("copying the base tree failed");
            }
        }
        let daemon = RsyncDaemon::start(dir.path(), &module, "");
        let rsyncs = Rsyncs::new(dir.path())?;
        Ok(Stage {
            _fs: fs,
            dir,
            src,
            module,
            daemon,
            rsyncs,
        })
    }

    /// CPU seconds of the rsync daemon so far.
    pub fn server_cpu_s(&self) -> f64 {
        self.daemon
            .child
            .as_ref()
            .map(|c| measure::server_cpu_s(c.id()))
            .unwrap_or(0.0)
    }

    /// `rsync://` URL of the module.
    pub fn url(&self) -> String {
        format!("rsync://syncuser@127.0.0.1:{}/mod/", self.daemon.port)
    }
}

fn run_one(
    tool: &Tool,
    load: &Workload,
    base: usize,
    deadline: Duration,
    logs: Option<&Path>,
) -> anyhow::Result<RunResult> {
    let stage = Stage::new(base)?;
    load.prepare(&stage.src)?;
    sync_module(&stage)?;
    let running = tool.start(&stage)?;
    let running_log = running.log.clone();
    running.wait_ready(&stage, Duration::from_secs(300))?;
    let cpu0 = tree_cpu_s(running.pgid);
    let own0 = measure::own_cpu_s(running.pgid);
    let server0 = stage.server_cpu_s();
    let runs0 = stage.rsyncs.count();
    let lag = load
        .tracks_lag()
        .then(|| measure::LagTracker::start(&stage.src, &stage.module));
    let t0 = Instant::now();
    let wcpu0 = measure::thread_cpu_s();
    let touched = load.run(&stage.src, lag.as_ref().map(|l| l.sender()))?;
    let last = t0.elapsed();
    let wcpu = measure::thread_cpu_s() - wcpu0;
    let converged = measure::wait_converged(&stage.src, &stage.module, &touched, t0 + deadline);
    let at = t0.elapsed();
    let lag = lag.map(|l| l.finish());
    let cpu1 = tree_cpu_s(running.pgid);
    let own1 = measure::own_cpu_s(running.pgid);
    let server1 = stage.server_cpu_s();
    let runs1 = stage.rsyncs.count();
    // Is it still working once the target is right? Quiet: no rsync and (almost) no CPU for
    // half a second; given up on after 30 s.
    let busy_from = Instant::now();
    let mut busy_for = None;
    let mut cpu_prev = cpu1;
    while busy_from.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        let cpu = tree_cpu_s(running.pgid);
        if cpu - cpu_prev < 0.01 && !running.rsync_running() {
            busy_for = Some(
                busy_from
                    .elapsed()
                    .saturating_sub(Duration::from_millis(500)),
            );
            break;
        }
        cpu_prev = cpu;
    }
    let cpu2 = tree_cpu_s(running.pgid);
    let peak = running.peak_rss_kib();
    running.stop();
    if let Some(dir) = logs {
        std::fs::create_dir_all(dir)?;
        let name = format!("{}-{}-{base}.log", tool.name(), load.name())
            .replace([' ', '=', ',', '/'], "_");
        std::fs::copy(running_log, dir.join(name))?;
    }
    let differing = measure::differing(&snapshot(&stage.src), &snapshot(&stage.module));
    Ok(RunResult {
        tool: tool.name().to_string(),
        workload: load.name().to_string(),
        base,
        from_start: converged.then_some(at),
        after_last: converged.then(|| at.saturating_sub(last)),
        cpu_s: cpu1 - cpu0,
        own_cpu_s: Some(own1 - own0),
        server_cpu_s: server1 - server0,
        workload_s: last.as_secs_f64(),
        workload_cpu_s: wcpu,
        rsyncs: runs1 - runs0,
        peak_rss_kib: peak,
        cpu_after_s: cpu2 - cpu1,
        busy_for,
        lag,
        differing,
        spread: None,
    })
}

/// Make the module equal to the source (after a workload's preparation).
fn sync_module(stage: &Stage) -> anyhow::Result<()> {
    let st = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", stage.src.display()))
        .arg(format!("{}/", stage.module.display()))
        .status()?;
    if !st.success() {
        bail!("syncing the module before the run failed");
    }
    Ok(())
}

/// The ideal: the workload with no tool running, then one rsync of exactly the changed set.
fn ideal(load: &Workload, base: usize) -> anyhow::Result<RunResult> {
    let stage = Stage::new(base)?;
    load.prepare(&stage.src)?;
    sync_module(&stage)?;
    let w0 = Instant::now();
    let wcpu0 = measure::thread_cpu_s();
    let touched = load.run(&stage.src, None)?;
    let (workload_s, workload_cpu_s) =
        (w0.elapsed().as_secs_f64(), measure::thread_cpu_s() - wcpu0);
    let mut list = Vec::new();
    // A missing path whose parent is missing too goes with its parent (rsync would complain).
    let listed = touched.iter().filter(|p| {
        stage.src.join(p).symlink_metadata().is_ok()
            || p.parent().is_none_or(|d| stage.src.join(d).is_dir())
    });
    for p in listed {
        list.extend_from_slice(p.as_os_str().as_encoded_bytes());
        list.push(0);
    }
    let t0 = Instant::now();
    let server0 = stage.server_cpu_s();
    let (ok, cpu) = measure::run_timed(
        Command::new("rsync")
            .args([
                "-a",
                "-I",
                "-0",
                "--files-from=-",
                "--delete-missing-args",
                "--force",
            ])
            .arg(format!(
                "--password-file={}",
                stage.daemon.password_file.display()
            ))
            .arg(format!("{}/", stage.src.display()))
            .arg(stage.url()),
        &list,
    )?;
    let took = t0.elapsed();
    // The daemon's transfer process may still be finishing its side.
    let server_cpu_s = settled(|| stage.server_cpu_s()) - server0;
    let differing = measure::differing(&snapshot(&stage.src), &snapshot(&stage.module));
    Ok(RunResult {
        tool: "ideal (one rsync of the changed set)".into(),
        workload: load.name().to_string(),
        base,
        from_start: ok.then_some(took),
        after_last: ok.then_some(took),
        cpu_s: cpu,
        own_cpu_s: None,
        server_cpu_s,
        workload_s,
        workload_cpu_s,
        rsyncs: 1,
        peak_rss_kib: 0,
        cpu_after_s: 0.0,
        busy_for: Some(Duration::ZERO),
        lag: None,
        differing,
        spread: None,
    })
}

/// Paths relative to `root`.
pub fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap_or(p).to_path_buf()
}

/// A CPU counter read until two readings 100 ms apart agree (at most 5 s).
fn settled(read: impl Fn() -> f64) -> f64 {
    let mut v = read();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let w = read();
        if (w - v).abs() < 0.005 {
            return w;
        }
        v = w;
    }
    v
}

/// From "ready" to the start of the idle window.
const IDLE_SETTLE: Duration = Duration::from_secs(11);

/// A tool doing nothing: what it costs while no file changes.
pub struct IdleResult {
    pub tool: String,
    pub base: usize,
    pub window: Duration,
    pub cpu_s: f64,
    /// Wake-ups (context switches) of all its threads, and the busiest thread names.
    pub wakeups: u64,
    pub top: Vec<(String, u64)>,
    pub rss_kib: u64,
}

fn idle_one(tool: &Tool, base: usize, window: Duration) -> anyhow::Result<IdleResult> {
    let stage = Stage::new(base)?;
    let running = tool.start(&stage)?;
    running.wait_ready(&stage, Duration::from_secs(600))?;
    // Idle is what follows the work: tokio keeps an idle blocking thread 10 s, and each wakes
    // once to end (performance.md §6).
    std::thread::sleep(IDLE_SETTLE);
    let cpu0 = tree_cpu_s(running.pgid);
    let w0 = measure::group_wakeups(running.pgid);
    // The measuring window: nothing changes on purpose while it runs.
    std::thread::sleep(window);
    let cpu1 = tree_cpu_s(running.pgid);
    let w1 = measure::group_wakeups(running.pgid);
    let rss = running.rss_kib();
    running.stop();
    let mut top: Vec<(String, u64)> = w1
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*w0.get(k).unwrap_or(&0))))
        .filter(|(_, n)| *n > 0)
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(IdleResult {
        tool: tool.name().to_string(),
        base,
        window,
        cpu_s: cpu1 - cpu0,
        wakeups: top.iter().map(|t| t.1).sum(),
        top,
        rss_kib: rss,
    })
}
