//! A move job: a directory renamed inside the root reaches the target without its data. Its
//! new path is pushed whole (`--delete` inside it) with `--link-dest` naming the old path at
//! the target, so the receiver hard-links (or copies locally) every file that did not change;
//! only then is the move forgotten, which lets the old path's deletion go as an ordinary batch.
//! A crash between the two leaves both at the target until the journal finishes the job.
//!
//! Files moved to other directories go the same way, one run per directory they went to (each
//! old directory a `--link-dest`, and `-yy`: a file that kept its name is linked, one that did
//! not takes its old name as the basis). A file renamed in its directory needs no job: it goes
//! with a batch carrying `--fuzzy`.
//!
//! The old path and everything at or below the new one wait while the move is pending (see
//! [`MoveHolds`]): a deletion of the old tree must not run before the push that links from it,
//! and the new tree's paths go with the move, not as a plain upload. The first directory move
//! of a target runs beside the probe ([`probe`]) that tells whether a relative `--link-dest`
//! links there at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use tracing::{debug, info, warn};

use super::inflight::Claim;
use super::job::{Ending, JobKind, JobResult};
use crate::fs::{abs_path, check_root, dir_of, join_rel, name_of, parents, RootIdentity};
use crate::journal::{Journal, PendingMove};
use crate::observe::Reporter;
use crate::rsync::{LinkDest, Outcome, Runner};

/// How long a move whose new directory is gone waits for the rest of a rename chain to reach
/// the journal (the watcher hands a read over at once; the coalescer writes within 25 ms).
const CHAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// What a move job works with.
pub struct MoveJob {
    pub runner: Runner,
    /// Whether the target links from a relative `--link-dest` (unknown until the probe that
    /// runs beside the first move is done).
    pub link_dest: Arc<OnceLock<LinkDest>>,
    pub reporter: Reporter,
    pub journal: Journal,
    pub identity: RootIdentity,
    /// Cancelled once the watcher stopped: nothing is confirmed then (see `batch`).
    pub watch_stopped: tokio_util::sync::CancellationToken,
}

/// The probe job: whether the target links from a relative `--link-dest`, kept in `found`
/// (left unknown when the target could not be reached: the next move probes again).
pub async fn probe(runner: Runner, id: String, found: Arc<OnceLock<LinkDest>>) -> JobResult {
    match runner.probe_link_dest().await {
        Ok(f) => {
            match &f {
                LinkDest::Works => {
                    info!(target = %id, "a relative --link-dest links at this target: renamed directories move")
                }
                LinkDest::Fails(why) => {
                    warn!(target = %id, reason = %why, "renamed directories go as plain pushes to this target")
                }
            }
            let _ = found.set(f);
        }
        Err(o) => debug!(target = %id, outcome = ?o, "rename probe: target not reached"),
    }
    JobResult {
        kind: JobKind::Probe,
        ending: Ending::Done,
        delivered: 0,
        path_error: None,
        released_moves: false,
    }
}

/// rsync takes at most 20 alternate destination directories per run.
pub const MAX_LINK_DESTS: usize = 20;

/// Files renamed from other directories, grouped by the directory they went to (one run each,
/// with at most [`MAX_LINK_DESTS`] old directories; the rest wait for the next round).
pub fn file_move_groups(moves: &[PendingMove]) -> Vec<(Vec<u8>, Vec<PendingMove>)> {
    let mut by_dir: std::collections::BTreeMap<Vec<u8>, Vec<PendingMove>> = Default::default();
    for m in moves.iter().filter(|m| !m.dir && !m.same_dir()) {
        let group = by_dir.entry(dir_of(&m.to).to_vec()).or_default();
        let mut olds: HashSet<&[u8]> = group.iter().map(|g| dir_of(&g.from)).collect();
        olds.insert(dir_of(&m.from));
        if olds.len() <= MAX_LINK_DESTS {
            group.push(m.clone());
        }
    }
    by_dir.into_iter().collect()
}

