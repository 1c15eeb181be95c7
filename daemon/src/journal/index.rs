//! The index of the source: for each root, every path's `lstat` as it was when its change was
//! journaled, so a restart or an overflow can tell what changed by one local walk instead of a
//! full rsync to every target.
//!
//! It lives in its own redb file, `index.redb` in the journal's directory, not in sled: sled
//! held 1,000,000 entries in 295-348 MB of memory and took 10 s to write them; redb takes 15 MB
//! and 2.8 s (`examples/index_mem`).
//!
//! Keys are `root_name 0x00 path` with each `/` of the path written as `0x00`: since no name
//! holds a NUL, key order is the order of a depth-first walk whose names are sorted byte-wise
//! (a directory right before its entries), and the catch-up reads both side by side.
//!
//! Invariant: the index never records a state whose change is not journaled for every target.
//! Its writer records the change in the journal and flushes it first, then writes the index:
//! a crash leaves either the old state, or the new one and what it owes. Index commits are
//! made durable at most a second late; one lost to a crash leaves the index behind, which costs
//! a push too many, never a miss.
//!
//! Integrity: sled drops the tail of a corrupted log without a word, and a damaged file can
//! lose entries. Every write keeps, in the same redb transaction, a count and an
//! order-independent hash (the wrapping sum of each entry's xxh3) per root, and the journal's
//! write sequence number it followed; the catch-up walk, which reads every entry anyway,
//! recomputes both sums and distrusts the index on a mismatch, or when the journal is behind
//! the sequence number the index saw (its tail was lost, pending entries with it).
use serde::{Deserialize, Serialize};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

#[cfg(test)]
use super::INDEX_FILE as INDEX_FILE_NAME;
use super::{opts, Journal, JournalError};
use crate::fs::Stat;
use bincode::Options;

/// What the index holds for one path.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub stat: Stat,
}

/// Per root: how many entries the index holds and their hash, and when it was last written.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexSum {
    pub count: u64,
    pub hash: u64,
    /// Wall clock of the last write, nanoseconds since the epoch.
    pub written_ns: i64,
    /// Set once a walk of the whole root was indexed: the hash of the exclude list it walked
    /// with (see [`Excludes::digest`](crate::config::Excludes::digest)). Until then the index
    /// holds only the paths changed since, and vouches for nothing.
    pub built: Option<u64>,
    /// Set at an orderly stop (with `written_ns` then): every change before `written_ns` is
    /// recorded, none waits in memory. Cleared by the next write.
    pub settled: bool,
}

/// Count and hash over entries as they are read, to compare with the [`IndexSum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexTally {
    pub count: u64,
    pub hash: u64,
}

impl IndexTally {
    /// Count one entry, by its key and stored value.
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count += 1;
        self.hash = self.hash.wrapping_add(entry_hash(key, value));
    }

    /// Whether what was read is what the index says it holds.
    pub fn matches(&self, sum: &IndexSum) -> bool {
        self.count == sum.count && self.hash == sum.hash
    }
}

fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    h.digest()
}

/// `root 0x00 path` with every `/` as `0x00`.
fn index_key(root: &str, path: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(root.len() + 1 + path.len());
    k.extend_from_slice(root.as_bytes());
    k.push(0);
    k.extend(path.iter().map(|&b| if b == b'/' { 0 } else { b }));
    k
}

