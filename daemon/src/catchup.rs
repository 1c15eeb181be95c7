//! Catch-up: what changed in a root while nobody watched it (syncd down, or an inotify
//! overflow), told by one local walk (`lstat` only) diffed against the index, instead of a full
//! rsync to every target.
//!
//! The walk visits names sorted byte-wise, depth first, which is the index's key order (see
//! `journal::index`), so both are read side by side and neither is held in memory: only what
//! differs is collected.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Excludes, RootConfig};
pub use crate::fs::walk_order;
use crate::fs::{is_prefix_dir, Stat};
use crate::journal::{IndexScan, IndexSum, IndexTally, Journal, JournalError};
use crate::watch::WatchProgress;

/// How a path differs from what the index remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delta {
    /// At the source, not in the index.
    Created,
    /// In both, and its `lstat` differs (type included), or its entry is racy.
    Changed,
    /// In the index, gone from the source. Everything below a deleted directory is listed too:
    /// if the directory is back by the time of the push (recreated), its push as a directory
    /// would not delete what it held, each path's own deletion does.
    Deleted,
}

/// One path found to differ; `stat` is what the walk saw (None when deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: Vec<u8>,
    pub delta: Delta,
    pub stat: Option<Stat>,
}

/// An entry of a directory: its name and `lstat`.
type Named = (Vec<u8>, Stat);

/// The entries below `source` (not the root itself) in walk order, with their `lstat`;
/// excluded entries are skipped and excluded directories not entered. Directories that cannot
/// be read are listed in [`Walk::unreadable`] (shared, filled as the walk goes: an error comes
/// right after its directory, before anything below it in walk order; the root itself as the
/// empty path): what the index has below them is not taken for deleted.
///
/// Each directory is read whole and sorted; entries are `lstat`ed relative to their directory
/// (`fstatat`, not a lookup of the whole path), which is most of a catch-up's time.
pub struct Walk {
    source: PathBuf,
    excludes: Excludes,
    /// The directories being walked, outermost first: each one's path and the entries still to
    /// come, sorted backwards (the next one is last).
    open: Vec<(Vec<u8>, Vec<Named>)>,
    started: bool,
    unreadable: Rc<RefCell<Vec<Vec<u8>>>>,
    /// Each directory is read only once the watcher's walk watched it.
    gate: Option<Arc<WatchProgress>>,
}

impl Walk {
    pub fn new(source: &Path, excludes: &Excludes) -> Walk {
        Walk {
            source: source.to_path_buf(),
            excludes: excludes.clone(),
            open: Vec::new(),
            started: false,
            unreadable: Rc::default(),
            gate: None,
        }
    }

    /// Read each directory only once `gate` says it is watched (a walk beside the watcher's).
    pub fn gated(mut self, gate: Option<Arc<WatchProgress>>) -> Walk {
        self.gate = gate;
        self
    }

    /// The directories found unreadable so far, still filled as the walk goes on.
    pub fn unreadable(&self) -> Rc<RefCell<Vec<Vec<u8>>>> {
        self.unreadable.clone()
    }

    /// Enter directory `rel`: its entries, or a note that it cannot be read.
    fn enter(&mut self, rel: Vec<u8>) {
        use std::os::unix::ffi::OsStringExt;
        if let Some(g) = &self.gate {
            g.wait_for(&rel);
        }
        let read = || -> std::io::Result<Vec<Named>> {
            let mut v = Vec::new();
            for e in std::fs::read_dir(crate::fs::abs_path(&self.source, &rel))? {
                let e = e?;
                // Gone since it was listed: as if never seen (the index tells a deletion).
                if let Ok(m) = e.metadata() {
                    v.push((e.file_name().into_vec(), Stat::of(&m)));
                }
            }
            v.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            Ok(v)
        };
        match read() {
            Ok(v) => self.open.push((rel, v)),
            Err(_) => self.unreadable.borrow_mut().push(rel),
        }
    }
}