/// What a file move group holds in flight, as journal paths (no other push may touch one
/// meanwhile, nor the group start twice): every path its run writes or reads at the target.
/// That is each new name, each old one, and each new name's file name in every old directory:
/// rsync's `--link-dest` links from there, even over a destination already up to date, and a
/// file replaced there by a concurrent push between rsync's check and its link is linked with
/// the wrong content (fuzz seed 3102: `f2` at the target became `d0/f2`'s new content).
pub fn file_moves_claim(moves: &[PendingMove]) -> Claim {
    let olds: BTreeSet<&[u8]> = moves.iter().map(|m| dir_of(&m.from)).collect();
    let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();
    for m in moves {
        touched.insert(m.to.clone());
        touched.insert(m.from.clone());
        for d in &olds {
            touched.insert(join_rel(d, name_of(&m.to)));
        }
    }
    Claim {
        paths: touched.iter().cloned().collect(),
        plans: touched.into_iter().map(|p| (p, false)).collect(),
    }
}

/// What a move job hands back: how it ended and what it delivered, with its claim.
fn result((ending, delivered): (Ending, u64), claim: Claim) -> JobResult {
    JobResult {
        kind: JobKind::Batch(claim),
        released_moves: ending == Ending::Done,
        ending,
        delivered,
        path_error: None,
    }
}

/// What a move holds in flight: its new path, as a push that may delete below it, and its old
/// path, which it reads at the target (`--link-dest`), held like a deletion: nothing at or
/// below it may be written meanwhile (a file replaced there between rsync's check and its link
/// would be linked with the wrong content).
pub fn move_claim(m: &PendingMove) -> Claim {
    Claim {
        paths: Vec::new(),
        plans: vec![(m.to.clone(), true), (m.from.clone(), true)],
    }
}

impl MoveJob {
    pub async fn run(self, m: PendingMove, claim: Claim) -> JobResult {
        let done = match check_root(&self.runner.root.source, self.identity) {
            Err(e) => (Ending::Failed(e.into()), 0),
            Ok(()) => self.carry_out(&m).await,
        };
        result(done, claim)
    }

    /// How the move ended, and how many of its paths left the journal.
    async fn carry_out(&self, m: &PendingMove) -> (Ending, u64) {
        let id = &self.reporter.id;
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        if !self.is_dir(&m.to).await {
            // Renamed on at once (`a → b → c`, the second rename in the next journal commit),
            // or deleted. The rest of a chain reaches the journal within the coalescer's
            // commit gap, and collapses this move into the next (`a → c`): look again then.
            tokio::time::sleep(CHAIN_GRACE).await;
            let still = match self.journal.moves(id) {
                Ok(ms) => ms.iter().any(|p| p.is(m)),
                Err(e) => return (Ending::Failed(e.into()), 0),
            };
            if !still {
                return (Ending::Done, 0);
            }
            if !self.is_dir(&m.to).await {
                // Gone for good: its paths go as they are now.
                debug!(target = %id, to = %show(&m.to), "moved directory is gone; plain pushes instead");
                return (self.forget(m), 0);
            }
        }
        // Not waiting for the probe: where a link-dest does not link, the move sends what a
        // plain push would.
        if let Some(LinkDest::Fails(_)) = self.link_dest.get() {
            return (self.forget(m), 0);
        }
        // Read before rsync reads the source: a path changed during the push stays pending.
        let items = match self.journal.pending_below(id, &m.to) {
            Ok(items) => items,
            Err(e) => return (Ending::Failed(e.into()), 0),
        };
        let run = self.runner.push_move(&m.to, &m.from).await;
        self.reporter.rsync_run("move", &run.exit, run.bytes);
        match run.outcome {
            Outcome::Delivered => {
                info!(target = %id, from = %show(&m.from), to = %show(&m.to), bytes = run.bytes, "directory moved");
                let items = self.delivered(items).await;
                let mut n = 0;
                // Not once the watcher stopped: see `BatchJob::confirm`.
                if !self.watch_stopped.is_cancelled() {
                    n = match self.journal.confirm(id, &items) {
                        Ok(n) => n,
                        Err(e) => return (Ending::Failed(e.into()), 0),
                    };
                }
                self.reporter.delivered(&items, n);
                (self.forget(m), n)
            }
            // What failed below it is found by the plain pushes, which split and park.
            Outcome::Partial(e) | Outcome::Permanent(e) => {
                warn!(target = %id, to = %show(&m.to), error = %e, "move failed; its paths go as plain pushes");
                (self.forget(m), 0)
            }
            // The directory went away under rsync (exit 3): not the target's fault.
            _ if !self.is_dir(&m.to).await => (self.forget(m), 0),
            other => (
                Ending::of(other).expect("only outcomes that stop the job are left"),
                0,
            ),
        }
    }

