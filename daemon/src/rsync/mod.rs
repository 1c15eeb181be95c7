//! Running the real `rsync`: one process per batch of paths or per full sync, never through a
//! shell, and every exit status classified.
//!
//! Batch command: `rsync -a -I -0 --files-from=- --delete-missing-args --force --no-implied-dirs
//! --partial-dir=.rsync-partial --timeout=N [--sockopts=TCP_NODELAY --contimeout=N --port=P
//! --password-file=F | -e ssh…]
//! [--exclude=PAT…] [rsync_args…] SRC/ DEST/`, the list on stdin, every entry `./`-prefixed so
//! rsync never takes a name starting with `#` or `;` for a comment. `-I` because every listed
//! path is known to have changed: rsync's quick check (size + mtime to the second) would skip a
//! same-size rewrite within one second.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::config::{Dest, RootConfig, TargetConfig};
use crate::progress::{FullProgress, OutLine};
use crate::watch::abs_path;

/// rsync cannot take longer list entries (its list reader truncates at MAXPATHLEN).
pub const MAX_PATH_BYTES: usize = 4095;

/// How an rsync run ended, as far as delivery is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every listed path is at the target (0, or 24: a vanished source re-journals itself).
    Delivered,
    /// Exit 23: some paths failed; split the batch to find them.
    Partial(String),
    /// The target or the transport failed before anything was transferred; retry the whole
    /// target later.
    TargetDown(String),
    /// The transfer broke off under way (killed, timed out, stream or I/O error): like
    /// `TargetDown`, and the receiver may have left temporary files behind, which only a sync
    /// with `--delete` of the directories involved removes.
    Interrupted(String),
    /// A configuration problem (usage error, auth failure…): retry only at the slowest pace.
    Permanent(String),
    /// The rsync daemon refused the connection at its `max connections`: nothing was
    /// transferred. With other pushes of the same target running, it is their limit, not an
    /// outage.
    Busy(String),
}

/// What rsync runs against: the root and the target.
#[derive(Clone)]
pub struct Runner {
    pub root: std::sync::Arc<RootConfig>,
    pub target: std::sync::Arc<TargetConfig>,
    /// Told about delivered and parked paths.
    pub hooks: crate::hooks::Hooks,
    /// Counts rsync runs, bytes and deliveries.
    pub metrics: crate::metrics::TargetMetrics,
    /// `syncctl log`.
    pub events: crate::events::Events,
}

