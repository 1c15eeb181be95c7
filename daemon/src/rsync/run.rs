//! Running one rsync: the list fed on stdin, its `%i %l %b` lines counted (and handed to a full
//! sync's progress), its stderr kept (bounded) for the classification, and a deadline that
//! kills it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tracing::debug;

use super::exit::{classify, Outcome};
use super::progress::{FullProgress, OutLine};

/// How one rsync run ended: what it means for delivery, and what the metrics count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: Outcome,
    /// The exit code, or `signal`, `not-started`, `unknown`, `deadline`.
    pub exit: String,
    /// Bytes rsync reported sending (`%b`).
    pub bytes: u64,
}

impl RunReport {
    pub(super) fn unfinished(outcome: Outcome, exit: &str) -> RunReport {
        RunReport {
            outcome,
            exit: exit.to_string(),
            bytes: 0,
        }
    }
}

/// Bytes of rsync's stderr kept for the classification: a chatty rsync cannot grow the daemon.
const STDERR_KEPT: u64 = 64 * 1024;

/// Run `c` (stdin, stdout and stderr piped as the command set them up) to its end.
pub(super) async fn run(
    mut c: Command,
    input: Option<Vec<u8>>,
    progress: Option<&FullProgress>,
    deadline: Option<Duration>,
) -> RunReport {
    if tracing::enabled!(tracing::Level::TRACE) {
        let list = input.as_deref().map(|i| {
            i.split(|b| *b == 0)
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        });
        tracing::trace!(command = ?c.as_std(), list = ?list, "rsync starts");
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return RunReport::unfinished(
                Outcome::Permanent(
                    "rsync not found on PATH: install it (apt-get install rsync)".into(),
                ),
                "not-started",
            );
        }
        Err(e) => {
            return RunReport::unfinished(
                Outcome::TargetDown(format!("cannot start rsync: {e}")),
                "not-started",
            );
        }
    };
    let started = std::time::Instant::now();
    let feed = feed(child.stdin.take(), input);
    let count = count(child.stdout.take(), progress);
    let errs = errs(child.stderr.take());
    let work = async {
        let (_, bytes, err, status) = tokio::join!(feed, count, errs, child.wait());
        (bytes, err, status)
    };
    let finished = match deadline {
        Some(d) => tokio::time::timeout(d, work).await.map_err(|_| d),
        None => Ok(work.await),
    };
    let report = match finished {
        Ok((bytes, err, Ok(status))) => RunReport {
            outcome: classify(status, &String::from_utf8_lossy(&err)),
            exit: status
                .code()
                .map_or_else(|| "signal".to_string(), |c| c.to_string()),
            bytes,
        },
        Ok((_, _, Err(e))) => RunReport::unfinished(
            Outcome::TargetDown(format!("waiting for rsync failed: {e}")),
            "unknown",
        ),
        // Dropping the future dropped the child: kill_on_drop kills and reaps it.
        Err(d) => RunReport::unfinished(
            Outcome::Interrupted(format!(
                "rsync did not finish within push_deadline_s = {} and was killed",
                d.as_secs()
            )),
            "deadline",
        ),
    };
    debug!(exit = %report.exit, bytes = report.bytes, ms = started.elapsed().as_millis() as u64, "rsync ended");
    report
}

/// Write the list to rsync's stdin and close it.
async fn feed(stdin: Option<ChildStdin>, input: Option<Vec<u8>>) {
    if let (Some(mut s), Some(data)) = (stdin, input) {
        // rsync closing its stdin early (it failed) shows in its exit status.
        let _ = s.write_all(&data).await;
        let _ = s.shutdown().await;
    }
}

/// Count rsync's `%i %l %b` lines (one per entry): the bytes sent, and a full sync's progress.
async fn count(stdout: Option<ChildStdout>, progress: Option<&FullProgress>) -> u64 {
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
}

/// rsync's stderr: the first [`STDERR_KEPT`] bytes kept, the rest read and dropped.
pub(super) async fn errs(mut stderr: Option<ChildStderr>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(e) = stderr.as_mut() {
        let _ = e.take(STDERR_KEPT).read_to_end(&mut buf).await;
        let _ = tokio::io::copy(e, &mut tokio::io::sink()).await;
    }
    buf
}
