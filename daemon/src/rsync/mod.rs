//! Running the real `rsync`: one process per batch of paths or per full sync, never through a
//! shell, and every exit status classified. Knows the configuration and the file system, and
//! nothing of the journal, the dispatcher or what is reported to whom.
//!
//! - `command`: the command lines. Batch: `rsync -a -I -0 --files-from=- --ignore-missing-args
//!   --force --no-implied-dirs --partial-dir=.rsync-partial --timeout=N
//!   [--sockopts=TCP_NODELAY --contimeout=N --port=P --password-file=F | -e ssh…]
//!   [--exclude=PAT…] [rsync_args…] SRC/ DEST/`, the list on stdin, every entry `./`-prefixed
//!   so rsync never takes a name starting with `#` or `;` for a comment. `-I` because every
//!   listed path is known to have changed: rsync's quick check (size + mtime to the second)
//!   would skip a same-size rewrite within one second.
//!   Its deletions: `rsync -a --delete --force --no-perms --no-times --no-owner --no-group -0
//!   --include-from=- --exclude=* SRC/ DEST/`, the rules `/DIR/`… `/PATH` `/PATH/**` on stdin.
//!   A moved directory: `rsync -a --delete --force --link-dest=../OLD SRC/NEW/ DEST/NEW/`.
//! - `plan`: what each changed path is listed as;
//! - `run`: one process to its end, with a deadline;
//! - `exit`: what its exit status means for delivery ([`Outcome`]);
//! - `progress`: a full sync's progress from rsync's itemized lines;
//! - `verify`: a dry run of the full sync, read into the paths that differ;
//! - `version`: the startup probe;
//! - `probe`: whether a target hard-links from a relative `--link-dest` (tried at the first
//!   move);
//! - `versions`: the run directories a target keeps (`versions = NAME`), listed and pruned.

mod command;
#[cfg(test)]
mod confinement_tests;
pub mod exit;
pub mod plan;
pub mod probe;
pub mod progress;
mod run;
pub mod verify;
pub mod version;
pub mod versions;

use std::sync::Arc;

pub use exit::{classify, Outcome};
pub use plan::{plan_in, plan_list, plan_path, Fs, SourceView, MAX_PATH_BYTES};
pub use probe::LinkDest;
pub use progress::FullProgress;
pub use run::RunReport;
pub use version::{probe_rsync, VersionError};

use crate::config::{Dest, RootConfig, TargetConfig};

/// How a batch's runs ended: the outcome of the batch (the worst of its runs), and each run
/// for the metrics.
#[derive(Debug)]
pub struct BatchReport {
    pub outcome: Outcome,
    pub runs: Vec<RunReport>,
}

impl BatchReport {
    fn add(&mut self, run: RunReport) {
        self.outcome = match (
            std::mem::replace(&mut self.outcome, Outcome::Delivered),
            &run.outcome,
        ) {
            (Outcome::Delivered, o) => o.clone(),
            (Outcome::Partial(a), Outcome::Partial(b)) => Outcome::Partial(format!("{a}; {b}")),
            (Outcome::Partial(_), o) if *o != Outcome::Delivered => o.clone(),
            (kept, _) => kept,
        };
        self.runs.push(run);
    }
}

/// What rsync runs against: the root and the target.
#[derive(Clone)]
pub struct Runner {
    pub root: Arc<RootConfig>,
    pub target: Arc<TargetConfig>,
}

impl Runner {
    /// For tests: the runner of a root `DIR/src` with one local target `DIR/dst` (state in
    /// `DIR/state`), as a minimal configuration file gives them.
    #[cfg(test)]
    pub fn local_for_tests(dir: &std::path::Path) -> Runner {
        let text = format!(
            "state_dir = \"{d}/state\"\n[[sync]]\nsource = \"{d}/src\"\n[[sync.target]]\ndest = \"{d}/dst\"\n",
            d = dir.display()
        );
        let cfg = crate::config::Config::from_toml(&text, std::path::Path::new("t.toml"))
            .expect("a minimal configuration");
        let root = Arc::new(cfg.roots[0].clone());
        let target = Arc::new(root.targets[0].clone());
        Runner { root, target }
    }

