//! Per-target hooks: a program run after delivered batches (`on_batch`) and when paths are
//! parked as failed (`on_failure`), for cache purges, indexers and alerting.
//!
//! - Run directly (`argv[0]` is an absolute path), never through a shell.
//! - A full sync that sent or deleted anything reports the directory it synced (`.` for the
//!   root) to `on_batch`: which entries below it changed is not known exactly.
//! - The paths go NUL-separated on stdin; `SYNCD_HOOK` (`batch` or `failure`), `SYNCD_ROOT`,
//!   `SYNCD_TARGET`, `SYNCD_PATHS` (how many), `SYNCD_DROPPED` (paths not passed on, see below)
//!   and, for failures, `SYNCD_ERROR` (rsync's reason for the first path, or how many deletions
//!   `delete_guard` holds) in the environment.
//! - Delivery never waits for a hook: each hook has its own task and runs once at a time. Paths
//!   that arrive while it runs accumulate and go to its next run, so a slow hook costs runs, not
//!   processes. Accumulated paths are capped at [`MAX_PENDING_BYTES`]; beyond that they are
//!   counted in `SYNCD_DROPPED` and logged, never buffered without bound.
//! - A run that outlives `hook_timeout_s` is killed; a failing or killed run is logged with its
//!   exit status and the first lines of its output. At shutdown a running hook is killed and
//!   what it had not been given is logged.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use crate::config::Hook;

/// Most bytes of paths kept for a hook that is still running.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Pending {
    paths: Vec<Vec<u8>>,
    bytes: usize,
    dropped: u64,
    error: Option<String>,
}

struct Inner {
    hook: Hook,
    kind: &'static str,
    root: String,
    target: String,
    pending: Mutex<Pending>,
    more: Notify,
}

/// The handle the push path reports to; cheap to clone.
#[derive(Clone)]
pub struct HookQueue {
    inner: Arc<Inner>,
}

impl HookQueue {
    /// Start the hook's task (until `stop`); `kind` is `batch` or `failure`.
    pub fn start(
        hook: Hook,
        kind: &'static str,
        root: &str,
        target: &str,
        tasks: &mut tokio::task::JoinSet<()>,
        stop: CancellationToken,
    ) -> HookQueue {
        let q = HookQueue {
            inner: Arc::new(Inner {
                hook,
                kind,
                root: root.to_string(),
                target: target.to_string(),
                pending: Mutex::default(),
                more: Notify::new(),
            }),
        };
        tasks.spawn(q.clone().run(stop));
        q
    }

    /// Hand `paths` (and, for failures, the reason) to the hook's next run.
    pub fn push<'a>(&self, paths: impl IntoIterator<Item = &'a [u8]>, error: Option<&str>) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        for path in paths {
            if p.bytes + path.len() + 1 > MAX_PENDING_BYTES {
                p.dropped += 1;
                continue;
            }
            p.bytes += path.len() + 1;
            p.paths.push(path.to_vec());
        }
        if p.error.is_none() {
            p.error = error.map(str::to_string);
        }
        drop(p);
        self.inner.more.notify_one();
    }

    async fn run(self, stop: CancellationToken) {
        let me = &self.inner;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = me.more.notified() => {}
            }
            let batch = std::mem::take(&mut *me.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if batch.paths.is_empty() && batch.dropped == 0 {
                continue;
            }
            if batch.dropped > 0 {
                warn!(target = %me.target, hook = me.kind, dropped = batch.dropped, "hook falls behind: paths not passed on");
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    warn!(target = %me.target, hook = me.kind, paths = batch.paths.len(), "shutting down: hook run killed");
                    break;
                }
                _ = self.run_once(&batch) => {}
            }
        }
        let left = me.pending.lock().map(|p| p.paths.len()).unwrap_or(0);
        if left > 0 {
            warn!(target = %me.target, hook = me.kind, paths = left, "shutting down: paths not passed to the hook");
        }
    }

    /// One run of the program with `batch`; logs how it ended.
    async fn run_once(&self, batch: &Pending) {
        let me = &self.inner;
        let mut cmd = Command::new(&me.hook.argv[0]);
        cmd.args(&me.hook.argv[1..])
            .env("SYNCD_HOOK", me.kind)
            .env("SYNCD_ROOT", &me.root)
            .env("SYNCD_TARGET", &me.target)
            .env("SYNCD_PATHS", batch.paths.len().to_string())
            .env("SYNCD_DROPPED", batch.dropped.to_string())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(e) = &batch.error {
            cmd.env("SYNCD_ERROR", e);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(target = %me.target, hook = me.kind, program = %me.hook.argv[0], error = %e, "hook could not start");
                return;
            }
        };
        let mut input = Vec::with_capacity(batch.bytes);
        for p in &batch.paths {
            input.extend_from_slice(p);
            input.push(0);
        }
        let stdin = child.stdin.take();
        let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
        let feed = async move {
            if let Some(mut s) = stdin {
                // A hook that does not read its input is its own business.
                let _ = s.write_all(&input).await;
            }
        };
        let run = async {
            let (_, out, err, status) = tokio::join!(
                feed,
                drain(stdout.take()),
                drain(stderr.take()),
                child.wait()
            );
            (out, err, status)
        };
        match tokio::time::timeout(me.hook.timeout, run).await {
            Ok((out, _, Ok(status))) if status.success() => {
                debug!(target = %me.target, hook = me.kind, paths = batch.paths.len(), output = %String::from_utf8_lossy(&out).trim(), "hook done");
            }
            Ok((out, err, status)) => {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                warn!(target = %me.target, hook = me.kind, program = %me.hook.argv[0], %status,
                    stderr = %String::from_utf8_lossy(&err).trim(),
                    stdout = %String::from_utf8_lossy(&out).trim(),
                    "hook failed");
            }
            Err(_) => {
                warn!(target = %me.target, hook = me.kind, program = %me.hook.argv[0], timeout_s = me.hook.timeout.as_secs(), "hook ran too long; killed");
            }
        }
    }
}

