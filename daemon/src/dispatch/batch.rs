//! A batch job: push a set of journaled paths with one rsync, confirm what was delivered, and
//! narrow an exit 23 down by splitting the batch until the failing paths are single; only those
//! spend attempts, and after `max_attempts` they are parked with rsync's reason.

use tracing::{info, warn};

use super::inflight::Claim;
use super::job::{Ending, JobKind, JobResult, TargetFailure};
use super::schedule::backoff;
use crate::fs::parents;
use crate::fs::{check_root, common_dir, RootIdentity};
use crate::journal::{now_ms, Item, Journal, PendingMove};
use crate::observe::Reporter;
use crate::rsync::exit::{parent_not_a_directory, permanent_for_a_path};
use crate::rsync::{plan_list, Outcome, Runner, MAX_PATH_BYTES};

/// Attempts of a path whose error retrying will not fix (see
/// [`crate::rsync::exit::permanent_for_a_path`]): a second and a third look, in case the
/// administrator was already fixing it, then it is parked.
const QUICK_ATTEMPTS: u32 = 3;
/// Between those attempts.
const QUICK_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// Before a path whose parent was not a directory at the target is tried again (its parents
/// go first).
const PARENT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// Most paths of a batch pushed with `--fuzzy`: the receiver scans the destination directory
/// for a basis for every new file of the batch, so a large batch into a large directory costs
/// new files × entries: 5,000 new files into a directory of 10,000 took 6.9 s with it and
/// 0.63 s without, 256 of them 0.57 s with it (rsync 3.2.7, local target; an issue measured
/// 155 s against 0.9 s at a daemon with 3.5.0). Beyond it a renamed file is sent whole.
const FUZZY_MAX_PATHS: usize = 256;

/// What a batch job works with.
pub struct BatchJob {
    pub runner: Runner,
    pub reporter: Reporter,
    pub journal: Journal,
    pub identity: RootIdentity,
    /// Cancelled once the watcher stopped: see [`BatchJob::confirm`].
    pub watch_stopped: tokio_util::sync::CancellationToken,
    /// The renamed files the batch carries: rsync may take a similar file at the target as
    /// their basis (`--fuzzy`), where the old name waits until the new one is delivered.
    pub renamed: Vec<PendingMove>,
}

/// Where a batch stands while its slices are pushed.
struct Progress {
    delivered: u64,
    path_error: Option<String>,
    /// A renamed file's move was ended (its old name may go).
    released_moves: bool,
}

impl BatchJob {
    /// Push `items`, planned as `claim` says; the claim goes back with the result.
    pub async fn run(self, items: Vec<Item>, claim: Claim) -> JobResult {
        let mut p = Progress {
            delivered: 0,
            path_error: None,
            released_moves: false,
        };
        let ending = match check_root(&self.runner.root.source, self.identity) {
            Err(e) => Ending::Failed(e.into()),
            Ok(()) => self.push_all(items, &claim, &mut p).await,
        };
        JobResult {
            kind: JobKind::Batch(claim),
            ending,
            delivered: p.delivered,
            path_error: p.path_error,
            released_moves: p.released_moves,
        }
    }

    async fn push_all(&self, items: Vec<Item>, claim: &Claim, p: &mut Progress) -> Ending {
        // rsync's list reader would silently truncate these: park them at once, with the reason.
        let (items, too_long): (Vec<Item>, Vec<Item>) = items
            .into_iter()
            .partition(|i| i.path.len() <= MAX_PATH_BYTES);
        for it in &too_long {
            self.park_too_long(it, p);
        }
        // Work list of slices still to push; exit 23 splits a slice in two.
        let mut todo: Vec<Vec<Item>> = vec![items];
        // The whole batch goes as planned when it was taken; its halves are planned again.
        let mut planned = {
            let mut l: Vec<(Vec<u8>, bool)> = claim.plans.clone();
            l.sort();
            l.dedup();
            Some(l)
        };
        while let Some(chunk) = todo.pop() {
            let list = match planned.take() {
                Some(l) => l,
                None => self.plan(&chunk).await,
            };
            let outcome = if list.is_empty() {
                Outcome::Delivered
            } else {
                let report = self
                    .runner
                    .push_batch(
                        &list,
                        !self.renamed.is_empty() && list.len() <= FUZZY_MAX_PATHS,
                    )
                    .await;
                for run in &report.runs {
                    self.reporter.rsync_run("batch", &run.exit, run.bytes);
                }
                report.outcome
            };
            match outcome {
                Outcome::Delivered => {
                    let chunk = self.still_planned(chunk, &list).await;
                    if let Err(e) = self.confirm(&chunk, p) {
                        return Ending::Failed(e);
                    }
                }
                Outcome::Partial(e) if chunk.len() == 1 => self.path_failed(&chunk[0], &e, p),
                Outcome::Partial(_) => {
                    let mut a = chunk;
                    let b = a.split_off(a.len() / 2);
                    todo.push(a);
                    todo.push(b);
                }
                Outcome::Interrupted(e) => return self.interrupted(&chunk, e),
                other => {
                    return Ending::of(other).expect("only outcomes that stop the job are left")
                }
            }
        }
        Ending::Done
    }

