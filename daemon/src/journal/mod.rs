//! The journal: every changed path, per target, from the moment it is seen until its target
//! confirmed it. Backed by sled 0.34.
//!
//! Schema (all keys are bytes, all values bincode 1.3 with the varint options):
//! - tree `pending`: `target_id 0x00 path` → [`Entry`]. Written and flushed before a path is
//!   dispatched; removed only by [`Journal::confirm`], which compare-and-swaps against the exact
//!   value read before the push, so a path re-dirtied during its push (new generation) stays.
//! - tree `failed`: same key → [`Entry`] of a path that exhausted its attempts (parked).
//! - tree `held`: same key → [`Entry`] of a deletion held by `delete_guard`; see `held`.
//! - tree `moves`: `target_id 0x00 new_path` → [`Move`]: a directory renamed inside the root,
//!   to be pushed as a move (its files linked from the old path at the target); see `moves`.
//! - tree `meta`: `resync 0x00 target_id 0x00 subpath` → generation: a full rsync of the root
//!   (or of `subpath`) is owed to the target; `root 0x00 root_name` → (device, inode) of the
//!   directory last replicated for that root; `synced 0x00 target_id` → Unix ms (u64 BE) of
//!   the last finished full sync of the target's whole root; `clean_stop` → present while no
//!   process runs after an orderly stop; `index_failed 0x00 root` → an index write failed;
//!   `schema` → version.
//!   `released 0x00 target_id` → generation of the last `release-deletes` (see `held`);
//!   `guard_taken 0x00 target_id` → the deletions taken within `delete_guard`'s window, as
//!   (Unix ms, entries) per second (see `held`);
//!   `seq` → how many times changes were recorded (the index checks it is not ahead).
//! - beside it, `index.redb`: the source's last `lstat` of every path, in walk order (see
//!   `index`).
//!
//! Durability: writes that decide delivery (new changes) are flushed by their writer before any
//! push; every other write is flushed by [`Journal::flush_behind`] within half a second.
//!
//! `target_id` is `root/target` (names are validated: no NUL, no `/` inside a name).
//! Delivery is at least once: a repeat is harmless (rsync is idempotent), a loss is not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bincode::Options;
use serde::{Deserialize, Serialize};
use sled::transaction::{TransactionError, TransactionResult};
use sled::{IVec, Transactional};
use tokio_util::sync::CancellationToken;

mod held;
mod index;
mod moves;
pub use held::HeldList;
pub use index::{IndexEntry, IndexError, IndexScan, IndexSum, IndexTally};
pub use moves::{record_rename, Move, MoveMap, PendingMove, Rename};

const SCHEMA_VERSION: u32 = 1;
/// In `meta`: how many times changes were recorded.
const SEQ: &str = "seq";
/// In `meta`: the last process stopped in order (everything it saw journaled and indexed).
const CLEAN_STOP: &str = "clean_stop";
/// In `meta`, `index_failed 0x00 root`: an index write of that root failed since its index was
/// last built (it may lack paths).
fn index_failed_key(root: &str) -> Vec<u8> {
    let mut k = b"index_failed\0".to_vec();
    k.extend_from_slice(root.as_bytes());
    k
}
/// The index file, in the journal's directory.
const INDEX_FILE: &str = "index.redb";

/// Journal failures are fatal for the affected operation and reported, never ignored.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal in {dir}: {error}; free space or fix permissions there, or set state_dir to a writable directory")]
    Open { dir: String, error: sled::Error },
    #[error("journal in {dir} has schema {found}, this syncd understands {SCHEMA_VERSION}; move it aside to start afresh (a full resync follows)")]
    Schema { dir: String, found: u32 },
    #[error("journal I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("journal entry is corrupt: {0}")]
    Corrupt(#[from] bincode::Error),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

/// The state directory cannot hold the journal.
#[derive(Debug, thiserror::Error)]
#[error("state directory {} is not usable ({what}: {error}); the journal lives there: free space, fix its permissions, or set state_dir to a writable directory", .dir.display())]
pub struct StateDirError {
    dir: PathBuf,
    what: &'static str,
    error: std::io::Error,
}

/// Make sure `dir` can hold the journal before anything starts: create it, then write and sync
/// a probe file, so a read-only, full or forbidden state directory is named at once instead of
/// surfacing as a storage error from deep inside the journal.
pub fn check_state_dir(dir: &Path) -> Result<(), StateDirError> {
    let fail = |what: &'static str| {
        move |error| StateDirError {
            dir: dir.to_path_buf(),
            what,
            error,
        }
    };
    std::fs::create_dir_all(dir).map_err(fail("cannot create it"))?;
    std::fs::read_dir(dir).map_err(fail("cannot read it"))?;
    let probe = dir.join(".syncd-write-test");
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        // About one journal segment's worth of headroom.
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    res.map_err(fail("cannot write to it"))
}

