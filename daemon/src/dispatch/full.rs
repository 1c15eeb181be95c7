//! A full-sync job: `rsync -a --delete` of every directory owed one, in turn, with its
//! progress. Exit 23 is narrowed down: the directory's own files become pending paths (the
//! batch path splits them until the failing ones are parked with their reason), and each
//! subdirectory is owed its own full sync, which narrows again if it fails.

use std::sync::Arc;

use tracing::{info, warn};

use super::job::{Ending, JobKind, JobResult, TargetFailure};
use crate::config::RootConfig;
use crate::fs::{check_root, join_rel, RootIdentity};
use crate::journal::{Journal, ResyncToken};
use crate::observe::Reporter;
use crate::rsync::exit::{deletions_skipped, parent_not_a_directory};
use crate::rsync::{FullProgress, Outcome, Runner};

/// What a full-sync job works with.
pub struct FullJob {
    pub runner: Runner,
    pub reporter: Reporter,
    pub journal: Journal,
    pub identity: RootIdentity,
    /// The directories owed a full sync, with their journal tokens.
    pub resyncs: Vec<(Vec<u8>, ResyncToken)>,
    pub progress: Arc<FullProgress>,
    /// The most the job may delete at the target (`delete_guard`); None: no limit.
    pub delete_budget: Option<u64>,
}

/// What the job's directories add up to.
#[derive(Default)]
struct Tally {
    /// What a directory could not transfer, the last one.
    warning: Option<String>,
    /// Entries deleted at the target.
    deleted: u64,
}

/// Stops the progress's count however the job ends (done, failed, aborted at shutdown).
struct EndOnDrop(Arc<FullProgress>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl FullJob {
    /// Sync every owed directory; the first that fails at the target ends the job (what is
    /// still owed stays owed and cleans up after itself when it runs again).
    pub async fn run(self) -> JobResult {
        let _end = EndOnDrop(self.progress.clone());
        let mut tally = Tally::default();
        let mut queued = self.resyncs.len() as u64;
        for (sub, token) in &self.resyncs {
            queued -= 1;
            self.progress.begin(sub, queued);
            if let Err(e) = self.sync_one(sub, token, &mut tally).await {
                return result(Ending::Failed(e), tally);
            }
        }
        result(Ending::Done, tally)
    }

    /// One directory: push it, narrow down a partial failure, report it and clear its request.
    /// Deletions beyond the guard's budget are left undone by rsync and held.
    async fn sync_one(
        &self,
        sub: &[u8],
        token: &ResyncToken,
        tally: &mut Tally,
    ) -> Result<(), TargetFailure> {
        let id = &self.reporter.id;
        check_root(&self.runner.root.source, self.identity)?;
        let released = self.journal.full_released(id, sub)?;
        let limit = match released {
            true => None,
            false => self.delete_budget.map(|b| b.saturating_sub(tally.deleted)),
        };
        let started = std::time::Instant::now();
        let run = self.runner.push_full(sub, &self.progress, limit).await;
        self.reporter.rsync_run("full", &run.exit, run.bytes);
        tally.deleted += self.progress.deleted();
        let mut skipped = 0;
        match run.outcome {
            Outcome::Delivered => {}
            Outcome::Partial(e) if !sub.is_empty() && parent_not_a_directory(&e) => {
                // A directory above `sub` is still a file at the target (its change of type not
                // pushed yet): the directory above syncs it first, and `sub` with it.
                let parent = crate::fs::dir_of(sub);
                warn!(target = %id, sub = %String::from_utf8_lossy(sub), error = %e, "a directory above is not one at the target yet; syncing the directory above instead");
                self.journal.request_resync(id, parent)?;
            }
            Outcome::Partial(e) => {
                warn!(target = %id, sub = %String::from_utf8_lossy(sub), error = %e, "full sync finished with errors; narrowing down");
                self.narrow_down(sub).await?;
                tally.warning = Some(e);
            }
            // Busy or down, the owed full sync stays owed.
            Outcome::TargetDown(e) | Outcome::Interrupted(e) | Outcome::Busy(e) => {
                return Err(TargetFailure::Down(e))
            }
            Outcome::Permanent(e) => match deletions_skipped(&e).filter(|_| limit.is_some()) {
                Some(n) => skipped = n,
                None => return Err(TargetFailure::Permanent(e)),
            },
        }
        if limit.is_some() {
            self.hold(sub, skipped)?;
        }
        let changed = self.progress.changed();
        info!(target = %id, sub = %String::from_utf8_lossy(sub), entries = changed, ms = started.elapsed().as_millis() as u64, "full sync done");
        self.reporter
            .full_synced(sub, changed, tally.warning.as_deref());
        self.journal.resync_done(id, sub, token)?;
        if released {
            self.journal.full_release_done(id, sub)?;
        }
        Ok(())
    }

    /// A guarded sync of `sub` ended: rsync stopped deleting at the guard's limit `skipped`
    /// short (the rest of the sync is done), and those deletions are what `sub` holds now.
    fn hold(&self, sub: &[u8], skipped: u64) -> Result<(), TargetFailure> {
        let id = &self.reporter.id;
        self.journal.hold_full(id, sub, skipped)?;
        if skipped > 0 {
            let total = self.journal.held_count(id)?;
            self.reporter.full_deletes_held(sub, skipped, total);
        }
        Ok(())
    }

    /// The directory's own files become pending paths; each subdirectory is owed a full sync.
    async fn narrow_down(&self, sub: &[u8]) -> Result<(), TargetFailure> {
        let root = self.runner.root.clone();
        let s = sub.to_vec();
        let (files, dirs) = tokio::task::spawn_blocking(move || list_children(&root, &s))
            .await
            .unwrap_or_default();
        let id = &self.reporter.id;
        self.journal.record(std::slice::from_ref(id), &files)?;
        for d in &dirs {
            self.journal.request_resync(id, d)?;
        }
        Ok(())
    }
}

fn result(ending: Ending, tally: Tally) -> JobResult {
    JobResult {
        kind: JobKind::Full {
            deleted: tally.deleted,
        },
        ending,
        delivered: 0,
        path_error: tally.warning,
        released_moves: false,
    }
}

/// Entries directly inside `sub` (relative to the root), split into non-directories and
/// directories, excluded ones left out.
fn list_children(root: &RootConfig, sub: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let Ok(rd) = std::fs::read_dir(crate::fs::abs_path(&root.source, sub)) else {
        return (files, dirs);
    };
    for e in rd.flatten() {
        let rel = join_rel(sub, e.file_name().as_bytes());
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if root.excludes.matches(&rel, is_dir) {
            continue;
        }
        if is_dir {
            dirs.push(rel);
        } else {
            files.push(rel);
        }
    }
    (files, dirs)
}