/// Read `r` to its end (so the hook never blocks on a full pipe), keeping the start for the log.
async fn drain(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut keep = Vec::new();
    let Some(mut r) = r else {
        return keep;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if keep.len() < 2048 {
            keep.extend_from_slice(&buf[..n]);
        }
    }
    keep
}

/// The hooks of one target.
#[derive(Clone, Default)]
pub struct Hooks {
    pub on_batch: Option<HookQueue>,
    pub on_failure: Option<HookQueue>,
}

impl Hooks {
    /// Report delivered paths.
    pub fn delivered<'a>(&self, paths: impl IntoIterator<Item = &'a [u8]>) {
        if let Some(h) = &self.on_batch {
            h.push(paths, None);
        }
    }

    /// Report deletions held by `delete_guard`, with what to do.
    pub fn held<'a>(&self, paths: impl IntoIterator<Item = &'a [u8]>, error: &str) {
        if let Some(h) = &self.on_failure {
            h.push(paths, Some(error));
        }
    }

    /// Report paths parked as failed, with the reason.
    pub fn parked(&self, path: &[u8], error: &str) {
        if let Some(h) = &self.on_failure {
            h.push([path], Some(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A queue whose task is not started: runs are driven by the test.
    fn queue(argv: &[&str], timeout: Duration) -> HookQueue {
        HookQueue {
            inner: Arc::new(Inner {
                hook: Hook {
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    timeout,
                },
                kind: "failure",
                root: "data".into(),
                target: "b1".into(),
                pending: Mutex::default(),
                more: Notify::new(),
            }),
        }
    }

    fn take(q: &HookQueue) -> Pending {
        std::mem::take(&mut *q.inner.pending.lock().unwrap())
    }

    #[test]
    fn paths_accumulate_up_to_the_cap_and_the_rest_are_counted() {
        let q = queue(&["/bin/true"], Duration::from_secs(1));
        let big = vec![b'x'; MAX_PENDING_BYTES / 2 - 1];
        q.push([&b"a"[..]], Some("first reason"));
        q.push([&big[..], &big[..], &b"b"[..]], Some("second reason"));
        let p = take(&q);
        // "a", one big path, then the second big one does not fit; "b" still does.
        assert_eq!(p.paths.len(), 3);
        assert_eq!(p.paths[2], b"b");
        assert_eq!(p.dropped, 1);
        assert!(p.bytes <= MAX_PENDING_BYTES);
        assert_eq!(
            p.error.as_deref(),
            Some("first reason"),
            "the first reason is kept"
        );
        assert_eq!(take(&q).paths.len(), 0, "taken once");
    }

    #[tokio::test]
    async fn a_run_gets_the_paths_nul_separated_on_stdin_and_says_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {o}.in; echo \"$SYNCD_HOOK $SYNCD_ROOT $SYNCD_TARGET $SYNCD_PATHS $SYNCD_DROPPED $SYNCD_ERROR ${{NOTIFY_SOCKET-unset}}\" > {o}",
            o = out.display()
        );
        let q = queue(&["/bin/sh", "-c", &script], Duration::from_secs(30));
        q.push([&b"a b"[..], &b"c\nd"[..]], Some("rsync exit 23"));
        let mut batch = take(&q);
        batch.dropped = 2;
        std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
        q.run_once(&batch).await;
        assert_eq!(
            std::fs::read(dir.path().join("out.in")).unwrap(),
            b"a b\0c\nd\0"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "failure data b1 2 2 rsync exit 23 unset\n",
            "systemd's notify socket is not the hook's"
        );
    }

    #[tokio::test]
    async fn a_run_that_outlives_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 600", pid.display());
        let q = queue(&["/bin/sh", "-c", &script], Duration::from_millis(300));
        q.push([&b"slow"[..]], None);
        let batch = take(&q);
        tokio::time::timeout(Duration::from_secs(60), q.run_once(&batch))
            .await
            .expect("the run ends at its timeout, not with the program");
        let pid = std::fs::read_to_string(&pid).unwrap();
        // Killed: gone, or dead and not yet reaped (tokio reaps a dropped child in the
        // background).
        let dead = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).map_or(true, |st| {
                st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !dead() && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(dead(), "the hook (pid {}) still runs", pid.trim());
    }
}