/// One pending or parked path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Bumped every time the path is seen changing.
    pub generation: u64,
    /// Unix milliseconds of the first unconfirmed change.
    pub first_seen_ms: u64,
    pub attempts: u32,
    /// Unix milliseconds before which the path is not retried.
    pub next_attempt_ms: u64,
    pub last_error: Option<String>,
}

/// A pending path as read for a push: the raw value is what [`Journal::confirm`] compares.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: Vec<u8>,
    pub entry: Entry,
    raw: IVec,
}

/// Proof of which request for a full resync a run answers (see [`Journal::resync_done`]): an
/// opaque token, so nothing of sled leaves the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncToken(IVec);

/// A parked path and its entry.
pub type ParkedPath = (Vec<u8>, Entry);

/// The entries of `target` in `tree` that `keep`: at most `limit` of them, and how many.
fn list_where(
    tree: &sled::Tree,
    target: &str,
    limit: usize,
    keep: impl Fn(&Entry) -> bool,
) -> Result<(Vec<ParkedPath>, u64), JournalError> {
    let pfx = prefix(target);
    let mut out = Vec::new();
    let mut total = 0;
    for kv in tree.scan_prefix(&pfx) {
        let (k, v) = kv?;
        let e: Entry = opts().deserialize(&v)?;
        if !keep(&e) {
            continue;
        }
        total += 1;
        if out.len() < limit {
            out.push((k[pfx.len()..].to_vec(), e));
        }
    }
    Ok((out, total))
}

/// Entries moved from one tree to another in one transaction each.
const MOVE_CHUNK: usize = 256;

/// Move `target`'s entries from `from` to `to`, `change`d on the way, in transactions of
/// [`MOVE_CHUNK`]: a crash leaves each entry in one tree or the other, never in both (a parked
/// or held copy of a path already delivered). An entry that changed since it was read is left
/// as it is now. Returns how many moved.
fn move_entries(
    from: &sled::Tree,
    to: &sled::Tree,
    target: &str,
    change: impl Fn(&mut Entry),
) -> Result<u64, JournalError> {
    let mut n = 0;
    let mut chunk = Vec::with_capacity(MOVE_CHUNK);
    for kv in from.scan_prefix(prefix(target)) {
        let (k, v) = kv?;
        let mut e: Entry = opts().deserialize(&v)?;
        change(&mut e);
        chunk.push((k, v, opts().serialize(&e)?));
        if chunk.len() == MOVE_CHUNK {
            n += move_chunk(from, to, &chunk)?;
            chunk.clear();
        }
    }
    Ok(n + move_chunk(from, to, &chunk)?)
}

