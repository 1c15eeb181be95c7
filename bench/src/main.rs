//! `syncd-bench`: syncd against the classic `inotifywait | while read; do rsync …; done` script
//! and lsyncd, on the same machine, against the same real rsync daemon on 127.0.0.1, from an
//! identical start for every run. Writes a Markdown report (`docs/benchmarks.md`).
//!
//! Run it through `bench/run` (installs what is missing, builds, runs as root). Every tool is
//! started in its own process group and the whole group is stopped afterwards: nothing is left
//! running. Every run ends with an exact comparison of the target with the source.

mod measure;
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
    /// Workloads: burst, steady200, steady2000, treeops, bigfile, renames.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burst,steady200,steady2000,treeops,bigfile,renames"
    )]
    workloads: Vec<String>,
    /// Seconds a run may take to converge before it is reported as not converged.
    #[arg(long, default_value_t = 60)]
    deadline_s: u64,
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
    for &base in &args.base {
        for load in &loads {
            for tool in &tools {
                let r = run_one(tool, load, base, Duration::from_secs(args.deadline_s))
                    .with_context(|| format!("{} / {} / base {base}", tool.name(), load.name()))?;
                eprintln!("{}", measure::row(&r));
                results.push(r);
            }
            let r = ideal(load, base)?;
            eprintln!("{}", measure::row(&r));
            results.push(r);
        }
    }
    let report = measure::report(&results)?;
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
        let dir = tempfile::Builder::new()
            .prefix("syncd-bench")
            .tempdir_in("/tmp")?;
        // In memory: the figures are the tools', not this machine's disk.
        let fs = syncd_tests::Tmpfs::mount(dir.path(), "12g");
        let src = dir.path().join("src");
        let module = dir.path().join("module");
        std::fs::create_dir(&src)?;
        std::fs::create_dir(&module)?;
        workloads::base_tree(&src, base)?;
        let st = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", module.display()))
            .status()?;
        if !st.success() {
            bail!("copying the base tree failed");
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
) -> anyhow::Result<RunResult> {
    let stage = Stage::new(base)?;
    load.prepare(&stage.src)?;
    sync_module(&stage)?;
    let running = tool.start(&stage)?;
    running.wait_ready(&stage, Duration::from_secs(300))?;
    let cpu0 = tree_cpu_s(running.pgid);
    let runs0 = stage.rsyncs.count();
    let lag = load
        .tracks_lag()
        .then(|| measure::LagTracker::start(&stage.src, &stage.module));
    let t0 = Instant::now();
    let touched = load.run(&stage.src, lag.as_ref().map(|l| l.sender()))?;
    let last = t0.elapsed();
    let converged = measure::wait_converged(&stage.src, &stage.module, &touched, t0 + deadline);
    let at = t0.elapsed();
    let lag = lag.map(|l| l.finish());
    let cpu1 = tree_cpu_s(running.pgid);
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
    let differing = measure::differing(&snapshot(&stage.src), &snapshot(&stage.module));
    Ok(RunResult {
        tool: tool.name().to_string(),
        workload: load.name().to_string(),
        base,
        from_start: converged.then_some(at),
        after_last: converged.then(|| at.saturating_sub(last)),
        cpu_s: cpu1 - cpu0,
        rsyncs: runs1 - runs0,
        peak_rss_kib: peak,
        cpu_after_s: cpu2 - cpu1,
        busy_for,
        lag,
        differing,
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
    let touched = load.run(&stage.src, None)?;
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
    let differing = measure::differing(&snapshot(&stage.src), &snapshot(&stage.module));
    Ok(RunResult {
        tool: "ideal (one rsync of the changed set)".into(),
        workload: load.name().to_string(),
        base,
        from_start: ok.then_some(took),
        after_last: ok.then_some(took),
        cpu_s: cpu,
        rsyncs: 1,
        peak_rss_kib: 0,
        cpu_after_s: 0.0,
        busy_for: Some(Duration::ZERO),
        lag: None,
        differing,
    })
}

/// Paths relative to `root`.
pub fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap_or(p).to_path_buf()
}