    /// Push exactly `list` (already planned with [`plan_list`]: each path, and whether it is a
    /// deletion); with `fuzzy`, a new file's basis may be a similar file of its directory at
    /// the target (a renamed file's old name). The paths that exist go first, the deletions
    /// after them in a run of their own (see `command::delete_command`): a renamed file's old
    /// name, deleted in the same batch, is still there as its new name's basis.
    pub async fn push_batch(&self, list: &[(Vec<u8>, bool)], fuzzy: bool) -> BatchReport {
        let (deletions, upserts): (Vec<_>, Vec<_>) = list.iter().partition(|(_, d)| *d);
        let mut report = BatchReport {
            outcome: Outcome::Delivered,
            runs: Vec::new(),
        };
        if !upserts.is_empty() {
            let paths: Vec<Vec<u8>> = upserts.into_iter().map(|(p, _)| p.clone()).collect();
            let (c, input) = self.batch_command(&paths, fuzzy);
            report.add(run::run(c, Some(input), None, Some(self.target.push_deadline)).await);
        }
        let delivering = matches!(report.outcome, Outcome::Delivered | Outcome::Partial(_));
        if delivering && !deletions.is_empty() {
            let paths: Vec<Vec<u8>> = deletions.into_iter().map(|(p, _)| p.clone()).collect();
            let (c, input) = self.delete_command(&paths);
            report.add(run::run(c, Some(input), None, Some(self.target.push_deadline)).await);
        }
        report
    }

    /// Push directory `to` whole, linking what did not change from the target's `from` (see
    /// `command::move_command`).
    pub async fn push_move(&self, to: &[u8], from: &[u8]) -> RunReport {
        if let Some(r) = self.local_root_missing() {
            return r;
        }
        // Like a full sync, a large tree legitimately takes long; rsync's --timeout catches a
        // stall.
        run::run(self.move_command(to, from), None, None, None).await
    }

    /// Push files renamed into `dir` from other directories (see
    /// `command::file_moves_command`).
    pub async fn push_file_moves(
        &self,
        dir: &[u8],
        names: &[Vec<u8>],
        from_dirs: &[Vec<u8>],
    ) -> RunReport {
        if let Some(r) = self.local_root_missing() {
            return r;
        }
        let (c, input) = self.file_moves_command(dir, names, from_dirs);
        run::run(c, Some(input), None, Some(self.target.push_deadline)).await
    }

    /// Full `rsync -a --delete` of the root (or its subdirectory `sub`); `progress` counts
    /// what rsync reports.
    pub async fn push_full(
        &self,
        sub: &[u8],
        progress: &FullProgress,
        max_delete: Option<u64>,
    ) -> RunReport {
        if let Some(r) = self.local_root_missing().filter(|_| !sub.is_empty()) {
            return r;
        }
        // A full sync of a large tree legitimately takes long; rsync's --timeout catches a stall.
        run::run(
            self.full_command(sub, max_delete),
            None,
            Some(progress),
            None,
        )
        .await
    }

    /// A push into a subdirectory creates the missing directories above it (`--mkpath`), which
    /// must never include a local target's own directory: gone, its disk is most likely not
    /// mounted. A push of the whole root creates only that last directory, like rsync alone.
    pub(super) fn local_root_missing(&self) -> Option<RunReport> {
        let Dest::Local(root) = &self.target.dest else {
            return None;
        };
        (!root.is_dir()).then(|| {
            RunReport::unfinished(
                Outcome::TargetDown(format!(
                    "the target directory {} is missing (is its file system mounted?); \
                     syncd creates directories below it, never it",
                    root.display()
                )),
                "not-started",
            )
        })
    }
}