impl Iterator for Walk {
    type Item = (Vec<u8>, Stat);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            self.enter(Vec::new());
        }
        loop {
            let (dir, entries) = self.open.last_mut()?;
            let Some((name, stat)) = entries.pop() else {
                self.open.pop();
                continue;
            };
            let rel = crate::fs::join_rel(dir, &name);
            let is_dir = stat.kind == crate::fs::Kind::Dir;
            if self.excludes.matches(&rel, is_dir) {
                continue;
            }
            if is_dir {
                self.enter(rel.clone());
            }
            return Some((rel, stat));
        }
    }
}

/// Merge the walk with the index (both in walk order): what was created, changed or deleted.
/// `racy(stat)`: an index entry recorded so close to a change that a later change in the same
/// timestamp tick would look the same; it is taken for changed. `unreadable(path)`: below a
/// directory the walk could not read, nothing is taken for deleted.
pub fn diff(
    walk: impl Iterator<Item = (Vec<u8>, Stat)>,
    index: impl Iterator<Item = (Vec<u8>, Stat)>,
    racy: impl Fn(&Stat) -> bool,
    unreadable: impl Fn(&[u8]) -> bool,
) -> Vec<Found> {
    let mut walk = walk.peekable();
    let mut index = index.peekable();
    let mut out = Vec::new();
    loop {
        let order = match (walk.peek(), index.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((w, _)), Some((i, _))) => walk_order(w, i),
        };
        match order {
            Ordering::Less => {
                let (path, stat) = walk.next().expect("peeked");
                out.push(Found {
                    path,
                    delta: Delta::Created,
                    stat: Some(stat),
                });
            }
            Ordering::Equal => {
                let (path, now) = walk.next().expect("peeked");
                let (_, then) = index.next().expect("peeked");
                if then.changed(&now) || racy(&then) {
                    out.push(Found {
                        path,
                        delta: Delta::Changed,
                        stat: Some(now),
                    });
                }
            }
            Ordering::Greater => {
                let (path, _) = index.next().expect("peeked");
                if unreadable(&path) {
                    continue;
                }
                out.push(Found {
                    path,
                    delta: Delta::Deleted,
                    stat: None,
                });
            }
        }
    }
}

/// A timestamp tick on a filesystem with sub-second timestamps: the kernel stamps with a coarse
/// clock (a jiffy, at most 10 ms), with room to spare.
const FINE_TICK: Duration = Duration::from_millis(100);
/// A timestamp tick on a filesystem with whole-second timestamps (2 s on FAT).
const COARSE_TICK: Duration = Duration::from_secs(3);
/// Beyond its wait in memory, how long an event may take from the kernel to the journal.
const PIPELINE_MARGIN: Duration = Duration::from_secs(1);

/// How much earlier than the index's last write a recorded change may be and still be followed,
/// in the same timestamp tick, by one whose event was lost: a tick of the root's filesystem,
/// plus, unless the index was settled by an orderly stop, how long an event may wait on its way
/// (an unclosed write waits in memory up to [`RootConfig::longest_write_wait`]).
fn racy_window(root: &RootConfig, sum: &IndexSum) -> Duration {
    let fine = Stat::lstat(&root.source).is_ok_and(|s| s.ctime_ns % 1_000_000_000 != 0);
    let tick = if fine { FINE_TICK } else { COARSE_TICK };
    match sum.settled {
        true => tick,
        false => tick + root.longest_write_wait() + PIPELINE_MARGIN,
    }
}

/// Whether an entry was recorded so close to the index's last write (`written_ns`) that a
/// later change in the same timestamp tick, whose event was lost, would look the same: its
/// ctime is within `window_ns` of that write (git's "racy index" rule).
fn racy(s: &Stat, written_ns: i64, window_ns: i64) -> bool {
    s.ctime_ns.saturating_add(window_ns) >= written_ns
}

/// Why a root's index cannot be trusted: a full sync is owed instead of the catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("the root has no complete index yet")]
    NoIndex,
    #[error("the root's exclude list changed since its index was built (a path it now includes was never pushed)")]
    ExcludesChanged,
    #[error("the journal lost writes the index saw (a damaged or replaced journal)")]
    JournalBehind,
    #[error("the index does not add up to its sum (entries lost or altered)")]
    SumMismatch,
    #[error("an index entry cannot be read")]
    Unreadable,
    #[error("an index write failed (the index may lack paths pushed since)")]
    WriteFailed,
}

