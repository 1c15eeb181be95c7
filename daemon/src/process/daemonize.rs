//! Process setup: the pidfile lock and the double fork.
//!
//! Order matters (NOTES §6): the pidfile is locked **before** forking so "already running"
//! reaches the terminal; the fork happens before any thread exists (no runtime, no sled, no
//! logging thread); the launching parent waits on a pipe and exits 0 only once the daemon says
//! it is ready, or 1 with the daemon's reason.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use nix::unistd::{fork, setsid, ForkResult};

/// The locked pidfile; the lock lasts as long as this value (and survives the forks).
pub struct PidFile {
    file: File,
}

impl PidFile {
    /// Lock `path`, or fail naming the running daemon.
    pub fn lock(path: &Path) -> anyhow::Result<PidFile> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open pidfile {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(PidFile { file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                // A holder that was just killed can keep its lock for a moment after it is gone
                // (the kernel releases it asynchronously; seen under kill -9 cycles): wait a
                // little for a lock whose recorded owner is no longer alive.
                if !alive(pid.trim()) && lock_within(&file, STALE_LOCK_WAIT)? {
                    return Ok(PidFile { file });
                }
                bail!(
                    "syncd is already running (pid {}, {} is locked); stop it with `syncctl stop` or `kill {}`",
                    pid.trim(),
                    path.display(),
                    pid.trim()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock pidfile {}", path.display()))
            }
        }
    }

    /// Record the current pid.
    pub fn write_pid(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{}", std::process::id())?;
        self.file.sync_all()
    }
}

/// How long a lock left by a dead process may take to be released.
const STALE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `pid` (as written in a pidfile) is a live process.
fn alive(pid: &str) -> bool {
    pid.parse::<i32>()
        .is_ok_and(|p| p > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// Take the lock on `file`, waiting at most `wait` for it. Runs before any other thread or fork
/// exists; a waiter still blocked at the deadline stays blocked and is gone with the process,
/// which is about to exit with an error.
fn lock_within(file: &File, wait: std::time::Duration) -> anyhow::Result<bool> {
    let dup = file.try_clone().context("duplicating the pidfile handle")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(dup.lock().is_ok());
    });
    Ok(rx.recv_timeout(wait).unwrap_or(false))
}

/// The daemon's end of the readiness pipe.
pub struct Readiness {
    pipe: File,
}

impl Readiness {
    /// Tell the launcher the daemon is ready; it exits 0.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(b"\0");
    }

    /// Tell the launcher why the daemon could not start; it prints this and exits 1.
    pub fn failed(mut self, why: &str) {
        let _ = self.pipe.write_all(why.as_bytes());
    }
}

/// Which process [`daemonize`] returned in.
pub enum Forked {
    /// The daemon (the grandchild): tell the launcher when it is ready.
    Daemon(Readiness),
    /// The launcher or the intermediate child: nothing more to do but exit with this code (the
    /// launcher has printed why the daemon failed, if it did).
    Exit(ExitCode),
}

/// Fork into the background. `log` receives the daemon's stdout and stderr.
pub fn daemonize(log: &Path) -> anyhow::Result<Forked> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: no other thread exists yet (no runtime, no sled, no logging thread): the child may
    // run arbitrary code.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut r = File::from(r);
            let mut msg = Vec::new();
            let _ = r.read_to_end(&mut msg);
            if msg.first() == Some(&0) {
                return Ok(Forked::Exit(ExitCode::SUCCESS));
            }
            let why = String::from_utf8_lossy(&msg);
            if why.is_empty() {
                eprintln!(
                    "syncd: the daemon exited before it was ready; see {}",
                    log.display()
                );
            } else {
                eprintln!("syncd: {why}");
            }
            return Ok(Forked::Exit(ExitCode::FAILURE));
        }
        ForkResult::Child => {}
    }
    drop(r);
    setsid().context("setsid")?;
    // SAFETY: still single-threaded.
    match unsafe { fork() }.context("second fork")? {
        ForkResult::Parent { .. } => return Ok(Forked::Exit(ExitCode::SUCCESS)),
        ForkResult::Child => {}
    }
    std::env::set_current_dir("/").context("chdir /")?;
    let null = File::open("/dev/null").context("/dev/null")?;
    nix::unistd::dup2_stdin(&null).context("redirecting stdin")?;
    point_output_at(&logf)?;
    Ok(Forked::Daemon(Readiness {
        pipe: File::from(w),
    }))
}

fn point_output_at(logf: &File) -> anyhow::Result<()> {
    nix::unistd::dup2_stdout(logf).context("redirecting stdout")?;
    nix::unistd::dup2_stderr(logf).context("redirecting stderr")?;
    Ok(())
}

/// Send stdout and stderr to `log`, opened (created) again: after logrotate moved the old file
/// away, output goes on at the configured path.
pub fn redirect_output(log: &Path) -> anyhow::Result<()> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    point_output_at(&logf)
}