/// The path of an index key below `prefix` (`root 0x00`).
fn key_path(prefix_len: usize, key: &[u8]) -> Vec<u8> {
    key[prefix_len..]
        .iter()
        .map(|&b| if b == 0 { b'/' } else { b })
        .collect()
}

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const SUMS: TableDefinition<&str, &[u8]> = TableDefinition::new("sums");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// In META: the journal's write sequence number when the index was last written.
const JOURNAL_SEQ: &str = "journal_seq";
/// redb's page cache; the index is read in order, so a small one does.
const CACHE_BYTES: usize = 8 << 20;
/// How late an index commit may become durable.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
type EntriesTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
#[cfg(test)]
type SumsTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// Failures of the index file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{0}")]
    Db(#[from] redb::Error),
    #[error("index entry is corrupt: {0}")]
    Corrupt(#[from] bincode::Error),
    #[error("{0}")]
    Failed(String),
}

fn db_err(e: impl Into<redb::Error>) -> IndexError {
    IndexError::Db(e.into())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The index file; one per journal, shared by its clones.
pub(super) struct Index {
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
    /// When a commit was last made durable, and whether one since was not.
    durable: Mutex<(Instant, bool)>,
}

impl Index {
    /// Open (or create) the index at `path`. A file redb cannot read is moved aside and a new,
    /// empty index takes its place: nothing in it is trusted, so each root is fully synced.
    pub(super) fn open(path: PathBuf) -> Index {
        let ix = Index {
            path,
            db: Mutex::new(None),
            durable: Mutex::new((Instant::now(), false)),
        };
        if let Err(e) = ix.db() {
            tracing::warn!(path = %ix.path.display(), error = %e, "cannot open the index; it is rebuilt by a full sync");
        }
        ix
    }

    /// The open database, opening it if need be (after an I/O error it is reopened).
    fn db(&self) -> Result<Arc<Database>, IndexError> {
        let mut slot = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let open = || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
        };
        let db = match open() {
            Ok(db) => db,
            // redb tells a file that is not a database by InvalidData; other I/O errors are
            // the disk's (the file may be fine).
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(db_err(redb::StorageError::Io(e)))
            }
            // Held by another process: not ours to move aside.
            Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => return Err(db_err(e)),
            Err(e) => {
                let aside = self.path.with_extension("redb.damaged");
                tracing::warn!(path = %self.path.display(), error = %e, aside = %aside.display(), "the index is unreadable; moved aside, a new one is built");
                std::fs::rename(&self.path, &aside)
                    .map_err(|e| db_err(redb::StorageError::Io(e)))?;
                open().map_err(db_err)?
            }
        };
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Close the database after an I/O error, so the next use reopens it (redb refuses every
    /// write after one).
    fn check<R>(&self, res: Result<R, IndexError>) -> Result<R, IndexError> {
        if let Err(IndexError::Db(redb::Error::Io(_) | redb::Error::PreviousIo)) = &res {
            self.db.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        res
    }

    fn write_txn(&self, db: &Database) -> Result<redb::WriteTransaction, IndexError> {
        let mut txn = db.begin_write().map_err(db_err)?;
        let mut d = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        if d.0.elapsed() >= DURABLE_EVERY {
            *d = (Instant::now(), false);
        } else {
            txn.set_durability(Durability::None).map_err(db_err)?;
            d.1 = true;
        }
        Ok(txn)
    }

    /// Make every commit so far durable (nothing to do if they all are).
    pub(super) fn persist(&self) -> Result<(), IndexError> {
        let owed = std::mem::replace(
            &mut *self.durable.lock().unwrap_or_else(|e| e.into_inner()),
            (Instant::now(), false),
        )
        .1;
        if !owed {
            return Ok(());
        }
        self.check((|| {
            let db = self.db()?;
            db.begin_write().map_err(db_err)?.commit().map_err(db_err)
        })())
    }

    pub(super) fn sum(&self, root: &str) -> Result<Option<IndexSum>, IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = db.begin_read().map_err(db_err)?;
            let sums = match txn.open_table(SUMS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(db_err(e)),
            };
            let v = sums.get(root).map_err(db_err)?;
            Ok(match v {
                Some(v) => Some(opts().deserialize(v.value())?),
                None => None,
            })
        })())
    }

    /// The journal's sequence number as of the last index write (0 if never written).
    pub(super) fn journal_seq(&self) -> Result<u64, IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = db.begin_read().map_err(db_err)?;
            let meta = match txn.open_table(META) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(db_err(e)),
            };
            let v = meta.get(JOURNAL_SEQ).map_err(db_err)?;
            Ok(v.map(|v| v.value()).unwrap_or(0))
        })())
    }

    /// Set (Some) or remove (None, with everything below it) each path, the sum with them and
    /// `journal_seq`, in one transaction.
    pub(super) fn update(
        &self,
        root: &str,
        changes: &[(Vec<u8>, Option<Stat>)],
        journal_seq: u64,
    ) -> Result<(), IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = self.write_txn(&db)?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
                let mut sums = txn.open_table(SUMS).map_err(db_err)?;
                let mut sum: IndexSum = match sums.get(root).map_err(db_err)? {
                    Some(v) => opts().deserialize(v.value())?,
                    None => IndexSum::default(),
                };
                for (path, stat) in changes {
                    apply(&mut entries, &mut sum, &index_key(root, path), stat)?;
                }
                sum.written_ns = now_ns();
                sum.settled = false;
                sums.insert(root, opts().serialize(&sum)?.as_slice())
                    .map_err(db_err)?;
                let mut meta = txn.open_table(META).map_err(db_err)?;
                meta.insert(JOURNAL_SEQ, journal_seq).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })())
    }

    /// Forget the root's index (and its sum): the next catch-up cannot trust what is not there.
    pub(super) fn clear(&self, root: &str) -> Result<(), IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = self.write_txn(&db)?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
                let (lo, hi) = below(root.as_bytes());
                entries
                    .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)
                    .map_err(db_err)?;
                let mut sums = txn.open_table(SUMS).map_err(db_err)?;
                sums.remove(root).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })())
    }

    /// Mark the root's index complete, walked with the exclude list of hash `excludes`.
    pub(super) fn mark_built(&self, root: &str, excludes: u64) -> Result<(), IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = self.write_txn(&db)?;
            {
                let mut sums = txn.open_table(SUMS).map_err(db_err)?;
                let mut sum: IndexSum = match sums.get(root).map_err(db_err)? {
                    Some(v) => opts().deserialize(v.value())?,
                    None => IndexSum::default(),
                };
                sum.built = Some(excludes);
                sums.insert(root, opts().serialize(&sum)?.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })())
    }

    /// At an orderly stop: every root's index is settled as of now (see [`IndexSum::settled`]).
    pub(super) fn settle(&self) -> Result<(), IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = self.write_txn(&db)?;
            {
                let mut sums = txn.open_table(SUMS).map_err(db_err)?;
                let mut all = Vec::new();
                for kv in sums.iter().map_err(db_err)? {
                    let (k, v) = kv.map_err(db_err)?;
                    let sum: IndexSum = opts().deserialize(v.value())?;
                    all.push((k.value().to_string(), sum));
                }
                for (root, mut sum) in all {
                    sum.written_ns = now_ns();
                    sum.settled = true;
                    sums.insert(root.as_str(), opts().serialize(&sum)?.as_slice())
                        .map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)
        })())
    }

    /// Every entry of the root, in walk order, as of one snapshot.
    pub(super) fn scan(&self, root: &str) -> Result<IndexScan, IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = db.begin_read().map_err(db_err)?;
            let (prefix, hi) = below(root.as_bytes());
            let iter = match txn.open_table(ENTRIES) {
                Ok(t) => Some(t.range(prefix.as_slice()..hi.as_slice()).map_err(db_err)?),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(db_err(e)),
            };
            Ok(IndexScan {
                iter,
                prefix_len: prefix.len(),
                tally: IndexTally::default(),
            })
        })())
    }

    /// The paths of every entry below `path` of `root`.
    pub(super) fn paths_below(&self, root: &str, path: &[u8]) -> Result<Vec<Vec<u8>>, IndexError> {
        self.check((|| {
            let db = self.db()?;
            let txn = db.begin_read().map_err(db_err)?;
            let table = match txn.open_table(ENTRIES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let prefix_len = root.len() + 1;
            let (lo, hi) = below(&index_key(root, path));
            let mut out = Vec::new();
            for kv in table.range(lo.as_slice()..hi.as_slice()).map_err(db_err)? {
                let (k, _) = kv.map_err(db_err)?;
                out.push(key_path(prefix_len, k.value()));
            }
            Ok(out)
        })())
    }

    /// Bytes the index file takes on disk.
    pub(super) fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Overwrite the root's sum (tests: an index that does not add up).
    #[cfg(test)]
    pub(super) fn forge(&self, f: impl FnOnce(&mut EntriesTable, &mut SumsTable)) {
        let db = self.db().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut entries = txn.open_table(ENTRIES).unwrap();
            let mut sums = txn.open_table(SUMS).unwrap();
            f(&mut entries, &mut sums);
        }
        txn.commit().unwrap();
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        if let Err(e) = self.persist() {
            tracing::warn!(error = %e, "index not made durable at close; the next catch-up pushes its latest paths again");
        }
    }
}