impl Untrusted {
    /// Whether the journal or the index was damaged (not merely new or outdated).
    pub fn is_damage(self) -> bool {
        matches!(
            self,
            Untrusted::JournalBehind
                | Untrusted::SumMismatch
                | Untrusted::Unreadable
                | Untrusted::WriteFailed
        )
    }
}

/// What a catch-up of one root found.
#[derive(Debug)]
pub struct CatchUp {
    pub found: Vec<Found>,
    /// None: the index exists and every entry the sum counts was read back unaltered. Some:
    /// `found` means nothing, a full sync is owed instead.
    pub untrusted: Option<Untrusted>,
    /// Entries walked at the source.
    pub walked: u64,
}

/// Walk `root` and diff it against its index in `journal`; with `gate`, beside the watcher's
/// first walk (see [`Walk::gated`]).
pub fn catch_up(
    journal: &Journal,
    root: &RootConfig,
    gate: Option<Arc<WatchProgress>>,
) -> Result<CatchUp, JournalError> {
    let refuse = |why| {
        Ok(CatchUp {
            found: Vec::new(),
            untrusted: Some(why),
            walked: 0,
        })
    };
    let sum = match journal.index_sum(&root.name) {
        Ok(Some(sum)) if sum.built.is_some() => sum,
        Ok(_) => return refuse(Untrusted::NoIndex),
        Err(JournalError::Index(_)) => return refuse(Untrusted::Unreadable),
        Err(e) => return Err(e),
    };
    if sum.built != Some(root.excludes.digest()) {
        return refuse(Untrusted::ExcludesChanged);
    }
    if journal.index_ahead_of_journal()? {
        return refuse(Untrusted::JournalBehind);
    }
    if journal.index_failed(&root.name)? {
        return refuse(Untrusted::WriteFailed);
    }
    let window = racy_window(root, &sum).as_nanos() as i64;
    let racy = |s: &Stat| racy(s, sum.written_ns, window);
    let walk = Walk::new(&root.source, &root.excludes).gated(gate);
    let unreadable = walk.unreadable();
    let walked = Cell::new(0u64);
    let walk = walk.inspect(|_| walked.set(walked.get() + 1));
    // The index is read on a thread of its own while this one walks: two cores, half the time.
    let (index, reader) = read_ahead(journal.index_scan(&root.name)?);
    let found = diff(walk, index, racy, |p| {
        unreadable
            .borrow()
            .iter()
            .any(|d| d.is_empty() || is_prefix_dir(d, p))
    });
    let (tally, error) = reader.join().map_err(|_| {
        JournalError::Index(crate::journal::IndexError::Failed(
            "the index reader panicked".into(),
        ))
    })?;
    // An entry that cannot be read is an index not to trust, not an error of the catch-up.
    let untrusted = if error.is_some() {
        Some(Untrusted::Unreadable)
    } else if !tally.matches(&sum) {
        Some(Untrusted::SumMismatch)
    } else {
        None
    };
    Ok(CatchUp {
        found,
        untrusted,
        walked: walked.get(),
    })
}

/// Entries read from the index per message of [`read_ahead`].
const READ_AHEAD_CHUNK: usize = 4096;

/// The index reader of a catch-up: what it read and tallied, and the error it stopped at.
type Reader = std::thread::JoinHandle<(IndexTally, Option<JournalError>)>;

/// Read `scan` on its own thread, a few chunks ahead: its entries in order (up to the first
/// that cannot be read), and the thread, which returns the tally and that error.
fn read_ahead(mut scan: IndexScan) -> (impl Iterator<Item = (Vec<u8>, Stat)>, Reader) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Vec<u8>, Stat)>>(8);
    let reader = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(READ_AHEAD_CHUNK);
        let mut error = None;
        for e in scan.by_ref() {
            match e {
                Ok((p, e)) => chunk.push((p, e.stat)),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            let full = chunk.len() == READ_AHEAD_CHUNK;
            if full
                && tx
                    .send(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(READ_AHEAD_CHUNK),
                    ))
                    .is_err()
            {
                break;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(chunk);
        }
        (scan.tally, error)
    });
    (rx.into_iter().flatten(), reader)
}