/// Device and inode of a root, taken when it was first watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl RootIdentity {
    /// Identity of the directory at `path`, without following a symlink at the last component.
    pub fn of(path: &Path) -> std::io::Result<RootIdentity> {
        let m = std::fs::symlink_metadata(path)?;
        if !m.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        Ok(RootIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Refuse to push when the root is not the directory it was: a deleted, replaced or unmounted
/// root would otherwise turn into deletes at the target.
pub fn check_root(root: &Path, expected: RootIdentity) -> Result<(), String> {
    match RootIdentity::of(root) {
        Ok(id) if id == expected => Ok(()),
        Ok(_) => Err(format!(
            "source root {} is no longer the directory syncd started on (replaced or unmounted); nothing is pushed until it is back",
            root.display()
        )),
        Err(e) => Err(format!("source root {} is unavailable ({e}); nothing is pushed until it is back", root.display())),
    }
}

/// What rsync must be told about one changed path, and whether that is a deletion:
/// - the path itself if it exists;
/// - else its top-most missing ancestor, deleted with everything below it (rsync warns and skips
///   a missing path whose parent is gone);
/// - else, when what is left above it is not a directory (a directory replaced by a file), that
///   non-directory: its push replaces the whole subtree at the target (rsync fails on a path
///   below a file, exit 23, and the path would be retried in vain).
///
/// `None` for what is never listed: the root itself and paths rsync cannot take.
pub fn plan_path(root: &Path, p: &[u8]) -> Option<(Vec<u8>, bool)> {
    if p.is_empty() || p.len() > MAX_PATH_BYTES {
        return None;
    }
    let mut cur: &[u8] = p;
    let mut missing: Option<&[u8]> = None;
    loop {
        match std::fs::symlink_metadata(abs_path(root, cur)) {
            Ok(m) => {
                return Some(match missing {
                    None => (p.to_vec(), false),
                    Some(top) if m.is_dir() => (top.to_vec(), true),
                    Some(_) => (cur.to_vec(), false),
                })
            }
            Err(_) => missing = Some(cur),
        }
        match cur.iter().rposition(|b| *b == b'/') {
            Some(i) => cur = &cur[..i],
            // The root is there (checked before every batch).
            None => return Some((cur.to_vec(), true)),
        }
    }
}

/// Reduce a batch to what rsync must be told (see [`plan_path`]), without duplicates and sorted
/// (rsync works best on sorted input).
pub fn plan_list(root: &Path, paths: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = paths
        .iter()
        .filter_map(|p| plan_path(root, p).map(|(e, _)| e))
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Runner {
    fn base_command(&self) -> Command {
        let t = &self.target;
        let mut c = Command::new("rsync");
        c.arg("-a")
            .arg("--partial-dir=.rsync-partial")
            .arg(format!("--timeout={}", t.timeout.as_secs()));
        match &t.dest {
            Dest::Daemon { .. } => {
                // Without it every run waits twice on Nagle's algorithm against delayed ACKs in
                // the daemon's handshake: a one-file push to a daemon on loopback took 90-130 ms
                // instead of under 10 ms (measured with rsync 3.5.0; the daemon's own `socket
                // options` does not help).
                c.arg("--sockopts=TCP_NODELAY");
                c.arg(format!("--contimeout={}", t.contimeout.as_secs()));
                if let Some(p) = t.port {
                    c.arg(format!("--port={p}"));
                }
                if let Some(pf) = &t.password_file {
                    let mut a = OsString::from("--password-file=");
                    a.push(pf);
                    c.arg(a);
                }
            }
            Dest::Ssh { .. } => {
                let mut ssh = vec![
                    "ssh".to_string(),
                    "-o".into(),
                    "BatchMode=yes".into(),
                    "-o".into(),
                    format!("ConnectTimeout={}", t.contimeout.as_secs()),
                    "-o".into(),
                    "ServerAliveInterval=15".into(),
                ];
                if let Some(p) = t.port {
                    ssh.push("-p".into());
                    ssh.push(p.to_string());
                }
                ssh.extend(t.ssh_args.iter().cloned());
                c.arg("-e").arg(
                    ssh.iter()
                        .map(|a| quote_for_rsync(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            Dest::Local(_) => {}
        }
        if t.compress {
            c.arg("-z");
        }
        if let Some(n) = t.max_delete {
            c.arg(format!("--max-delete={n}"));
        }
        for pat in self.root.excludes.patterns() {
            c.arg(format!("--exclude={pat}"));
        }
        c.args(&t.rsync_args);
        // Children must not inherit systemd's notify socket and watchdog; a run that outlives its deadline or
        // the daemon is killed with it.
        c.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn src_arg(&self, sub: &[u8]) -> OsString {
        let mut s = self.root.source.as_os_str().as_bytes().to_vec();
        if !sub.is_empty() {
            s.push(b'/');
            s.extend_from_slice(sub);
        }
        s.push(b'/');
        OsString::from_vec(s)
    }

    /// Push exactly `list` (already planned with [`plan_list`]).
    pub async fn push_batch(&self, list: &[Vec<u8>]) -> Outcome {
        let mut c = self.base_command();
        c.args([
            "-I",
            "-0",
            "--files-from=-",
            "--delete-missing-args",
            "--force",
            // A directory above a listed path is created when missing, never updated: only a
            // push that lists a directory writes its attributes (see target::InFlight).
            "--no-implied-dirs",
            // One line per entry sent or deleted: the bytes it took (for the metrics).
            "--out-format=%i %l %b",
        ]);
        c.arg(self.src_arg(b""))
            .arg(self.target.dest.rsync_arg(b""));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut input = Vec::with_capacity(list.iter().map(|p| p.len() + 3).sum());
        for p in list {
            input.extend_from_slice(b"./");
            input.extend_from_slice(p);
            input.push(0);
        }
        self.run(
            c,
            Some(input),
            None,
            Some(self.target.push_deadline),
            "batch",
        )
        .await
    }

    /// Full `rsync -a --delete` of the root (or its subdirectory `sub`); `progress` counts
    /// what rsync reports.
    pub async fn push_full(&self, sub: &[u8], progress: &FullProgress) -> Outcome {
        let mut c = self.base_command();
        // Nanosecond mtime comparison: a same-size rewrite within one second (made while syncd
        // was down, say) is not skipped, and unchanged files still are.
        c.args([
            "--delete",
            "--force",
            "--modify-window=-1",
            // A line for every entry, up to date or not: how far the sync is (progress.rs).
            "-ii",
            "--out-format=%i %l %b",
        ]);
        if !sub.is_empty() {
            c.arg("--mkpath");
        }
        c.arg(self.src_arg(sub))
            .arg(self.target.dest.rsync_arg(sub));
        c.stdout(Stdio::piped());
        // A full sync of a large tree legitimately takes long; rsync's --timeout catches a stall.
        self.run(c, None, Some(progress), None, "full").await
    }

    async fn run(
        &self,
        mut c: Command,
        input: Option<Vec<u8>>,
        progress: Option<&FullProgress>,
        deadline: Option<Duration>,
        kind: &str,
    ) -> Outcome {
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.metrics.rsync_run(kind, "not-started", 0);
                return Outcome::Permanent(
                    "rsync not found on PATH: install it (apt-get install rsync)".into(),
                );
            }
            Err(e) => {
                self.metrics.rsync_run(kind, "not-started", 0);
                return Outcome::TargetDown(format!("cannot start rsync: {e}"));
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let feed = async move {
            if let (Some(mut s), Some(data)) = (stdin, input) {
                // rsync closing its stdin early (it failed) shows in its exit status.
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            }
        };
        // One `%i %l %b` line per entry.
        let count = async move {
            let mut bytes = 0u64;
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    let Some(line) = OutLine::parse(&line) else {
                        continue;
                    };
                    bytes += line.bytes;
                    if let Some(p) = progress {
                        p.record(&line);
                    }
                }
            }
            bytes
        };
        let errs = async move {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                // Bounded: a chatty rsync cannot grow the daemon.
                let _ = e.take(64 * 1024).read_to_end(&mut buf).await;
                let _ = tokio::io::copy(e, &mut tokio::io::sink()).await;
            }
            buf
        };
        let work = async {
            let (_, bytes, err, status) = tokio::join!(feed, count, errs, child.wait());
            (bytes, err, status)
        };
        let finished = match deadline {
            Some(d) => tokio::time::timeout(d, work).await.map_err(|_| d),
            None => Ok(work.await),
        };
        match finished {
            Ok((bytes, err, Ok(status))) => {
                let exit = status
                    .code()
                    .map_or_else(|| "signal".to_string(), |c| c.to_string());
                self.metrics.rsync_run(kind, &exit, bytes);
                classify(status, &String::from_utf8_lossy(&err))
            }
            Ok((_, _, Err(e))) => {
                self.metrics.rsync_run(kind, "unknown", 0);
                Outcome::TargetDown(format!("waiting for rsync failed: {e}"))
            }
            // Dropping the future dropped the child: kill_on_drop kills and reaps it.
            Err(d) => {
                self.metrics.rsync_run(kind, "deadline", 0);
                Outcome::Interrupted(format!(
                    "rsync did not finish within push_deadline_s = {} and was killed",
                    d.as_secs()
                ))
            }
        }
    }
}

/// Quote one argument for rsync's own `-e` splitting (it honours single quotes).
fn quote_for_rsync(a: &str) -> String {
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// The most useful line of rsync's stderr, for status and logs.
fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.starts_with("@ERROR") || l.contains("failed:") || l.contains("ERROR:"))
        .or_else(|| lines.iter().find(|l| !l.starts_with("rsync error:")))
        .or(lines.first());
    pick.map(|s| s.chars().take(400).collect())
        .unwrap_or_default()
}

/// Map an rsync exit status to what it means for delivery (rsync's errcode.h).
pub fn classify(status: ExitStatus, stderr: &str) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let detail = summarize(stderr);
    let code = match status.code() {
        Some(c) => c,
        None => {
            let sig = status.signal().unwrap_or(0);
            return Outcome::Interrupted(format!(
                "rsync was killed by signal {sig}; nothing in the batch counts as delivered"
            ));
        }
    };
    let msg = |what: &str| {
        if detail.is_empty() {
            format!("rsync exit {code}: {what}")
        } else {
            format!("rsync exit {code}: {what}: {detail}")
        }
    };
    match code {
        0 | 24 => Outcome::Delivered,
        23 => Outcome::Partial(msg("some files were not transferred")),
        1 => Outcome::Permanent(msg(
            "syntax or usage error (check rsync_args, password_file)",
        )),
        2 | 4 => Outcome::Permanent(msg(
            "protocol incompatibility or option refused by the server",
        )),
        5 if stderr.contains("max connections") => Outcome::Busy(msg("server busy")),
        5 => Outcome::Permanent(msg(
            "cannot start the rsync daemon session (authentication or module)",
        )),
        25 => Outcome::Permanent(msg("--max-delete limit stopped deletions")),
        126 | 127 => Outcome::Permanent(msg("remote shell could not be run")),
        255 if stderr.contains("Permission denied")
            || stderr.contains("Host key verification failed") =>
        {
            Outcome::Permanent(msg("ssh refused the login"))
        }
        255 if [
            "Connection refused",
            "Could not resolve",
            "No route to host",
            "Connection timed out",
        ]
        .iter()
        .any(|m| stderr.contains(m)) =>
        {
            Outcome::TargetDown(msg("ssh could not connect"))
        }
        // Exit 10 is also what a connection lost mid-transfer gives.
        10 if ["failed to connect", "Connection refused", "getaddrinfo"]
            .iter()
            .any(|m| stderr.contains(m)) =>
        {
            Outcome::TargetDown(msg("connection failed"))
        }
        10 => Outcome::Interrupted(msg("connection lost")),
        11 => Outcome::Interrupted(msg("file I/O error (target disk full?)")),
        12 => Outcome::Interrupted(msg("error in the rsync protocol data stream")),
        20 => Outcome::Interrupted(msg("interrupted")),
        30 => Outcome::Interrupted(msg("timeout in data send/receive")),
        35 => Outcome::TargetDown(msg("timeout waiting for the daemon connection")),
        _ => Outcome::Interrupted(msg("transfer failed")),
    }
}

/// `rsync --version` → (major, minor, patch), checked at startup: `--delete-missing-args`
/// needs 3.1.0 or newer.
pub fn probe_rsync() -> Result<(u32, u32, u32), String> {
    let out = std::process::Command::new("rsync").arg("--version").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "rsync is not installed (not found on PATH): install it, e.g. `apt-get install rsync`".to_string()
        } else {
            format!("cannot run rsync --version: {e}")
        }
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| {
            format!(
                "cannot read the rsync version from: {}",
                text.lines().next().unwrap_or("")
            )
        })?;
    let mut it = ver
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let v = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    if v < (3, 1, 0) {
        return Err(format!(
            "rsync {ver} is too old: syncd needs 3.1.0 or newer (--delete-missing-args)"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn st(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_codes_are_classified() {
        assert_eq!(classify(st(0), ""), Outcome::Delivered);
        assert_eq!(classify(st(24), "file has vanished"), Outcome::Delivered);
        assert!(matches!(classify(st(23), ""), Outcome::Partial(_)));
        assert!(matches!(
            classify(
                st(10),
                "rsync: failed to connect to 127.0.0.1: Connection refused (111)"
            ),
            Outcome::TargetDown(_)
        ));
        // The same code for a connection lost mid-transfer: leftovers possible.
        assert!(matches!(
            classify(st(10), "rsync: [sender] write error: Broken pipe (32)"),
            Outcome::Interrupted(_)
        ));
        assert!(matches!(classify(st(30), ""), Outcome::Interrupted(_)));
        assert!(matches!(
            classify(st(255), "Broken pipe"),
            Outcome::Interrupted(_)
        ));
        assert!(
            matches!(classify(st(5), "@ERROR: auth failed on module m"), Outcome::Permanent(m) if m.contains("auth failed"))
        );
        assert!(matches!(
            classify(st(5), "@ERROR: max connections (1) reached"),
            Outcome::Busy(_)
        ));
        assert!(matches!(
            classify(st(255), "Permission denied (publickey)"),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            classify(st(255), "Connection refused"),
            Outcome::TargetDown(_)
        ));
        // Killed by SIGKILL: never delivered.
        assert!(
            matches!(classify(ExitStatus::from_raw(9), ""), Outcome::Interrupted(m) if m.contains("signal 9"))
        );
    }

    #[test]
    fn deleted_subtree_collapses_to_top_most_missing_ancestor() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keep")).unwrap();
        let list = plan_list(
            d.path(),
            &[
                b"gone/a/b".to_vec(),
                b"gone/a".to_vec(),
                b"keep/x".to_vec(),
                b"keep/x".to_vec(),
            ],
        );
        assert_eq!(list, vec![b"gone".to_vec(), b"keep/x".to_vec()]);
    }

    #[test]
    fn a_path_is_planned_as_itself_its_deleted_subtree_or_the_file_that_replaced_its_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/file"), b"x").unwrap();
        std::fs::write(d.path().join("was-a-dir"), b"x").unwrap();
        let plan = |p: &str| plan_path(d.path(), p.as_bytes());
        let is = |p: &str, deletion: bool| Some((p.as_bytes().to_vec(), deletion));
        assert_eq!(plan("dir/file"), is("dir/file", false));
        assert_eq!(plan("dir"), is("dir", false));
        assert_eq!(plan("dir/gone"), is("dir/gone", true));
        assert_eq!(plan("dir/gone/a/b"), is("dir/gone", true));
        assert_eq!(plan("gone/a"), is("gone", true));
        assert_eq!(plan("was-a-dir/a/b"), is("was-a-dir", false));
        assert_eq!(plan("dir/file/a"), is("dir/file", false));
        assert_eq!(plan(""), None);
        assert_eq!(plan(&"a".repeat(MAX_PATH_BYTES + 1)), None);
    }

    #[test]
    fn ssh_arguments_are_quoted_for_rsync() {
        assert_eq!(quote_for_rsync("-p"), "-p");
        assert_eq!(quote_for_rsync("/a b/key"), "'/a b/key'");
    }
}