    /// Of the paths a move pushed, those it delivered: where symlinks go apart (see
    /// `Runner::symlinks_go_apart`), the symlinks stay pending for the batches.
    async fn delivered(&self, items: Vec<crate::journal::Item>) -> Vec<crate::journal::Item> {
        if !self.runner.symlinks_go_apart() {
            return items;
        }
        let root = self.runner.root.source.clone();
        tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .filter(|i| {
                    std::fs::symlink_metadata(abs_path(&root, &i.path))
                        .map_or(true, |m| !m.file_type().is_symlink())
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Whether `rel` is a directory at the source now.
    async fn is_dir(&self, rel: &[u8]) -> bool {
        let p = abs_path(&self.runner.root.source, rel);
        tokio::task::spawn_blocking(move || std::fs::symlink_metadata(p).is_ok_and(|s| s.is_dir()))
            .await
            .unwrap_or(false)
    }

    /// Files renamed into `dir` from other directories (`moves`, their old directories at most
    /// [`MAX_LINK_DESTS`]): pushed in one run linking or basing each on its old name.
    pub async fn run_files(self, dir: Vec<u8>, moves: Vec<PendingMove>, claim: Claim) -> JobResult {
        let done = match check_root(&self.runner.root.source, self.identity) {
            Err(e) => (Ending::Failed(e.into()), 0),
            Ok(()) => self.carry_out_files(&dir, &moves).await,
        };
        result(done, claim)
    }

    async fn carry_out_files(&self, dir: &[u8], moves: &[PendingMove]) -> (Ending, u64) {
        let id = &self.reporter.id;
        if !self.is_dir(dir).await {
            // The directory they went to is gone (moved on, deleted): rsync could not even
            // enter it (exit 3, retried in vain). Their paths go as they are now.
            return (self.forget_all(moves), 0);
        }
        // A name that is a directory now (the file deleted, a directory made there) is no
        // file move any more: pushed as one, it would confirm what is below it undelivered.
        for m in moves {
            if self.is_dir(&m.to).await {
                return (self.forget_all(moves), 0);
            }
        }
        let mut items = Vec::new();
        for m in moves {
            match self.journal.pending_below(id, &m.to) {
                // The file itself: never what a directory of that name holds.
                Ok(i) => items.extend(i.into_iter().filter(|i| i.path == m.to)),
                Err(e) => return (Ending::Failed(e.into()), 0),
            }
        }
        let names: Vec<Vec<u8>> = moves.iter().map(|m| name_of(&m.to).to_vec()).collect();
        let mut from_dirs: Vec<Vec<u8>> = moves.iter().map(|m| dir_of(&m.from).to_vec()).collect();
        from_dirs.sort();
        from_dirs.dedup();
        let run = self.runner.push_file_moves(dir, &names, &from_dirs).await;
        self.reporter.rsync_run("move", &run.exit, run.bytes);
        let items = match run.outcome {
            Outcome::Delivered => self.delivered(items).await,
            _ => items,
        };
        let n = match run.outcome {
            Outcome::Delivered if self.watch_stopped.is_cancelled() => 0,
            Outcome::Delivered => match self.journal.confirm(id, &items) {
                Ok(n) => n,
                Err(e) => return (Ending::Failed(e.into()), 0),
            },
            // A name that vanished (exit 23/24) or a refusal: they go as plain pushes.
            Outcome::Partial(e) | Outcome::Permanent(e) => {
                warn!(target = %id, dir = %String::from_utf8_lossy(dir), error = %e, "file moves failed; their paths go as plain pushes");
                0
            }
            // The directory went away under rsync (exit 3): not the target's fault.
            _ if !self.is_dir(dir).await => 0,
            other => {
                let e = Ending::of(other).expect("only outcomes that stop the job are left");
                return (e, 0);
            }
        };
        if n > 0 {
            self.reporter.delivered(&items, n);
        }
        (self.forget_all(moves), n)
    }

    fn forget_all(&self, moves: &[PendingMove]) -> Ending {
        for m in moves {
            if let Ending::Failed(e) = self.forget(m) {
                return Ending::Failed(e);
            }
        }
        Ending::Done
    }

    fn forget(&self, m: &PendingMove) -> Ending {
        match self.journal.move_done(&self.reporter.id, m) {
            Ok(()) => Ending::Done,
            Err(e) => Ending::Failed(e.into()),
        }
    }
}

/// Which journal paths wait for the pending moves: everything at or below a directory move's
/// new path (it goes with the move), and everything at, below or above a move's old path (the
/// target keeps the old entry until the move is done). A renamed file's new name goes with the
/// batches, with `--fuzzy` (see [`MoveHolds::renamed_file`]).
#[derive(Default)]
pub struct MoveHolds {
    /// New directories and old paths: a path at or below one of them waits.
    roots: HashSet<Vec<u8>>,
    /// Directories above an old path: a deletion of one would remove the old entry.
    above_old: HashSet<Vec<u8>>,
    /// Renamed files, by new name.
    files: HashMap<Vec<u8>, PendingMove>,
    /// The old names those hold, and the new name each waits for.
    old_names: HashMap<Vec<u8>, Vec<u8>>,
}

impl MoveHolds {
    pub fn new(moves: &[PendingMove]) -> MoveHolds {
        let mut h = MoveHolds::default();
        let new_names: HashSet<&[u8]> = moves.iter().map(|m| m.to.as_slice()).collect();
        for m in moves {
            match m.dir || !m.same_dir() {
                // It goes with its move job.
                true => {
                    h.roots.insert(m.to.clone());
                }
                // It goes with the batches, with --fuzzy.
                false => {
                    h.files.insert(m.to.clone(), m.clone());
                }
            }
            // A renamed file's old name waits only to stay its new name's basis. One that is
            // itself a renamed file's new name (a swap `a ↔ b`, a cycle `a → b → c → a`) is
            // overwritten anyway, and holding it would hold each name until the other is
            // delivered: for ever.
            let swap = !m.dir && m.same_dir() && new_names.contains(m.from.as_slice());
            if swap && !crate::faults::on("hold-swaps") {
                continue;
            }
            if !m.dir && m.same_dir() {
                h.old_names.insert(m.from.clone(), m.to.clone());
            }
            h.roots.insert(m.from.clone());
            h.above_old.extend(parents(&m.from).map(|p| p.to_vec()));
        }
        h
    }

    /// The move of which `p` is a renamed file's new name: its push may use the old name as a
    /// basis, and once it is delivered the old name may go.
    pub fn renamed_file(&self, p: &[u8]) -> Option<&PendingMove> {
        self.files.get(p)
    }

    /// Of a renamed file's old name, the new name whose delivery it waits for.
    pub fn new_name_of(&self, old: &[u8]) -> Option<&[u8]> {
        self.old_names.get(old).map(Vec::as_slice)
    }

    pub fn holds(&self, p: &[u8]) -> bool {
        !self.roots.is_empty()
            && (self.roots.contains(p)
                || self.above_old.contains(p)
                || parents(p).any(|d| self.roots.contains(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_move_holds_its_new_tree_and_its_old_path_with_what_is_above_it() {
        let j_dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&j_dir.path().join("j")).unwrap();
        let rename = |from: &str, to: &str, dir| crate::journal::Rename {
            from: from.into(),
            to: to.into(),
            dir,
        };
        let renames = [rename("x/a", "b", true), rename("d/f", "d/g", false)];
        j.record_moves(&["r/t".into()], &renames).unwrap();
        let h = MoveHolds::new(&j.moves("r/t").unwrap());
        for p in ["b", "b/f", "b/d/f", "x/a", "x/a/f", "x", "d/f", "d"] {
            assert!(h.holds(p.as_bytes()), "{p} waits");
        }
        // A renamed file's new name goes with the batches, with --fuzzy.
        for p in ["bb", "c", "x/ab", "x/c", "", "d/g", "d/e"] {
            assert!(!h.holds(p.as_bytes()), "{p} goes");
        }
        assert_eq!(
            h.renamed_file(b"d/g").map(|m| m.from.as_slice()),
            Some(&b"d/f"[..])
        );
        assert!(h.renamed_file(b"d/f").is_none() && h.renamed_file(b"b").is_none());
        assert!(!MoveHolds::new(&[]).holds(b"b"));
    }

    #[test]
    fn swapped_or_cycled_file_names_hold_nothing_of_each_other() {
        let j_dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&j_dir.path().join("j")).unwrap();
        let file = |from: &str, to: &str| crate::journal::Rename {
            from: from.into(),
            to: to.into(),
            dir: false,
        };
        // mv d/a d/t; mv d/b d/a; mv d/t d/b, and a 3-cycle in e/.
        let renames = [
            file("d/a", "d/t"),
            file("d/b", "d/a"),
            file("d/t", "d/b"),
            file("e/x", "e/t"),
            file("e/z", "e/x"),
            file("e/y", "e/z"),
            file("e/t", "e/y"),
        ];
        j.record_moves(&["r/t".into()], &renames).unwrap();
        let moves = j.moves("r/t").unwrap();
        assert_eq!(moves.len(), 5, "{moves:?}");
        let h = MoveHolds::new(&moves);
        for p in ["d/a", "d/b", "e/x", "e/y", "e/z", "d", "e"] {
            assert!(!h.holds(p.as_bytes()), "{p} goes");
        }
        assert!(h.renamed_file(b"d/a").is_some() && h.renamed_file(b"e/y").is_some());
    }

    /// The pending moves of `renames` as the journal keeps them, and what one planner pass
    /// starts of them with nothing running: (file groups by directory, directory moves by new
    /// path).
    fn started(renames: &[crate::journal::Rename]) -> (Vec<String>, Vec<String>) {
        let j_dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&j_dir.path().join("j")).unwrap();
        j.record_moves(&["r/t".into()], renames).unwrap();
        let caps = crate::dispatch::planner::MoveCaps {
            excludes_same_in_subtrees: true,
            probe_known_or_running: true,
        };
        let mut inflight = crate::dispatch::inflight::InFlight::default();
        let pass = crate::dispatch::planner::plan_moves(
            j.moves("r/t").unwrap(),
            caps,
            &mut inflight,
            0,
            8,
            &mut |_| Some(0),
        );
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        (
            pass.file_groups.iter().map(|(d, _, _)| show(d)).collect(),
            pass.dir_moves.iter().map(|(m, _)| show(&m.to)).collect(),
        )
    }

    fn rename(from: &str, to: &str, dir: bool) -> crate::journal::Rename {
        crate::journal::Rename {
            from: from.into(),
            to: to.into(),
            dir,
        }
    }

    /// Fuzz seed 3102: files moved into the root from `d0` (so `--link-dest=d0`, which reads
    /// `d0/f2` for `f2`) and into `d0` (writing `d0/f2`) ran side by side, and rsync linked the
    /// root's `f2` to the new `d0/f2`. What one run reads at the target, no other writes.
    #[test]
    fn file_moves_reading_what_other_file_moves_write_run_one_after_the_other() {
        // mv d0/f2 f2 (into the root, from d0) while f1 goes to d0/f2 (into d0, from the root).
        let (groups, _) = started(&[rename("d0/f2", "f2", false), rename("f1", "d0/f2", false)]);
        assert_eq!(groups.len(), 1, "{groups:?}");
        // Into the root from d0 reads d0/f3 too (the same name); into d0 writes d0/f3.
        let (groups, _) = started(&[rename("d0/x", "f3", false), rename("y", "d0/f3", false)]);
        assert_eq!(groups.len(), 1, "{groups:?}");
        // Nothing shared: side by side.
        let (groups, _) = started(&[rename("d0/x", "f3", false), rename("y", "d1/f4", false)]);
        assert_eq!(groups, ["", "d1"]);
    }

    /// A directory move links from its old directory at the target: nothing may be written at
    /// or below it meanwhile.
    #[test]
    fn a_directory_move_holds_its_old_directory_like_a_deletion() {
        let (groups, dirs) = started(&[rename("a", "b", true), rename("x", "a/f", false)]);
        assert_eq!((groups.len() + dirs.len()), 1, "{groups:?} {dirs:?}");
        let (groups, dirs) = started(&[rename("a", "b", true), rename("x/f", "c/f", false)]);
        assert_eq!(
            (groups, dirs),
            (vec!["c".to_string()], vec!["b".to_string()])
        );
    }
}