/// Why a target is owed a full sync where a catch-up would not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FullSyncWhy {
    /// Asked for by the caller, for this reason (a root that cannot be fully watched).
    #[error("{0}")]
    Asked(String),
    #[error("the target never finished a full sync of this root (new to the journal, or its first one was interrupted)")]
    NeverSynced,
    #[error("the source root is a different directory than the one last replicated")]
    RootReplaced,
    #[error("syncd did not stop in order last time (killed or crashed): what it pushed in its last moments may be unknown to the index")]
    UncleanStop,
    #[error("the index cannot vouch for the root: {0}")]
    Untrusted(#[from] Untrusted),
}

/// What one root's catch-up decided, per target.
#[derive(Debug)]
pub struct Plan {
    /// In the order of the targets given: None catches up, Some owes a full sync.
    pub full: Vec<Option<FullSyncWhy>>,
    /// What differs from the index, for the targets that catch up.
    pub found: Vec<Found>,
    /// Entries walked at the source.
    pub walked: u64,
    /// The index cannot vouch for the root: every target is owed a full sync, and the index is
    /// built anew (see [`rebuild`]).
    pub rebuild: bool,
}

/// A catch-up begun at start beside the watcher's first walk, on a thread of its own.
pub struct Early(std::thread::JoinHandle<Result<CatchUp, JournalError>>);

impl Early {
    /// Catch `root` up, reading each directory once `gate` says it is watched.
    pub fn start(journal: Journal, root: Arc<RootConfig>, gate: Arc<WatchProgress>) -> Early {
        Early(std::thread::spawn(move || {
            catch_up(&journal, &root, Some(gate))
        }))
    }

    fn join(self) -> Result<CatchUp, JournalError> {
        self.0.join().unwrap_or_else(|_| {
            Err(JournalError::Index(crate::journal::IndexError::Failed(
                "the catch-up panicked".into(),
            )))
        })
    }
}

/// Decide how `root` catches up with what nobody watched. `whole`: why every target is owed a
/// full sync whatever the index says. `targets`: the ids of its targets, with `check_targets`
/// (at start) those that never finished a full sync are owed one. `early`: the walk, begun at
/// start (used when the index is walked at all).
pub fn plan(
    journal: &Journal,
    root: &RootConfig,
    targets: &[String],
    check_targets: bool,
    whole: Option<FullSyncWhy>,
    early: Option<Early>,
) -> Result<Plan, JournalError> {
    // A lost journal tail also loses the mark of the orderly stop: say the graver. And with
    // no index yet there was nothing to stop in order.
    let whole = match whole {
        Some(FullSyncWhy::UncleanStop) if journal.index_ahead_of_journal()? => {
            Some(FullSyncWhy::Untrusted(Untrusted::JournalBehind))
        }
        Some(FullSyncWhy::UncleanStop) if !matches!(journal.index_sum(&root.name), Ok(Some(s)) if s.built.is_some()) => {
            Some(FullSyncWhy::Untrusted(Untrusted::NoIndex))
        }
        w => w,
    };
    let c = match (whole.is_some(), early) {
        (true, _) => None,
        (false, Some(e)) => Some(e.join()?),
        (false, None) => Some(catch_up(journal, root, None)?),
    };
    let whole = match &c {
        None => whole,
        Some(c) => c.untrusted.map(FullSyncWhy::Untrusted),
    };
    let mut full = Vec::with_capacity(targets.len());
    for t in targets {
        full.push(match &whole {
            Some(why) => Some(why.clone()),
            None if check_targets && journal.full_synced_at(t)?.is_none() => {
                Some(FullSyncWhy::NeverSynced)
            }
            None => None,
        });
    }
    let (found, walked) = match c {
        Some(c) if whole.is_none() => (c.found, c.walked),
        Some(c) => (Vec::new(), c.walked),
        None => (Vec::new(), 0),
    };
    Ok(Plan {
        full,
        found,
        walked,
        rebuild: whole.is_some(),
    })
}

