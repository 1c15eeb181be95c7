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
        // A name gone is no longer one of its inode's (pushing it would only delete it again).
        if !self.known.is_empty() {
            for (p, _) in changed.iter().filter(|(_, s)| s.is_none()) {
                for ((r, _), k) in self.known.iter_mut() {
                    if r == root {
                        k.names.remove(p);
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
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