/// The key range of everything below `k` (a root's name, or an entry's key): from `k 0x00`
/// up to, not including, `k 0x01`.
fn below(k: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = k.to_vec();
    lo.push(0);
    let mut hi = k.to_vec();
    hi.push(1);
    (lo, hi)
}

/// Set or remove one key (a removal takes what is below it), keeping `sum` in step.
fn apply(
    entries: &mut redb::Table<&[u8], &[u8]>,
    sum: &mut IndexSum,
    k: &[u8],
    stat: &Option<Stat>,
) -> Result<(), IndexError> {
    // One lookup per path: the insert or the removal hands back the entry it replaced.
    let old = match stat {
        Some(stat) => {
            let v = opts().serialize(&IndexEntry { stat: *stat })?;
            sum.hash = sum.hash.wrapping_add(entry_hash(k, &v));
            let old = entries.insert(k, v.as_slice()).map_err(db_err)?;
            old.map(|o| o.value().to_vec())
        }
        None => entries
            .remove(k)
            .map_err(db_err)?
            .map(|o| o.value().to_vec()),
    };
    if let Some(old) = &old {
        sum.hash = sum.hash.wrapping_sub(entry_hash(k, old));
    }
    sum.count = sum.count + u64::from(stat.is_some()) - u64::from(old.is_some());
    if stat.is_none() {
        let (lo, hi) = below(k);
        entries
            .retain_in(lo.as_slice()..hi.as_slice(), |key, value| {
                sum.count -= 1;
                sum.hash = sum.hash.wrapping_sub(entry_hash(key, value));
                false
            })
            .map_err(db_err)?;
    }
    Ok(())
}