/// Index entries written in one commit while the index is rebuilt.
const REBUILD_CHUNK: usize = 8192;

/// Build the root's index anew from a walk of its source; returns the entries indexed. Call
/// only once every target's full sync is journaled (the module invariant of
/// `journal::index`): the full syncs cover every state the walk records.
pub fn rebuild(journal: &Journal, root: &RootConfig) -> Result<u64, JournalError> {
    journal.index_clear(&root.name)?;
    let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
    let mut n = 0u64;
    for (p, s) in Walk::new(&root.source, &root.excludes) {
        chunk.push((p, Some(s)));
        if chunk.len() == REBUILD_CHUNK {
            journal.index_update(&root.name, &chunk)?;
            n += chunk.len() as u64;
            chunk.clear();
        }
    }
    // Even an empty root gets its sum, which marks it built.
    journal.index_update(&root.name, &chunk)?;
    journal.index_mark_built(&root.name, root.excludes.digest())?;
    Ok(n + chunk.len() as u64)
}

/// Record in the index what a catch-up found, once it is journaled for every target.
pub fn index_found(journal: &Journal, root: &str, found: &[Found]) -> Result<(), JournalError> {
    for chunk in found.chunks(REBUILD_CHUNK) {
        let changes: Vec<(Vec<u8>, Option<Stat>)> =
            chunk.iter().map(|f| (f.path.clone(), f.stat)).collect();
        journal.index_update(root, &changes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    fn root_at(source: &Path, modify_delay: Duration) -> RootConfig {
        RootConfig {
            name: "r".into(),
            source: source.to_path_buf(),
            excludes: Excludes::default(),
            delay: Duration::ZERO,
            modify_delay,
            full_resync_interval: Duration::ZERO,
            delete_guard: Default::default(),
            targets: Vec::new(),
        }
    }

    fn st(ino: u64, kind: Kind, size: u64) -> Stat {
        Stat {
            kind,
            size,
            mtime_ns: 1,
            ctime_ns: 2,
            ino,
            mode: 0o644,
            nlink: 1,
        }
    }

    fn list(v: &[(&str, Stat)]) -> Vec<(Vec<u8>, Stat)> {
        let mut v: Vec<_> = v.iter().map(|(p, s)| (p.as_bytes().to_vec(), *s)).collect();
        v.sort_by(|a, b| walk_order(&a.0, &b.0));
        v
    }

    fn found(f: &[Found]) -> Vec<(String, Delta)> {
        f.iter()
            .map(|f| (String::from_utf8_lossy(&f.path).into_owned(), f.delta))
            .collect()
    }

    #[test]
    fn an_entry_changed_within_the_window_of_the_last_write_is_racy() {
        let s = |ctime_ns| Stat {
            ctime_ns,
            ..st(1, Kind::File, 1)
        };
        let (written, window) = (10_000, 3_000);
        assert!(racy(&s(9_999), written, window));
        assert!(racy(&s(7_000), written, window));
        assert!(!racy(&s(6_999), written, window));
        assert!(
            racy(&s(12_000), written, window),
            "changed after the write: racy too"
        );
    }

    #[test]
    fn a_settled_index_is_racy_only_within_a_tick_of_the_stop() {
        let d = tempfile::tempdir().unwrap();
        let root = root_at(d.path(), Duration::from_secs(5));
        let tick = match Stat::lstat(d.path()).unwrap().ctime_ns % 1_000_000_000 {
            0 => COARSE_TICK,
            _ => FINE_TICK,
        };
        let mut sum = IndexSum::default();
        assert_eq!(
            racy_window(&root, &sum),
            tick + Duration::from_secs(50) + PIPELINE_MARGIN,
            "running: an unclosed write may wait ten modify_delays in memory"
        );
        sum.settled = true;
        assert_eq!(racy_window(&root, &sum), tick, "after an orderly stop");
    }

    #[test]
    fn what_the_walk_and_the_index_disagree_on() {
        use Delta::*;
        let (f, d) = (Kind::File, Kind::Dir);
        let index = list(&[
            ("a", st(1, d, 0)),
            ("a/keep", st(2, f, 5)),
            ("a/grown", st(3, f, 5)),
            ("gone", st(4, d, 0)),
            ("gone/x", st(5, f, 1)),
            ("gone/sub", st(6, d, 0)),
            ("gone/sub/y", st(7, f, 1)),
            ("was-file", st(8, f, 1)),
            ("z", st(9, f, 1)),
        ]);
        let walk = list(&[
            ("a", st(1, d, 4096)),
            ("a/keep", st(2, f, 5)),
            ("a/grown", st(3, f, 6)),
            ("a/new", st(10, f, 1)),
            ("new-dir", st(11, d, 0)),
            ("new-dir/n", st(12, f, 1)),
            ("was-file", st(8, d, 0)),
            ("z", st(9, f, 1)),
        ]);
        let got = diff(walk.into_iter(), index.into_iter(), |_| false, |_| false);
        assert_eq!(
            found(&got),
            [
                ("a/grown".into(), Changed),
                ("a/new".into(), Created),
                ("gone".into(), Deleted),
                ("gone/sub".into(), Deleted),
                ("gone/sub/y".into(), Deleted),
                ("gone/x".into(), Deleted),
                ("new-dir".into(), Created),
                ("new-dir/n".into(), Created),
                ("was-file".into(), Changed),
            ]
        );
    }

    #[test]
    fn a_racy_entry_is_taken_for_changed_and_nothing_is_deleted_below_an_unreadable_directory() {
        let f = Kind::File;
        let index = list(&[
            ("locked", st(1, Kind::Dir, 0)),
            ("locked/x", st(2, f, 1)),
            ("r", st(3, f, 1)),
        ]);
        let walk = list(&[("locked", st(1, Kind::Dir, 0)), ("r", st(3, f, 1))]);
        let got = diff(
            walk.into_iter(),
            index.into_iter(),
            |s| s.ino == 3,
            |p| is_prefix_dir(b"locked", p),
        );
        assert_eq!(found(&got), [("r".to_string(), Delta::Changed)]);
    }

    #[test]
    fn a_gated_walk_reads_no_directory_before_the_watcher_watched_it() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/x", "b/y"] {
            std::fs::create_dir_all(d.path().join(p).parent().unwrap()).unwrap();
            std::fs::write(d.path().join(p), b"x").unwrap();
        }
        let gate = Arc::new(WatchProgress::default());
        gate.watched(b"");
        gate.watched(b"a");
        // One entry at a time: the walk is where the last entry received left it.
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        let (src, g) = (d.path().to_path_buf(), gate.clone());
        let walker = std::thread::spawn(move || {
            for (p, _) in Walk::new(&src, &Excludes::default()).gated(Some(g)) {
                tx.send(String::from_utf8(p).unwrap()).unwrap();
            }
        });
        let next = || rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!([next(), next()], ["a", "a/x"]);
        // `b` is not watched yet: the walk waits before reading it.
        let early = rx.recv_timeout(std::time::Duration::from_millis(100));
        assert!(early.is_err(), "read b before its watch: {early:?}");
        std::fs::write(d.path().join("b/after-the-watch"), b"x").unwrap();
        gate.watched(b"b");
        gate.finish();
        let rest: Vec<String> = rx.iter().collect();
        walker.join().unwrap();
        assert_eq!(rest, ["b", "b/after-the-watch", "b/y"]);
    }

    #[test]
    fn the_walk_comes_in_the_index_order_and_skips_what_is_excluded() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a.txt", "a/b", "a-z", "a/0/deep", "skip/x", "b"] {
            let full = d.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, b"x").unwrap();
        }
        std::os::unix::fs::symlink("nowhere", d.path().join("link")).unwrap();
        let ex = Excludes::new(&["skip/".to_string()]).unwrap();
        let got: Vec<(String, Kind)> = Walk::new(d.path(), &ex)
            .map(|(p, s)| (String::from_utf8(p).unwrap(), s.kind))
            .collect();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["a", "a/0", "a/0/deep", "a/b", "a-z", "a.txt", "b", "link"]
        );
        assert_eq!(got[7].1, Kind::Symlink);
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| walk_order(a.as_bytes(), b.as_bytes()));
        assert_eq!(sorted, names);
    }

    /// Index the tree as it is, through the journal.
    fn index_all(j: &crate::journal::Journal, src: &Path) {
        let all: Vec<_> = Walk::new(src, &Excludes::default())
            .map(|(p, s)| (p, Some(s)))
            .collect();
        j.index_update("r", &all).unwrap();
        j.index_mark_built("r", Excludes::default().digest())
            .unwrap();
    }

    fn diff_index(j: &crate::journal::Journal, src: &Path) -> (Vec<(String, Delta)>, bool) {
        let mut scan = j.index_scan("r").unwrap();
        let index = scan.by_ref().map(|e| {
            let (p, e) = e.unwrap();
            (p, e.stat)
        });
        let got = diff(
            Walk::new(src, &Excludes::default()),
            index,
            |_| false,
            |_| false,
        );
        // Read to the end: the tally covers every entry.
        let trusted = scan.tally.matches(&j.index_sum("r").unwrap().unwrap());
        let mut got = found(&got);
        got.sort();
        (got, trusted)
    }

    #[test]
    fn every_kind_of_change_made_while_down_is_found() {
        use std::io::Write;
        use Delta::*;
        let d = tempfile::tempdir().unwrap();
        let (src, state) = (d.path().join("src"), d.path().join("state"));
        let w = |p: &str, b: &[u8]| {
            let f = src.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b).unwrap();
        };
        for p in [
            "append",
            "truncate",
            "delete",
            "chmod",
            "same",
            "rewrite",
            "became-dir",
        ] {
            w(p, b"0123456789");
        }
        w("olddir/inner/f", b"x");
        std::os::unix::fs::symlink("same", src.join("link")).unwrap();
        let j = crate::journal::Journal::open(&state).unwrap();
        index_all(&j, &src);
        assert_eq!(diff_index(&j, &src), (vec![], true), "nothing changed yet");

        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(src.join("append"))
            .unwrap();
        f.write_all(b"more").unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("truncate"))
            .unwrap()
            .set_len(3)
            .unwrap();
        std::fs::remove_file(src.join("delete")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        // Same size, same mtime put back (utimensat): only the ctime tells.
        let before = std::fs::metadata(src.join("rewrite"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::write(src.join("rewrite"), b"9876543210").unwrap();
        std::fs::File::options()
            .write(true)
            .open(src.join("rewrite"))
            .unwrap()
            .set_modified(before)
            .unwrap();
        std::fs::remove_file(src.join("became-dir")).unwrap();
        w("became-dir/child", b"c");
        std::fs::remove_file(src.join("link")).unwrap();
        std::os::unix::fs::symlink("append", src.join("link")).unwrap();
        std::fs::rename(src.join("olddir"), src.join("newdir")).unwrap();
        w("tree/a/b", b"b");

        let (got, trusted) = diff_index(&j, &src);
        assert!(trusted);
        let want: Vec<(String, Delta)> = vec![
            ("append".into(), Changed),
            ("became-dir".into(), Changed),
            ("became-dir/child".into(), Created),
            ("chmod".into(), Changed),
            ("delete".into(), Deleted),
            ("link".into(), Changed),
            ("newdir".into(), Created),
            ("newdir/inner".into(), Created),
            ("newdir/inner/f".into(), Created),
            ("olddir".into(), Deleted),
            ("olddir/inner".into(), Deleted),
            ("olddir/inner/f".into(), Deleted),
            ("rewrite".into(), Changed),
            ("tree".into(), Created),
            ("tree/a".into(), Created),
            ("tree/a/b".into(), Created),
            ("truncate".into(), Changed),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_catch_up_trusts_only_an_index_that_adds_up_and_takes_recent_entries_for_changed() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("old"), b"o").unwrap();
        let root = root_at(&src, Duration::ZERO);
        let j = crate::journal::Journal::open(&d.path().join("state")).unwrap();
        // No index yet: nothing to trust (a full sync is owed).
        assert_eq!(
            catch_up(&j, &root, None).unwrap().untrusted,
            Some(Untrusted::NoIndex)
        );
        // Recorded just now: within the racy window of the index's last write, so "old" is
        // pushed again, unchanged as it looks.
        index_all(&j, &src);
        let c = catch_up(&j, &root, None).unwrap();
        assert_eq!(c.untrusted, None);
        assert_eq!(c.walked, 1);
        assert_eq!(found(&c.found), [("old".to_string(), Delta::Changed)]);
        // The index read back altered (as a corrupted log would leave it): not trusted.
        j.index_update("r", &[(b"old".to_vec(), None)]).unwrap();
        let sum = j.index_sum("r").unwrap().unwrap();
        j.index_update("r", &[(b"ghost".to_vec(), Stat::lstat(&src).ok())])
            .unwrap();
        let mut forged = j.index_sum("r").unwrap().unwrap();
        forged.count = sum.count;
        j.index_forge_sum("r", forged);
        assert_eq!(
            catch_up(&j, &root, None).unwrap().untrusted,
            Some(Untrusted::SumMismatch)
        );
    }

    #[test]
    fn a_full_sync_only_where_the_index_or_the_journal_cannot_vouch() {
        use FullSyncWhy::*;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("dir")).unwrap();
        std::fs::write(src.join("dir/f"), b"x").unwrap();
        let mut root = root_at(&src, Duration::ZERO);
        let j = crate::journal::Journal::open(&d.path().join("state")).unwrap();
        let ids = ["r/old".to_string(), "r/new".to_string()];
        let whys = |p: &Plan| p.full.clone();
        // A root new to the journal: every target, and the index is built.
        let p = plan(&j, &root, &ids, true, None, None).unwrap();
        assert_eq!(
            whys(&p),
            [const { Some(Untrusted(super::Untrusted::NoIndex)) }; 2]
        );
        assert!(p.rebuild);
        assert_eq!(rebuild(&j, &root).unwrap(), 2);
        // Built: only a target that never finished a full sync is owed one (checked at start).
        j.request_resync("r/old", b"").unwrap();
        j.resync_done("r/old", b"", &j.resyncs("r/old").unwrap()[0].1)
            .unwrap();
        let p = plan(&j, &root, &ids, true, None, None).unwrap();
        assert_eq!(whys(&p), [None, Some(NeverSynced)]);
        assert!(!p.rebuild);
        assert_eq!(p.walked, 2);
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(whys(&p), [None, None], "an overflow checks no target");
        // The source replaced, or the exclude list changed: the whole root again.
        let p = plan(&j, &root, &ids, true, Some(RootReplaced), None).unwrap();
        assert_eq!(whys(&p), [const { Some(RootReplaced) }; 2]);
        assert!(p.rebuild && p.found.is_empty());
        root.excludes = Excludes::new(&["*.tmp".to_string()]).unwrap();
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(
            whys(&p),
            [const { Some(Untrusted(super::Untrusted::ExcludesChanged)) }; 2]
        );
        rebuild(&j, &root).unwrap();
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(whys(&p), [None, None], "rebuilt with the new list");
        // A failed index write (it may lack a pushed path): not trusted until rebuilt.
        let _ = j.index_write_failed(Some("r"), &crate::journal::IndexError::Failed("x".into()));
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(
            whys(&p),
            [const { Some(Untrusted(super::Untrusted::WriteFailed)) }; 2]
        );
        rebuild(&j, &root).unwrap();
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(whys(&p), [None, None]);
        // What a catch-up found goes into the index: deleted, it is found no more.
        std::fs::remove_dir_all(src.join("dir")).unwrap();
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(
            found(&p.found),
            [
                ("dir".to_string(), Delta::Deleted),
                ("dir/f".to_string(), Delta::Deleted)
            ]
        );
        index_found(&j, "r", &p.found).unwrap();
        let p = plan(&j, &root, &ids, false, None, None).unwrap();
        assert_eq!(found(&p.found), []);
        assert_eq!(p.walked, 0);
    }
}