    /// Of a delivered slice, the items whose push still holds: a path not listed itself (its
    /// top-most missing ancestor was, to be deleted) is kept pending when it would be planned
    /// otherwise now. Else a directory recreated before rsync read it is pushed as itself, the
    /// deletion below it never happens, and the path would leave the journal (seen with a
    /// writer deleting and recreating directories, across orderly restarts).
    async fn still_planned(&self, chunk: Vec<Item>, list: &[(Vec<u8>, bool)]) -> Vec<Item> {
        let list: Vec<Vec<u8>> = list.iter().map(|(p, _)| p.clone()).collect();
        let listed = |p: &[u8]| list.binary_search_by(|e| e.as_slice().cmp(p)).is_ok();
        if chunk.iter().all(|i| listed(&i.path)) {
            return chunk;
        }
        let root = self.runner.root.source.clone();
        let keep = move |chunk: Vec<Item>| -> Vec<Item> {
            let listed = |p: &[u8]| list.binary_search_by(|e| e.as_slice().cmp(p)).is_ok();
            chunk
                .into_iter()
                .filter(|i| {
                    // Never listed (the root itself): nothing to push, nothing to hold.
                    listed(&i.path)
                        || crate::rsync::plan_path(&root, &i.path).is_none_or(|(e, _)| listed(&e))
                })
                .collect()
        };
        tokio::task::spawn_blocking(move || keep(chunk))
            .await
            .unwrap_or_default()
    }

    /// Plan a slice of the batch again (it is planned as it is now).
    async fn plan(&self, chunk: &[Item]) -> Vec<(Vec<u8>, bool)> {
        let root = self.runner.root.source.clone();
        let ps: Vec<Vec<u8>> = chunk.iter().map(|i| i.path.clone()).collect();
        tokio::task::spawn_blocking(move || plan_list(&root, &ps))
            .await
            .unwrap_or_default()
    }

    /// The target has `chunk`: remove from the journal what did not change meanwhile. Not once
    /// the watcher stopped (in the shutdown grace period): rsync may have read a state no event
    /// told, such as a path recreated after the index saw it gone, so the paths stay pending
    /// and go again at the next start, which sees them as they are then.
    fn confirm(&self, chunk: &[Item], p: &mut Progress) -> Result<(), TargetFailure> {
        if self.watch_stopped.is_cancelled() {
            self.reporter.delivered(chunk, 0);
            return Ok(());
        }
        let n = self.journal.confirm(&self.reporter.id, chunk)?;
        p.delivered += n;
        self.reporter.delivered(chunk, n);
        // A renamed file's new name is at the target (current or not): its old name may go.
        for m in &self.renamed {
            if chunk.iter().any(|i| i.path == m.to) {
                self.journal.move_done(&self.reporter.id, m)?;
                p.released_moves = true;
            }
        }
        Ok(())
    }

    /// A path rsync cannot take at all: parked at once.
    fn park_too_long(&self, it: &Item, p: &mut Progress) {
        let e = format!(
            "path is {} bytes long; rsync cannot take paths over {MAX_PATH_BYTES} bytes",
            it.path.len()
        );
        if let Err(je) = self.journal.fail(&self.reporter.id, it, &e, 0, 1) {
            warn!(target = %self.reporter.id, error = %je, "journal write failed");
        }
        self.reporter.parked(&it.path, &e);
        p.path_error = Some(e);
    }

    /// A single path failed on its own: it spends an attempt, or is parked after the last. An
    /// error retrying will not fix ([`permanent_for_a_path`]) gets [`QUICK_ATTEMPTS`] quick
    /// attempts: parked, and `on_failure` told, within half a minute.
    fn path_failed(&self, it: &Item, e: &str, p: &mut Progress) {
        let id = &self.reporter.id;
        let policy = &self.runner.target.retry;
        let (wait, max_attempts) = match permanent_for_a_path(e) {
            true => (QUICK_RETRY, policy.max_attempts.min(QUICK_ATTEMPTS)),
            false => (backoff(policy, it.entry.attempts), policy.max_attempts),
        };
        // A directory above it is not one at the target: pushed before its parent's change of
        // type. The directories above go first (journaled: a file replaced by a directory is
        // replaced at the target), then the path again, soon.
        let wait = match parent_not_a_directory(e) {
            true => {
                let above: Vec<Vec<u8>> = parents(&it.path).map(|p| p.to_vec()).collect();
                if let Err(je) = self.journal.record(std::slice::from_ref(id), &above) {
                    warn!(target = %id, error = %je, "journal write failed");
                }
                PARENT_RETRY
            }
            false => wait,
        };
        let next = now_ms() + wait.as_millis() as u64;
        let shown = String::from_utf8_lossy(&it.path).into_owned();
        match self.journal.fail(id, it, e, next, max_attempts) {
            Ok(true) => self.reporter.parked(&it.path, e),
            Ok(false) => {
                info!(target = %id, path = %shown, error = %e, attempt = it.entry.attempts + 1, "path failed; will retry")
            }
            Err(je) => warn!(target = %id, error = %je, "journal write failed"),
        }
        p.path_error = Some(format!("{shown}: {e}"));
    }

    /// Leftover temporary files sit in the directories of this chunk: once the target is back,
    /// a full sync of their closest common directory removes them.
    fn interrupted(&self, chunk: &[Item], e: String) -> Ending {
        let dir = common_dir(chunk.iter().map(|i| i.path.as_slice()));
        let e = match self.journal.request_resync(&self.reporter.id, &dir) {
            Ok(()) => e,
            Err(je) => format!("{e}; {je}"),
        };
        Ending::Failed(TargetFailure::Interrupted(e))
    }
}
