//! The restart run: what a restart of syncd costs after `changes` changes were made to a tree
//! of `files` files while it was stopped, in bytes on the wire (counted by a relay in front
//! of the rsync daemon), against one plain `rsync -a --delete` of the same tree after the same
//! number of changes, in the same run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::measure::{differing_count, tree_cpu_s};
use crate::scale::tree;
use crate::tools::{sibling, Tool};
use crate::Stage;
use syncd_tests::RSYNC_PASSWORD;

pub struct RestartResult {
    pub files: usize,
    pub changes: usize,
    /// Bytes both ways through the relay while syncd restarted and caught up.
    pub syncd_bytes: u64,
    /// The same for one plain `rsync -a --delete` after as many changes.
    pub plain_bytes: u64,
    /// From the restart to "ready", and to the first idle.
    pub ready: Duration,
    pub idle: Duration,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    /// Full syncs syncd ran at the restart (its log's "full sync done" lines).
    pub full_syncs: usize,
    /// Entries differing between source and module at the end.
    pub differing: usize,
    pub index_bytes: u64,
}

/// A TCP relay on 127.0.0.1 in front of `port`, counting the bytes it carries both ways.
pub struct Relay {
    pub port: u16,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(to: u16) -> anyhow::Result<Relay> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let (bytes, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (b, s) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(c) = c else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                pipe(&c, &up, &b);
                pipe(&up, &c, &b);
            }
        });
        Ok(Relay { port, bytes, stop })
    }

    /// The count so far, reset.
    pub fn take(&self) -> u64 {
        self.bytes.swap(0, Ordering::Relaxed)
    }

    /// The count so far.
    pub fn peek(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to` on a thread, counting into `n`; shut `to` down for writing at the end.
fn pipe(from: &TcpStream, to: &TcpStream, n: &Arc<AtomicU64>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let n = n.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(k) = from.read(&mut buf) {
            if k == 0 || to.write_all(&buf[..k]).is_err() {
                break;
            }
            n.fetch_add(k as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// `n` changes spread over the tree: a quarter new files, a quarter deleted, half rewritten.
fn change(src: &Path, n: usize, round: usize) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(src).sort_by_file_name() {
        let e = e?;
        if e.file_type().is_file() {
            files.push(e.into_path());
        }
    }
    let step = (files.len() / n.max(1)).max(1);
    for (k, f) in files.iter().step_by(step).take(n).enumerate() {
        match k % 4 {
            0 => std::fs::write(f.with_extension(format!("new{round}")), b"new file")?,
            1 => std::fs::remove_file(f)?,
            _ => std::fs::write(f, format!("rewritten in round {round}"))?,
        }
    }
    Ok(())
}

pub fn run(files: usize, changes: usize) -> anyhow::Result<RestartResult> {
    let stage = Stage::build("20g", true, |src| tree(src, files).map(|_| ()))?;
    let relay = Relay::start(stage.daemon.port)?;
    let url = format!("rsync://syncuser@127.0.0.1:{}/mod/", relay.port);
    // First start: the index is built (the module already holds the tree).
    let first = Tool::Syncd.start_at(&stage, &url)?;
    first.wait_ready(&stage, Duration::from_secs(3600))?;
    first.stop();
    change(&stage.src, changes, 1)?;
    relay.take();
    let t0 = Instant::now();
    let running = Tool::Syncd.start_at(&stage, &url)?;
    let ready = wait_log(&running.log, "syncd ready", t0)?;
    let sock = stage.dir.path().join("syncd.sock");
    let st = Command::new(sibling("syncctl")?)
        .arg("--socket")
        .arg(&sock)
        .args(["wait-idle", "--timeout", "3600"])
        .output()?;
    let idle = t0.elapsed();
    if !st.status.success() {
        bail!("wait-idle: {}", String::from_utf8_lossy(&st.stderr));
    }
    let syncd_bytes = relay.take();
    let (cpu_s, peak_rss_kib) = (tree_cpu_s(running.pgid), running.peak_rss_kib());
    let log = running.log.clone();
    running.stop();
    // The log file is the restart's own (each start truncates it).
    let text = std::fs::read_to_string(&log)?;
    let full_syncs = text
        .lines()
        .filter(|l| l.contains("full sync done"))
        .count();
    for l in text.lines().filter(|l| {
        ["syncd ready", "watching", "caught up"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("  syncd: {l}");
    }
    let differing = differing_count(&stage.src, &stage.module);
    change(&stage.src, changes, 2)?;
    relay.take();
    let st = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", stage.src.display()))
        .arg(&url)
        .env("RSYNC_PASSWORD", RSYNC_PASSWORD)
        .status()?;
    if !st.success() {
        bail!("the plain rsync failed");
    }
    let index_bytes = std::fs::metadata(stage.dir.path().join("state/journal/index.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(RestartResult {
        files,
        changes,
        syncd_bytes,
        plain_bytes: relay.take(),
        ready,
        idle,
        cpu_s,
        peak_rss_kib,
        full_syncs,
        differing,
        index_bytes,
    })
}

/// Wait for `needle` in the log file: the time since `t0`.
fn wait_log(log: &Path, needle: &str, t0: Instant) -> anyhow::Result<Duration> {
    let deadline = t0 + Duration::from_secs(3600);
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(t0.elapsed());
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!("no {needle:?} after an hour")).context("restart run");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
