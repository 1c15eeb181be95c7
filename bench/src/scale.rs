//! The scale run: syncd alone on a 1,000,000-file / 100,000-directory tree, pushing into an
//! empty module. Prints the time to watch the tree (start to "ready", which syncd announces
//! once every directory is watched), the time to first idle (the initial full sync done) and
//! the daemon's memory, then compares the whole target with the source.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::measure::{differing_count, tree_cpu_s};
use crate::tools::{sibling, Tool};
use crate::Stage;

pub struct ScaleResult {
    pub files: usize,
    pub dirs: usize,
    pub watch: Duration,
    pub first_idle: Duration,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    pub idle_rss_kib: u64,
    pub differing: usize,
    /// fs.inotify.max_user_watches during the run (raised for it if it was lower).
    pub max_watches: u64,
}

const WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// `files` files of 100 bytes, ten to a directory, the directories a thousand to a parent.
pub fn tree(src: &Path, files: usize) -> anyhow::Result<usize> {
    let mut dirs = 0;
    let body = [b'x'; 100];
    for i in 0..files {
        if i % 10 == 0 {
            let d = i / 10;
            let dir = src.join(format!("t{:04}/d{:07}", d / 1000, d));
            std::fs::create_dir_all(&dir)?;
            dirs += if d % 1000 == 0 { 2 } else { 1 };
        }
        let d = i / 10;
        std::fs::write(
            src.join(format!("t{:04}/d{:07}/f{i:08}", d / 1000, d)),
            body,
        )?;
    }
    Ok(dirs)
}

pub fn run(files: usize) -> anyhow::Result<ScaleResult> {
    let mut dirs = 0;
    let stage = Stage::build("20g", false, |src| {
        dirs = tree(src, files)?;
        Ok(())
    })?;
    let needed = (dirs as u64 + 1) * 2;
    let before: u64 = std::fs::read_to_string(WATCHES)?.trim().parse()?;
    if before < needed {
        std::fs::write(WATCHES, needed.to_string())
            .with_context(|| format!("raising {WATCHES} to {needed}"))?;
    }
    let res = measure(&stage, files, dirs, before.max(needed));
    if before < needed {
        std::fs::write(WATCHES, before.to_string())?;
    }
    res
}

fn measure(stage: &Stage, files: usize, dirs: usize, max: u64) -> anyhow::Result<ScaleResult> {
    let t0 = Instant::now();
    let running = Tool::Syncd.start(stage)?;
    let log = stage.dir.path().join("syncd.log");
    let deadline = t0 + Duration::from_secs(3600);
    let watch = loop {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("syncd ready")
        {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("syncd not ready after an hour");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let st = Command::new(sibling("syncctl")?)
        .arg("--socket")
        .arg(stage.dir.path().join("syncd.sock"))
        .args(["wait-idle", "--timeout", "3600"])
        .output()?;
    let first_idle = t0.elapsed();
    if !st.status.success() {
        bail!(
            "syncctl wait-idle failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let cpu_s = tree_cpu_s(running.pgid);
    let peak_rss_kib = running.peak_rss_kib();
    let idle_rss_kib = running.rss_kib();
    running.stop();
    let differing = differing_count(&stage.src, &stage.module);
    Ok(ScaleResult {
        files,
        dirs,
        watch,
        first_idle,
        cpu_s,
        peak_rss_kib,
        idle_rss_kib,
        differing,
        max_watches: max,
    })
}