/// The entries of one root in walk order, tallied as they are read.
pub struct IndexScan {
    iter: Option<redb::Range<'static, &'static [u8], &'static [u8]>>,
    prefix_len: usize,
    pub tally: IndexTally,
}

impl Iterator for IndexScan {
    type Item = Result<(Vec<u8>, IndexEntry), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let kv = self.iter.as_mut()?.next()?;
        Some((|| {
            let (k, v) = kv.map_err(db_err)?;
            let (k, v) = (k.value(), v.value());
            self.tally.add(k, v);
            let entry: IndexEntry = opts().deserialize(v).map_err(IndexError::from)?;
            Ok((key_path(self.prefix_len, k), entry))
        })())
    }
}

impl Journal {
    /// Record the source's state of these paths (None: gone, with everything below it). Call
    /// only once their change is journaled for every target and flushed (see the module's
    /// invariant).
    pub fn index_update(
        &self,
        root: &str,
        changes: &[(Vec<u8>, Option<Stat>)],
    ) -> Result<(), JournalError> {
        let seq = self.seq()?;
        self.index
            .update(root, changes, seq)
            .map_err(|e| self.index_write_failed(Some(root), &e))
    }

    /// An index write of `root` (None: of every root) failed: the index may now lack paths
    /// that reach the targets, so it vouches for nothing until it is built again (see
    /// [`Journal::index_failed`]).
    pub(crate) fn index_write_failed(&self, root: Option<&str>, e: &IndexError) -> JournalError {
        tracing::warn!(error = %e, "index write failed; the next catch-up is a full sync");
        if let Err(e) = self.write(|t| t.set_index_failed(root, true)) {
            tracing::warn!(error = %e, "cannot record the failed index write in the journal");
        }
        JournalError::Index(IndexError::Failed(e.to_string()))
    }

