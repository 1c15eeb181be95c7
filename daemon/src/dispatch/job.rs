//! What a push job (a batch of paths or a full sync) ends in, typed, as the worker acts on it.

use crate::fs::RootUnavailable;
use crate::journal::{Journal, JournalError};
use crate::rsync::Outcome;

use super::inflight::Claim;

/// Why a target cannot take pushes now: the worker backs off, the paths keep their attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetFailure {
    /// The target or the transport failed before anything was transferred.
    #[error("{0}")]
    Down(String),
    /// The transfer broke off under way (killed, timed out, connection lost).
    #[error("{0}")]
    Interrupted(String),
    /// A configuration problem (usage, authentication, module): retried at the slowest pace.
    #[error("{0}")]
    Permanent(String),
    /// The source root is not the directory it was.
    #[error(transparent)]
    Root(#[from] RootUnavailable),
    /// The journal could not record the result.
    #[error("{0}")]
    Journal(String),
}

impl TargetFailure {
    /// Retried only at the slowest pace: retrying sooner cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TargetFailure::Permanent(_))
    }
}

impl From<JournalError> for TargetFailure {
    fn from(e: JournalError) -> Self {
        TargetFailure::Journal(e.to_string())
    }
}

/// How a job ended, as far as the target is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It ran to its end (paths that failed on their own spent attempts, see `path_error`).
    Done,
    /// The target failed: back off.
    Failed(TargetFailure),
    /// Refused at the server's `max connections`: the rest of the batch was not tried.
    Busy(String),
}

impl Ending {
    /// What an rsync outcome that stops the job means for the target (`None`: it does not stop
    /// the job).
    pub fn of(outcome: Outcome) -> Option<Ending> {
        Some(match outcome {
            Outcome::Delivered | Outcome::Partial(_) => return None,
            Outcome::TargetDown(e) => Ending::Failed(TargetFailure::Down(e)),
            Outcome::Interrupted(e) => Ending::Failed(TargetFailure::Interrupted(e)),
            Outcome::Permanent(e) => Ending::Failed(TargetFailure::Permanent(e)),
            Outcome::Busy(e) => Ending::Busy(e),
        })
    }
}

/// Which job it was.
pub enum JobKind {
    /// A batch, with what it held in flight.
    Batch(Claim),
    /// A full sync, and how many entries it deleted at the target.
    Full { deleted: u64 },
    /// The rename probe (`rsync::probe`).
    Probe,
}

/// What a job hands back to its worker.
pub struct JobResult {
    pub kind: JobKind,
    pub ending: Ending,
    /// Paths confirmed delivered.
    pub delivered: u64,
    /// The last error of a path that failed on its own (a batch), or what a full sync could
    /// not transfer: shown as the target's last error, without backing off.
    pub path_error: Option<String>,
    /// It ended renames, whose old paths waited: they go at once, not after the pace.
    pub released_moves: bool,
}

/// Runs `job`, then flushes the journal: whatever the job wrote (confirmations, retry
/// schedules, owed resyncs), on every way out, is on disk before the worker acts on its result.
pub async fn flushed(
    journal: Journal,
    job: impl std::future::Future<Output = JobResult>,
) -> JobResult {
    let res = job.await;
    if let Err(e) = journal.flush().await {
        tracing::warn!(error = %e, "journal flush failed");
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_outcomes_map_to_what_the_target_does() {
        let cases = [
            (Outcome::Delivered, None),
            (Outcome::Partial("23".into()), None),
            (
                Outcome::TargetDown("refused".into()),
                Some(Ending::Failed(TargetFailure::Down("refused".into()))),
            ),
            (
                Outcome::Interrupted("killed".into()),
                Some(Ending::Failed(TargetFailure::Interrupted("killed".into()))),
            ),
            (
                Outcome::Permanent("auth".into()),
                Some(Ending::Failed(TargetFailure::Permanent("auth".into()))),
            ),
            (
                Outcome::Busy("max".into()),
                Some(Ending::Busy("max".into())),
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(Ending::of(outcome.clone()), want, "{outcome:?}");
        }
        assert!(TargetFailure::Permanent(String::new()).is_permanent());
        assert!(!TargetFailure::Down(String::new()).is_permanent());
    }
}
