//! Hard links at the source: a file written through one name changed every name of its inode,
//! but inotify tells only the name it was written through. After a path is journaled, the
//! other names of its inode (when it has more than one link) are journaled too, so each copy
//! at the target is current. rsync runs without `-H` (that needs every name in one run), so the
//! target holds them as separate files.
//!
//! The names of an inode come from the index (a scan of the root's entries for its inode
//! number), remembered here per inode and scanned again only when the link count grew past what
//! the last scan found.

use std::collections::{BTreeSet, HashMap};

use crate::fs::{Kind, Stat};
use crate::journal::{Journal, JournalError};

#[derive(Default)]
struct Known {
    names: BTreeSet<Vec<u8>>,
    /// The link count the last scan was made for.
    scanned: u64,
}

/// The names known of each multi-link inode, per root.
#[derive(Default)]
pub struct Links {
    known: HashMap<(String, u64), Known>,
}

impl Links {
    /// `changed`: paths of `root` just journaled, with what they are now (None: gone). Returns
    /// the other names of their multi-link files, not among `changed`, to journal too.
    pub fn siblings(
        &mut self,
        journal: &Journal,
        root: &str,
        changed: &[(Vec<u8>, Option<Stat>)],
    ) -> Result<Vec<Vec<u8>>, JournalError> {
        let mut out = BTreeSet::new();
        // A name gone, or now something else, is no longer one of its inode's. What was
        // written through it before it went changed the other names too, with no event for
        // them (`write f5; rm f5` where f2 is f5's other name, both in one commit: f5 is seen
        // gone, never written): the other names go again.
        if !self.known.is_empty() {
            let mut rescan = BTreeSet::new();
            for (p, now) in changed {
                for ((r, ino), k) in self.known.iter_mut() {
                    let same = now.is_some_and(|s| s.ino == *ino && s.kind == Kind::File);
                    if r == root && !same && k.names.remove(p) {
                        out.extend(k.names.iter().cloned());
                        rescan.insert(*ino);
                    }
                }
            }
            // The names remembered may be old ones (a directory above them renamed since):
            // the index has them as they are now.
            for ino in rescan {
                let names = journal.index_names_of(root, ino)?;
                out.extend(names.iter().cloned());
                if let Some(k) = self.known.get_mut(&(root.to_string(), ino)) {
                    k.names.extend(names);
                }
            }
        }
        for (p, s) in changed {
            let Some(s) = s.filter(|s| s.kind == Kind::File && s.nlink > 1) else {
                continue;
            };
            let k = self.known.entry((root.to_string(), s.ino)).or_default();
            k.names.insert(p.clone());
            if (k.names.len() as u64) < s.nlink && k.scanned < s.nlink {
                k.names.extend(journal.index_names_of(root, s.ino)?);
                k.scanned = s.nlink;
            }
            out.extend(k.names.iter().filter(|n| *n != p).cloned());
        }
        for (p, _) in changed {
            out.remove(p);
        }
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64, nlink: u64) -> Option<Stat> {
        Some(Stat {
            kind: Kind::File,
            size: 1,
            mtime_ns: 0,
            ctime_ns: 0,
            ino,
            mode: 0o644,
            nlink,
        })
    }

    fn ps(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_name_written_then_gone_sends_its_other_names_again() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let mut l = Links::default();
        let c = |p: &str, s: Option<Stat>| (p.as_bytes().to_vec(), s);
        // f2 and f5 are one inode; written through f5: f2 goes too.
        assert!(l
            .siblings(&j, "r", &[c("f2", file(7, 2)), c("f5", file(7, 2))])
            .unwrap()
            .is_empty());
        assert_eq!(
            l.siblings(&j, "r", &[c("f5", file(7, 2))]).unwrap(),
            ps(&["f2"])
        );
        // Written through f5, then f5 removed and a directory made there, all in one commit:
        // f5 is never seen as the file, but f2 changed with it.
        let dir = Some(Stat {
            kind: Kind::Dir,
            ..file(9, 2).unwrap()
        });
        assert_eq!(l.siblings(&j, "r", &[c("f5", dir)]).unwrap(), ps(&["f2"]));
        // f5 is no name of the inode any more.
        assert!(l.siblings(&j, "r", &[c("f5", None)]).unwrap().is_empty());
        // Gone: the same.
        l.siblings(&j, "r", &[c("g1", file(8, 2)), c("g2", file(8, 2))])
            .unwrap();
        assert_eq!(l.siblings(&j, "r", &[c("g1", None)]).unwrap(), ps(&["g2"]));
    }
}