    /// Whether an index write of `root` failed since its index was last built.
    pub fn index_failed(&self, root: &str) -> Result<bool, JournalError> {
        self.with(|t| t.index_failed(root))
    }

    /// Every path the index holds below `path` of `root` (what a target may hold there).
    pub fn index_paths_below(&self, root: &str, path: &[u8]) -> Result<Vec<Vec<u8>>, JournalError> {
        Ok(self.index.paths_below(root, path)?)
    }

    /// Every path of `root` the index holds as a file of inode `ino` (a scan of the root).
    pub fn index_names_of(&self, root: &str, ino: u64) -> Result<Vec<Vec<u8>>, JournalError> {
        let mut out = Vec::new();
        for e in self.index_scan(root)? {
            let (p, e) = e?;
            if e.stat.ino == ino && e.stat.kind == crate::fs::Kind::File {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The root's count, hash and last write; None if the root has no index yet.
    pub fn index_sum(&self, root: &str) -> Result<Option<IndexSum>, JournalError> {
        Ok(self.index.sum(root)?)
    }

    /// Whether the journal has lost writes the index saw (a truncated or replaced journal):
    /// then the index may record states whose pending entries are gone.
    pub fn index_ahead_of_journal(&self) -> Result<bool, JournalError> {
        Ok(self.index.journal_seq()? > self.seq()?)
    }

    /// Every entry of the root, in walk order (see the module), tallied as it is read.
    pub fn index_scan(&self, root: &str) -> Result<IndexScan, JournalError> {
        Ok(self.index.scan(root)?)
    }

    /// Overwrite the root's sum (tests: an index that does not add up).
    #[cfg(test)]
    pub fn index_forge_sum(&self, root: &str, sum: IndexSum) {
        let v = opts().serialize(&sum).unwrap();
        self.index.forge(|_, sums| {
            sums.insert(root, v.as_slice()).unwrap();
        });
    }

    /// The root's index now holds a walk of all of it, made with the exclude list of hash
    /// `excludes`: from here on it vouches for the root.
    pub fn index_mark_built(&self, root: &str, excludes: u64) -> Result<(), JournalError> {
        self.index.mark_built(root, excludes)?;
        self.write(|t| t.set_index_failed(Some(root), false))
    }

    /// At an orderly stop, once everything seen is journaled and indexed: every root's index
    /// is settled (only a change within a timestamp tick of now can look unchanged).
    pub fn index_settle(&self) -> Result<(), JournalError> {
        self.index
            .settle()
            .map_err(|e| self.index_write_failed(None, &e))
    }

    /// Forget the root's index.
    pub fn index_clear(&self, root: &str) -> Result<(), JournalError> {
        Ok(self.index.clear(root)?)
    }

    /// Bytes the index takes on disk.
    pub fn index_size_on_disk(&self) -> u64 {
        self.index.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    fn stat(ino: u64, kind: Kind) -> Option<Stat> {
        Some(Stat {
            kind,
            size: ino * 10,
            mtime_ns: 1,
            ctime_ns: 2,
            ino,
            mode: 0o644,
            nlink: 1,
        })
    }

    fn paths(j: &Journal, root: &str) -> (Vec<String>, IndexTally) {
        let mut scan = j.index_scan(root).unwrap();
        let mut out = Vec::new();
        for e in scan.by_ref() {
            out.push(String::from_utf8(e.unwrap().0).unwrap());
        }
        (out, scan.tally)
    }

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn entries_come_in_walk_order_with_a_directory_before_its_entries() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let names = ["a.txt", "a", "a/b", "a/b/c", "a-z", "b", "a/0"];
        let changes: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (p(n), stat(i as u64 + 1, Kind::File)))
            .collect();
        j.index_update("r", &changes).unwrap();
        j.index_update("other", &[(p("a"), stat(9, Kind::Dir))])
            .unwrap();
        let (got, tally) = paths(&j, "r");
        // As a walk sorted by name meets them: "a" and all below it before "a-z" and "a.txt".
        assert_eq!(got, ["a", "a/0", "a/b", "a/b/c", "a-z", "a.txt", "b"]);
        assert!(tally.matches(&j.index_sum("r").unwrap().unwrap()));
        assert_eq!(paths(&j, "other").0, ["a"]);
    }

    #[test]
    fn removing_a_directory_removes_what_is_below_it_and_the_sum_follows() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let all = ["d", "d/x", "d/sub", "d/sub/y", "d.txt", "e"];
        let changes: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, n)| (p(n), stat(i as u64 + 1, Kind::File)))
            .collect();
        j.index_update("r", &changes).unwrap();
        j.index_update("r", &[(p("d"), None), (p("e"), stat(99, Kind::File))])
            .unwrap();
        let (got, tally) = paths(&j, "r");
        assert_eq!(got, ["d.txt", "e"]);
        let sum = j.index_sum("r").unwrap().unwrap();
        assert_eq!(sum.count, 2);
        assert!(tally.matches(&sum));
        // The same two entries written from scratch give the same sum: order-independent.
        let d2 = tempfile::tempdir().unwrap();
        let j2 = Journal::open(d2.path()).unwrap();
        j2.index_update("r", &[(p("e"), stat(99, Kind::File))])
            .unwrap();
        j2.index_update("r", &[(p("d.txt"), stat(5, Kind::File))])
            .unwrap();
        assert_eq!(j2.index_sum("r").unwrap().unwrap().hash, sum.hash);
    }

    #[test]
    fn an_entry_lost_or_altered_behind_the_sums_back_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        j.index_update(
            "r",
            &[(p("a"), stat(1, Kind::File)), (p("b"), stat(2, Kind::File))],
        )
        .unwrap();
        // As a damaged file would: an entry gone without its sum knowing.
        j.index.forge(|entries, _| {
            entries.remove(index_key("r", b"b").as_slice()).unwrap();
        });
        let sum = j.index_sum("r").unwrap().unwrap();
        assert!(!paths(&j, "r").1.matches(&sum));
        // Back, but with another value.
        let other = opts()
            .serialize(&IndexEntry {
                stat: stat(3, Kind::File).unwrap(),
            })
            .unwrap();
        j.index.forge(|entries, _| {
            entries
                .insert(index_key("r", b"b").as_slice(), other.as_slice())
                .unwrap();
        });
        assert!(!paths(&j, "r").1.matches(&sum));
        j.index_clear("r").unwrap();
        assert_eq!(j.index_sum("r").unwrap(), None);
        assert!(paths(&j, "r").0.is_empty());
    }

    #[test]
    fn an_index_that_saw_journal_writes_the_journal_lost_is_ahead_of_it() {
        let d = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(d.path()).unwrap();
            j.record(&["r/t".into()], &[p("a"), p("b")]).unwrap();
            j.index_update("r", &[(p("a"), stat(1, Kind::File))])
                .unwrap();
            assert!(!j.index_ahead_of_journal().unwrap());
            j.record(&["r/t".into()], &[p("c")]).unwrap();
            assert!(!j.index_ahead_of_journal().unwrap());
        }
        // The journal replaced by an older or empty one (as a truncated log leaves it), the
        // index kept: the index has seen writes the journal no longer holds.
        let d2 = tempfile::tempdir().unwrap();
        std::fs::copy(
            d.path().join(INDEX_FILE_NAME),
            d2.path().join(INDEX_FILE_NAME),
        )
        .unwrap();
        let j = Journal::open(d2.path()).unwrap();
        assert!(j.index_ahead_of_journal().unwrap());
        assert!(j.index_sum("r").unwrap().is_some());
    }

    #[test]
    fn an_unreadable_index_file_is_moved_aside_and_starts_empty() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(INDEX_FILE_NAME), vec![0x5a; 64 << 10]).unwrap();
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.index_sum("r").unwrap(), None);
        j.index_update("r", &[(p("a"), stat(1, Kind::File))])
            .unwrap();
        assert_eq!(j.index_sum("r").unwrap().unwrap().count, 1);
        assert!(d.path().join(format!("{INDEX_FILE_NAME}.damaged")).exists());
    }
}