/// One transaction of [`move_entries`]: (key, value read, value to write).
fn move_chunk(
    from: &sled::Tree,
    to: &sled::Tree,
    chunk: &[(IVec, IVec, Vec<u8>)],
) -> Result<u64, JournalError> {
    if chunk.is_empty() {
        return Ok(0);
    }
    let res: TransactionResult<u64, ()> = (from, to).transaction(|(f, t)| {
        let mut n = 0;
        for (k, old, new) in chunk {
            if f.get(k)?.as_ref() != Some(old) {
                continue;
            }
            f.remove(k)?;
            t.insert(k, new.as_slice())?;
            n += 1;
        }
        Ok(n)
    });
    match res {
        Ok(n) => Ok(n),
        Err(TransactionError::Storage(s)) => Err(JournalError::Io(s)),
        Err(TransactionError::Abort(())) => Ok(0),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(1 << 20)
}

fn key(target: &str, path: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(target.len() + 1 + path.len());
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(path);
    k
}

fn prefix(target: &str) -> Vec<u8> {
    key(target, b"")
}

fn resync_key(target: &str, sub: &[u8]) -> Vec<u8> {
    let mut k = b"resync\0".to_vec();
    k.extend_from_slice(&key(target, sub));
    k
}

fn synced_key(target: &str) -> Vec<u8> {
    let mut k = b"synced\0".to_vec();
    k.extend_from_slice(target.as_bytes());
    k
}

fn root_key(root: &str) -> Vec<u8> {
    let mut k = b"root\0".to_vec();
    k.extend_from_slice(root.as_bytes());
    k
}

/// The open database and its trees; replaced as a whole when the journal is reopened.
#[derive(Clone)]
struct Trees {
    /// Which opening of the database this is (see [`Journal::check`]).
    epoch: u64,
    db: sled::Db,
    pending: sled::Tree,
    failed: sled::Tree,
    moves: sled::Tree,
    held: sled::Tree,
    meta: sled::Tree,
}

/// Handle to the journal; cheap to clone, shared by every task.
///
/// sled's I/O errors are sticky: after one (a full disk, say), every later write to that
/// database fails even once the cause is gone. So an I/O error drops the database handle, and
/// the next operation opens it again from disk (what was flushed is there; the coalescer owes
/// the affected roots a full resync for what was not).
#[derive(Clone)]
pub struct Journal {
    dir: PathBuf,
    trees: Arc<RwLock<Option<Trees>>>,
    /// Openings so far, to tell a fresh database from the one that failed.
    epochs: Arc<std::sync::atomic::AtomicU64>,
    /// Notified by every write; [`Journal::flush_behind`] flushes what nobody flushed.
    written: Arc<tokio::sync::Notify>,
    index: Arc<index::Index>,
}

impl Trees {
    fn open(dir: &Path) -> Result<Trees, JournalError> {
        let d = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            // No periodic flusher thread (it wakes twice a second forever): writes that are not
            // flushed explicitly are flushed by `Journal::flush_behind`, which sleeps while
            // nothing is written.
            .flush_every_ms(None)
            .open()
            .map_err(|error| JournalError::Open {
                dir: d.clone(),
                error,
            })?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            Some(v) => {
                let found = opts().deserialize::<u32>(&v)?;
                if found != SCHEMA_VERSION {
                    return Err(JournalError::Schema { dir: d, found });
                }
            }
            None => {
                meta.insert("schema", opts().serialize(&SCHEMA_VERSION)?)?;
            }
        }
        Ok(Trees {
            epoch: 0,
            pending: db.open_tree("pending")?,
            failed: db.open_tree("failed")?,
            moves: db.open_tree("moves")?,
            held: db.open_tree("held")?,
            meta,
            db,
        })
    }

    fn record(&self, targets: &[String], paths: &[Vec<u8>]) -> Result<(), JournalError> {
        if paths.is_empty() || targets.is_empty() {
            return Ok(());
        }
        let generation = self.db.generate_id()?;
        let now = now_ms();
        // Nothing parked or held (the usual case): no removal to try per path.
        let any_parked = !self.failed.is_empty();
        let any_held = !self.held.is_empty();
        for t in targets {
            for p in paths {
                let k = key(t, p);
                let mut e = Entry {
                    generation,
                    first_seen_ms: now,
                    attempts: 0,
                    next_attempt_ms: 0,
                    last_error: None,
                };
                // One lookup per path: the insert hands back the entry it replaced, and a path
                // still pending keeps the time it was first seen (written again, rarely).
                let old = self.pending.insert(k.as_slice(), opts().serialize(&e)?)?;
                if let Some(first) = old
                    .and_then(|old| opts().deserialize::<Entry>(&old).ok())
                    .map(|old| old.first_seen_ms)
                    .filter(|&first| first < now)
                {
                    e.first_seen_ms = first;
                    self.pending.insert(k.as_slice(), opts().serialize(&e)?)?;
                }
                if any_parked {
                    self.failed.remove(k.as_slice())?;
                }
                if any_held {
                    self.held.remove(k)?;
                }
            }
        }
        // After the entries, in the same log: a journal whose tail was lost has a lower seq.
        let seq = self.seq()? + 1;
        self.meta.insert(SEQ, &seq.to_be_bytes())?;
        Ok(())
    }

    /// Mark the index of `root` failed (or no longer); `None`: of every root the journal knows.
    fn set_index_failed(&self, root: Option<&str>, failed: bool) -> Result<(), JournalError> {
        let roots = match root {
            Some(r) => vec![r.as_bytes().to_vec()],
            None => self
                .meta
                .scan_prefix(b"root\0")
                .keys()
                .map(|k| k.map(|k| k[5..].to_vec()))
                .collect::<Result<_, _>>()?,
        };
        for r in roots {
            let k = index_failed_key(&String::from_utf8_lossy(&r));
            match failed {
                true => self.meta.insert(k, &[1u8])?,
                false => self.meta.remove(k)?,
            };
        }
        Ok(())
    }

    fn take_clean_stop(&self) -> Result<bool, JournalError> {
        Ok(self.meta.remove(CLEAN_STOP)?.is_some())
    }

    fn index_failed(&self, root: &str) -> Result<bool, JournalError> {
        Ok(self.meta.get(index_failed_key(root))?.is_some())
    }

    fn seq(&self) -> Result<u64, JournalError> {
        Ok(match self.meta.get(SEQ)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    fn due(
        &self,
        target: &str,
        now_ms: u64,
        limit: usize,
        skip: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(Vec<Item>, Option<u64>), JournalError> {
        let pfx = prefix(target);
        let mut out = Vec::new();
        let mut next: Option<u64> = None;
        for kv in self.pending.scan_prefix(&pfx) {
            let (k, v) = kv?;
            let path = &k[pfx.len()..];
            let entry: Entry = opts().deserialize(&v)?;
            if entry.next_attempt_ms > now_ms {
                next =
                    Some(next.map_or(entry.next_attempt_ms, |n: u64| n.min(entry.next_attempt_ms)));
                continue;
            }
            if out.len() >= limit {
                break;
            }
            if skip(path) {
                continue;
            }
            out.push(Item {
                path: path.to_vec(),
                entry,
                raw: v,
            });
        }
        Ok((out, next))
    }

    fn confirm(&self, target: &str, items: &[Item]) -> Result<u64, JournalError> {
        let mut n = 0;
        for it in items {
            if self
                .pending
                .compare_and_swap(key(target, &it.path), Some(&it.raw), None as Option<&[u8]>)?
                .is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn fail(
        &self,
        target: &str,
        item: &Item,
        error: &str,
        next_attempt_ms: u64,
        max_attempts: u32,
    ) -> Result<bool, JournalError> {
        let k = key(target, &item.path);
        let mut e = item.entry.clone();
        e.attempts += 1;
        e.last_error = Some(error.to_string());
        e.next_attempt_ms = next_attempt_ms;
        let new = opts().serialize(&e)?;
        if e.attempts >= max_attempts {
            let res: TransactionResult<bool, ()> =
                (&self.pending, &self.failed).transaction(|(p, f)| {
                    if p.get(&k)?.as_ref() != Some(&item.raw) {
                        return Ok(false);
                    }
                    p.remove(k.as_slice())?;
                    f.insert(k.as_slice(), new.as_slice())?;
                    Ok(true)
                });
            return match res {
                Ok(parked) => Ok(parked),
                Err(TransactionError::Storage(s)) => Err(JournalError::Io(s)),
                Err(TransactionError::Abort(())) => Ok(false),
            };
        }
        let _ = self
            .pending
            .compare_and_swap(k, Some(&item.raw), Some(new))?;
        Ok(false)
    }

    fn retry_failed(&self, target: &str) -> Result<u64, JournalError> {
        move_entries(&self.failed, &self.pending, target, |e| {
            e.attempts = 0;
            e.next_attempt_ms = 0;
            // Keep last_error visible until the next attempt replaces or clears it.
        })
    }

    fn list_failed(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<(Vec<ParkedPath>, u64), JournalError> {
        list_where(&self.failed, target, limit, |_| true)
    }

    fn list_retrying(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<(Vec<ParkedPath>, u64), JournalError> {
        list_where(&self.pending, target, limit, |e| e.attempts > 0)
    }

    fn pending_stats(&self, target: &str) -> Result<(u64, Option<u64>), JournalError> {
        let mut n = 0;
        let mut oldest: Option<u64> = None;
        for kv in self.pending.scan_prefix(prefix(target)) {
            let (_, v) = kv?;
            n += 1;
            let e: Entry = opts().deserialize(&v)?;
            oldest = Some(oldest.map_or(e.first_seen_ms, |o: u64| o.min(e.first_seen_ms)));
        }
        Ok((n, oldest))
    }

    fn has_pending(&self, target: &str) -> Result<bool, JournalError> {
        Ok(self
            .pending
            .scan_prefix(prefix(target))
            .next()
            .transpose()?
            .is_some())
    }

    fn failed_count(&self, target: &str) -> Result<u64, JournalError> {
        let mut n = 0;
        for kv in self.failed.scan_prefix(prefix(target)) {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    fn request_resync(&self, target: &str, sub: &[u8]) -> Result<(), JournalError> {
        let generation = self.db.generate_id()?;
        self.meta
            .insert(resync_key(target, sub), opts().serialize(&generation)?)?;
        Ok(())
    }

    fn resyncs(&self, target: &str) -> Result<Vec<(Vec<u8>, ResyncToken)>, JournalError> {
        let pfx = resync_key(target, b"");
        let mut out = Vec::new();
        for kv in self.meta.scan_prefix(&pfx) {
            let (k, v) = kv?;
            out.push((k[pfx.len()..].to_vec(), ResyncToken(v)));
        }
        Ok(out)
    }

    fn root_identity(&self, root: &str) -> Result<Option<(u64, u64)>, JournalError> {
        match self.meta.get(root_key(root))? {
            Some(v) => Ok(Some(opts().deserialize(&v)?)),
            None => Ok(None),
        }
    }

    fn set_root_identity(&self, root: &str, id: (u64, u64)) -> Result<(), JournalError> {
        self.meta.insert(root_key(root), opts().serialize(&id)?)?;
        Ok(())
    }

    fn resync_done(
        &self,
        target: &str,
        sub: &[u8],
        token: &ResyncToken,
    ) -> Result<(), JournalError> {
        let _ = self.meta.compare_and_swap(
            resync_key(target, sub),
            Some(&token.0),
            None as Option<&[u8]>,
        )?;
        if sub.is_empty() {
            self.meta
                .insert(synced_key(target), &now_ms().to_be_bytes())?;
        }
        Ok(())
    }

    fn forget_synced_except(&self, targets: &[String]) -> Result<(), JournalError> {
        let pfx = b"synced\0";
        for kv in self.meta.scan_prefix(pfx) {
            let (k, _) = kv?;
            if !targets.iter().any(|t| t.as_bytes() == &k[pfx.len()..]) {
                self.meta.remove(k)?;
            }
        }
        Ok(())
    }

    fn full_synced_at(&self, target: &str) -> Result<Option<u64>, JournalError> {
        Ok(self
            .meta
            .get(synced_key(target))?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
    }
}

impl Journal {
    /// Open (or create) the journal under `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let trees = Trees::open(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            trees: Arc::new(RwLock::new(Some(trees))),
            epochs: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            written: Arc::default(),
            index: Arc::new(index::Index::open(dir.join(INDEX_FILE))),
        })
    }

    /// How many times changes were recorded (see [`Journal::index_ahead_of_journal`]).
    fn seq(&self) -> Result<u64, JournalError> {
        self.with(|t| t.seq())
    }

    /// The current trees, reopening the database if an I/O error closed it.
    fn trees(&self) -> Result<Trees, JournalError> {
        if let Some(t) = self
            .trees
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(t.clone());
        }
        let mut slot = self.trees.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let mut t = Trees::open(&self.dir)?;
        t.epoch = self
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::info!(dir = %self.dir.display(), "journal reopened after an I/O error");
        *slot = Some(t.clone());
        Ok(t)
    }

    /// After an I/O error, close the database so the next operation reopens it.
    /// After an I/O error of the opening `epoch`, close it so the next operation reopens the
    /// database. An error from an older opening (a task still holding it) must not close the
    /// fresh one.
    fn check<R>(&self, epoch: u64, res: Result<R, JournalError>) -> Result<R, JournalError> {
        if let Err(JournalError::Io(sled::Error::Io(_))) = &res {
            let mut slot = self.trees.write().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|t| t.epoch == epoch) {
                slot.take();
            }
        }
        res
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&Trees) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        let t = self.trees()?;
        let res = f(&t);
        self.check(t.epoch, res)
    }

    /// Like [`Journal::with`] for a write: it is flushed by `flush_behind` at the latest.
    fn write<R>(
        &self,
        f: impl FnOnce(&Trees) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        let res = self.with(f);
        self.written.notify_one();
        res
    }

    /// Flush, `after` a write, whatever its writer did not flush itself (a retry schedule, a
    /// finished resync, a confirmation whose batch ended early), until `shutdown`. Sleeps while
    /// nothing is written: an idle daemon does not wake up for the journal.
    pub async fn flush_behind(self, after: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.written.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "journal flush failed");
            }
        }
    }

    /// Bytes the journal takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        self.with(|t| Ok(t.db.size_on_disk()?))
    }

    /// Make everything written so far survive a crash of the process: the index first, then
    /// the journal. In that order a confirmation (a pushed path leaving the journal) is never
    /// durable before the index entry of that path (see `index`'s invariant).
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.flush_on_pool(true).await
    }

    /// Make the changes recorded so far survive a crash of the process: the journal alone.
    /// New pending entries need no index behind them (only a confirmation does, see
    /// [`Journal::flush`]), so the coalescer's flush, one per commit, skips the index's.
    pub async fn flush_changes(&self) -> Result<(), JournalError> {
        self.flush_on_pool(false).await
    }

    /// On tokio's blocking pool: sled's own flush_async hands every flush to its thread pool,
    /// which costs several thread wake-ups per flush under a burst.
    async fn flush_on_pool(&self, index_first: bool) -> Result<(), JournalError> {
        let t = self.trees()?;
        let db = t.db.clone();
        let this = self.clone();
        let res = match tokio::task::spawn_blocking(move || {
            if index_first {
                if let Err(e) = this.index.persist() {
                    this.index_write_failed(None, &e);
                }
            }
            db.flush()
        })
        .await
        {
            Ok(r) => r.map(|_| ()).map_err(JournalError::from),
            Err(e) => Err(JournalError::Io(sled::Error::ReportableBug(format!(
                "journal flush task failed: {e}"
            )))),
        };
        self.check(t.epoch, res)
    }

    /// Record that `paths` changed, for every target in `targets`. Resets attempts (the path
    /// changed, so it deserves fresh tries), un-parks it and ends its hold.
    pub fn record(&self, targets: &[String], paths: &[Vec<u8>]) -> Result<(), JournalError> {
        self.write(|t| t.record(targets, paths))
    }

    /// Up to `limit` pending paths of `target` due at `now_ms`, skipping those `skip` holds back
    /// (it is asked only about due paths, in key order, and every path it lets through is
    /// returned). Also returns the earliest `next_attempt_ms` among the paths not yet due.
    pub fn due(
        &self,
        target: &str,
        now_ms: u64,
        limit: usize,
        skip: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(Vec<Item>, Option<u64>), JournalError> {
        self.with(|t| t.due(target, now_ms, limit, skip))
    }

    /// The target confirmed these paths: remove each one whose entry did not change meanwhile.
    /// Returns how many were removed.
    pub fn confirm(&self, target: &str, items: &[Item]) -> Result<u64, JournalError> {
        self.write(|t| t.confirm(target, items))
    }

    /// A push of `item` failed: count the attempt and schedule the next one, or park the path in
    /// `failed` once `max_attempts` is reached. Returns true if parked. A path that changed
    /// meanwhile is left alone (its new generation gets fresh attempts).
    pub fn fail(
        &self,
        target: &str,
        item: &Item,
        error: &str,
        next_attempt_ms: u64,
        max_attempts: u32,
    ) -> Result<bool, JournalError> {
        self.write(|t| t.fail(target, item, error, next_attempt_ms, max_attempts))
    }

    /// Move every parked path of `target` back to pending with fresh attempts; returns how many.
    pub fn retry_failed(&self, target: &str) -> Result<u64, JournalError> {
        self.write(|t| t.retry_failed(target))
    }

    /// Parked paths of `target`, at most `limit`, and the total count.
    pub fn list_failed(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<(Vec<ParkedPath>, u64), JournalError> {
        self.with(|t| t.list_failed(target, limit))
    }

    /// Pending paths of `target` that failed and wait for their next attempt, at most `limit`,
    /// and how many there are (a scan of the target's pending paths).
    pub fn list_retrying(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<(Vec<ParkedPath>, u64), JournalError> {
        self.with(|t| t.list_retrying(target, limit))
    }

    /// Pending count and the oldest `first_seen_ms` of `target`.
    pub fn pending_stats(&self, target: &str) -> Result<(u64, Option<u64>), JournalError> {
        self.with(|t| t.pending_stats(target))
    }

    /// Whether `target` has any pending path (cheap: looks at one key).
    pub fn has_pending(&self, target: &str) -> Result<bool, JournalError> {
        self.with(|t| t.has_pending(target))
    }

    /// Number of parked paths of `target`.
    pub fn failed_count(&self, target: &str) -> Result<u64, JournalError> {
        self.with(|t| t.failed_count(target))
    }

    /// (device, inode) of the directory last replicated for root `root`.
    pub fn root_identity(&self, root: &str) -> Result<Option<(u64, u64)>, JournalError> {
        self.with(|t| t.root_identity(root))
    }

    /// Remember the directory now replicated for root `root`.
    pub fn set_root_identity(&self, root: &str, id: (u64, u64)) -> Result<(), JournalError> {
        self.write(|t| t.set_root_identity(root, id))
    }

    /// Owe `target` a full rsync of its root (`sub` empty) or of the subdirectory `sub`.
    pub fn request_resync(&self, target: &str, sub: &[u8]) -> Result<(), JournalError> {
        self.write(|t| t.request_resync(target, sub))
    }

    /// Full resyncs owed to `target`: (subpath, token for [`Journal::resync_done`]).
    pub fn resyncs(&self, target: &str) -> Result<Vec<(Vec<u8>, ResyncToken)>, JournalError> {
        self.with(|t| t.resyncs(target))
    }

    /// A full rsync finished: clear the request unless it was renewed meanwhile (an overflow
    /// during the run asks again, and must get another run).
    pub fn resync_done(
        &self,
        target: &str,
        sub: &[u8],
        token: &ResyncToken,
    ) -> Result<(), JournalError> {
        self.write(|t| t.resync_done(target, sub, token))
    }

    /// At start: whether the last process using the journal stopped in order; forgotten at
    /// once (made durable by the caller's flush), so a crash of this one is told next time.
    pub fn take_clean_stop(&self) -> Result<bool, JournalError> {
        self.write(|t| t.take_clean_stop())
    }

    /// At an orderly stop, after everything is journaled and indexed (flush afterwards).
    pub fn mark_clean_stop(&self) -> Result<(), JournalError> {
        self.write(|t| Ok(t.meta.insert(CLEAN_STOP, &[1u8]).map(|_| ())?))
    }

    /// Forget the finished full syncs of every target not in `targets` (the configured ones): a
    /// target removed from the configuration misses changes, and is owed a full sync if it
    /// comes back.
    pub fn forget_synced_except(&self, targets: &[String]) -> Result<(), JournalError> {
        self.write(|t| t.forget_synced_except(targets))
    }

    /// When `target` last finished a full sync of its whole root (Unix ms); None if it never
    /// did (a target new to the journal, or its first full sync never finished).
    pub fn full_synced_at(&self, target: &str) -> Result<Option<u64>, JournalError> {
        self.with(|t| t.full_synced_at(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn open() -> (tempfile::TempDir, Journal) {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("j")).unwrap();
        (d, j)
    }

    const T: &str = "root/t1";

    #[test]
    fn confirm_removes_only_unchanged_entries() {
        let (_d, j) = open();
        j.record(&[T.into()], &[b"a".to_vec(), b"b".to_vec()])
            .unwrap();
        let (items, _) = j.due(T, now_ms(), 100, &mut |_| false).unwrap();
        assert_eq!(items.len(), 2);
        // `b` changes again while its push is in flight.
        j.record(&[T.into()], &[b"b".to_vec()]).unwrap();
        assert_eq!(j.confirm(T, &items).unwrap(), 1);
        let (left, _) = j.due(T, now_ms(), 100, &mut |_| false).unwrap();
        assert_eq!(
            left.iter().map(|i| i.path.clone()).collect::<Vec<_>>(),
            vec![b"b".to_vec()]
        );
    }

    #[test]
    fn a_path_recorded_again_while_pending_keeps_its_first_seen_time_and_a_new_generation() {
        let (_d, j) = open();
        let first = 1_000;
        let old = Entry {
            generation: 999_999,
            first_seen_ms: first,
            attempts: 4,
            next_attempt_ms: u64::MAX,
            last_error: Some("refused".into()),
        };
        let t = j.trees().unwrap();
        t.pending
            .insert(key(T, b"p"), opts().serialize(&old).unwrap())
            .unwrap();
        j.record(&[T.into()], &[b"p".to_vec(), b"q".to_vec()])
            .unwrap();
        let (items, _) = j.due(T, now_ms(), 10, &mut |_| false).unwrap();
        let p = &items.iter().find(|i| i.path == b"p").unwrap().entry;
        assert_eq!(p.first_seen_ms, first, "the oldest change's age is kept");
        assert_eq!((p.attempts, p.next_attempt_ms), (0, 0), "fresh tries");
        assert_ne!(
            p.generation, old.generation,
            "a push in flight is not confirmed"
        );
        let q = &items.iter().find(|i| i.path == b"q").unwrap().entry;
        assert!(q.first_seen_ms > first);
        assert_eq!(j.pending_stats(T).unwrap(), (2, Some(first)));
    }

    #[test]
    fn failing_path_is_parked_after_max_attempts_and_can_be_retried() {
        let (_d, j) = open();
        j.record(&[T.into()], &[b"x".to_vec()]).unwrap();
        for attempt in 1..=3 {
            let (items, _) = j.due(T, u64::MAX, 10, &mut |_| false).unwrap();
            assert_eq!(items.len(), 1, "attempt {attempt}");
            let parked = j.fail(T, &items[0], "denied", 0, 3).unwrap();
            assert_eq!(parked, attempt == 3);
        }
        assert_eq!(j.pending_stats(T).unwrap().0, 0);
        let (failed, total) = j.list_failed(T, 10).unwrap();
        assert_eq!(total, 1);
        assert_eq!(failed[0].1.last_error.as_deref(), Some("denied"));
        assert_eq!(j.retry_failed(T).unwrap(), 1);
        assert_eq!(j.pending_stats(T).unwrap().0, 1);
        assert_eq!(j.failed_count(T).unwrap(), 0);
    }

    #[test]
    fn backoff_hides_path_until_due() {
        let (_d, j) = open();
        j.record(&[T.into()], &[b"x".to_vec()]).unwrap();
        let (items, _) = j.due(T, now_ms(), 10, &mut |_| false).unwrap();
        j.fail(T, &items[0], "e", 5_000, 10).unwrap();
        let (items, next) = j.due(T, 4_999, 10, &mut |_| false).unwrap();
        assert!(items.is_empty());
        assert_eq!(next, Some(5_000));
    }

    #[test]
    fn targets_are_separate_and_resync_token_is_checked() {
        let (_d, j) = open();
        j.record(&["r/a".into()], &[b"p".to_vec()]).unwrap();
        assert_eq!(j.pending_stats("r/b").unwrap().0, 0);
        j.request_resync("r/a", b"").unwrap();
        let rs = j.resyncs("r/a").unwrap();
        j.request_resync("r/a", b"").unwrap();
        assert_eq!(j.full_synced_at("r/a").unwrap(), None, "not finished yet");
        j.resync_done("r/a", b"", &rs[0].1).unwrap();
        assert_eq!(
            j.resyncs("r/a").unwrap().len(),
            1,
            "renewed request survives"
        );
        let rs = j.resyncs("r/a").unwrap();
        j.resync_done("r/a", b"", &rs[0].1).unwrap();
        assert!(j.resyncs("r/a").unwrap().is_empty());
        assert!(j.full_synced_at("r/a").unwrap().is_some());
        assert_eq!(j.full_synced_at("r/b").unwrap(), None);
        // Configured without it, then again: it missed changes in between.
        j.forget_synced_except(&["r/a".into()]).unwrap();
        assert!(j.full_synced_at("r/a").unwrap().is_some());
        j.forget_synced_except(&["r/b".into()]).unwrap();
        assert_eq!(j.full_synced_at("r/a").unwrap(), None);
    }

    #[test]
    fn entries_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(&d.path().join("j")).unwrap();
            j.record(&[T.into()], &[b"keep\xff".to_vec()]).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(j.flush())
                .unwrap();
        }
        let j = Journal::open(&d.path().join("j")).unwrap();
        let (items, _) = j.due(T, now_ms(), 10, &mut |_| false).unwrap();
        assert_eq!(items[0].path, b"keep\xff");
    }
}
