//! The index of the source: for each root, every path's `lstat` as it was when its change was
//! journaled, so a restart or an overflow can tell what changed by one local walk instead of a
//! full rsync to every target.
//!
//! Keys are `root_name 0x00 path` with each `/` of the path written as `0x00`: since no name
//! holds a NUL, key order is the order of a depth-first walk whose names are sorted byte-wise
//! (a directory right before its entries), and the catch-up reads both side by side.
//!
//! Invariant: the index never records a state whose change is not journaled for every target.
//! Its writers record the change (pending entries, or an owed full sync) first, then the index,
//! in that order on one sled log (which recovers a prefix of its writes): a crash leaves either
//! the old state, or the new one and what it owes.
//!
//! Integrity: sled drops the tail of a corrupted log without a word. Every write keeps, in the
//! same atomic batch, a count and an order-independent hash (the wrapping sum of each entry's
//! xxh3) per root; the catch-up walk, which reads every entry anyway, recomputes both and
//! distrusts the index on a mismatch.

use serde::{Deserialize, Serialize};

use super::{opts, Journal, JournalError, Trees};
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

/// The sum's key, in the index tree itself so one batch writes entries and sum together:
/// `0xff root`, which no entry key has (a root name is UTF-8, where 0xff never occurs).
fn sum_key(root: &str) -> Vec<u8> {
    let mut k = vec![0xff];
    k.extend_from_slice(root.as_bytes());
    k
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Trees {
    fn index_sum(&self, root: &str) -> Result<Option<IndexSum>, JournalError> {
        match self.index.get(sum_key(root))? {
            Some(v) => Ok(Some(opts().deserialize(&v)?)),
            None => Ok(None),
        }
    }

    /// Set (Some) or remove (None, with everything below it) each path, and the sum with them,
    /// in one atomic batch (a transaction would hold a copy of every write in memory).
    fn index_update(
        &self,
        root: &str,
        changes: &[(Vec<u8>, Option<Stat>)],
    ) -> Result<(), JournalError> {
        let sk = sum_key(root);
        let mut sum = self.index_sum(root)?.unwrap_or_default();
        let mut batch = sled::Batch::default();
        // What this batch already set or removed, as the tree will have it: a path can come
        // twice (a directory removed, then one of its old names set again).
        let mut now: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        let current = |now: &std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
                       k: &[u8]|
         -> Result<Option<Vec<u8>>, JournalError> {
            match now.get(k) {
                Some(v) => Ok(v.clone()),
                None => Ok(self.index.get(k)?.map(|v| v.to_vec())),
            }
        };
        for (path, stat) in changes {
            let k = index_key(root, path);
            let mut gone = Vec::new();
            let value = match stat {
                Some(stat) => Some(opts().serialize(&IndexEntry { stat: *stat })?),
                None => {
                    // Below a removed directory: its entries go too (the index has one writer
                    // at a time, so what is read here is what the batch replaces).
                    let mut below = k.clone();
                    below.push(0);
                    for kv in self.index.scan_prefix(&below) {
                        gone.push(kv?.0.to_vec());
                    }
                    None
                }
            };
            gone.push(k.clone());
            for g in gone.iter().filter(|g| **g != k || value.is_none()) {
                if let Some(old) = current(&now, g)? {
                    sum.count -= 1;
                    sum.hash = sum.hash.wrapping_sub(entry_hash(g, &old));
                }
                batch.remove(g.as_slice());
                now.insert(g.clone(), None);
            }
            if let Some(v) = value {
                match current(&now, &k)? {
                    Some(old) => sum.hash = sum.hash.wrapping_sub(entry_hash(&k, &old)),
                    None => sum.count += 1,
                }
                sum.hash = sum.hash.wrapping_add(entry_hash(&k, &v));
                batch.insert(k.as_slice(), v.as_slice());
                now.insert(k, Some(v));
            }
        }
        sum.written_ns = now_ns();
        batch.insert(sk.as_slice(), opts().serialize(&sum)?);
        self.index.apply_batch(batch)?;
        Ok(())
    }

    /// Forget the root's index (and its sum): the next catch-up cannot trust what is not there.
    fn index_clear(&self, root: &str) -> Result<(), JournalError> {
        let prefix = index_key(root, b"");
        for kv in self.index.scan_prefix(&prefix) {
            self.index.remove(kv?.0)?;
        }
        self.index.remove(sum_key(root))?;
        Ok(())
    }
}

/// The entries of one root in walk order, tallied as they are read.
pub struct IndexScan {
    iter: sled::Iter,
    prefix_len: usize,
    pub tally: IndexTally,
}

impl Iterator for IndexScan {
    type Item = Result<(Vec<u8>, IndexEntry), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let kv = self.iter.next()?;
        Some((|| {
            let (k, v) = kv?;
            self.tally.add(&k, &v);
            let entry: IndexEntry = opts().deserialize(&v)?;
            Ok((key_path(self.prefix_len, &k), entry))
        })())
    }
}

impl Journal {
    /// Record the source's state of these paths (None: gone, with everything below it). Call
    /// only once their change is journaled for every target (see the module's invariant).
    pub fn index_update(
        &self,
        root: &str,
        changes: &[(Vec<u8>, Option<Stat>)],
    ) -> Result<(), JournalError> {
        self.write(|t| t.index_update(root, changes))
    }

    /// The root's count, hash and last write; None if the root has no index yet.
    pub fn index_sum(&self, root: &str) -> Result<Option<IndexSum>, JournalError> {
        self.with(|t| t.index_sum(root))
    }

    /// Every entry of the root, in walk order (see the module), tallied as it is read.
    pub fn index_scan(&self, root: &str) -> Result<IndexScan, JournalError> {
        self.with(|t| {
            let prefix = index_key(root, b"");
            Ok(IndexScan {
                prefix_len: prefix.len(),
                iter: t.index.scan_prefix(prefix),
                tally: IndexTally::default(),
            })
        })
    }

    /// Overwrite the root's sum (tests: an index that does not add up).
    #[cfg(test)]
    pub fn index_forge_sum(&self, root: &str, sum: IndexSum) {
        let t = self.trees().unwrap();
        t.index
            .insert(sum_key(root), opts().serialize(&sum).unwrap())
            .unwrap();
    }

    /// Forget the root's index.
    pub fn index_clear(&self, root: &str) -> Result<(), JournalError> {
        self.write(|t| t.index_clear(root))
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
        let t = j.trees().unwrap();
        // As a truncated log would: an entry gone without its sum knowing.
        t.index.remove(index_key("r", b"b")).unwrap();
        let sum = j.index_sum("r").unwrap().unwrap();
        assert!(!paths(&j, "r").1.matches(&sum));
        // Back, but with another value.
        let other = opts()
            .serialize(&IndexEntry {
                stat: stat(3, Kind::File).unwrap(),
            })
            .unwrap();
        t.index.insert(index_key("r", b"b"), other).unwrap();
        assert!(!paths(&j, "r").1.matches(&sum));
        j.index_clear("r").unwrap();
        assert_eq!(j.index_sum("r").unwrap(), None);
        assert!(paths(&j, "r").0.is_empty());
    }
}
