//! Catch-up: what changed in a root while nobody watched it (syncd down, or an inotify
//! overflow), told by one local walk (`lstat` only) diffed against the index, instead of a full
//! rsync to every target.
//!
//! The walk visits names sorted byte-wise, depth first, which is the index's key order (see
//! `journal::index`), so both are read side by side and neither is held in memory: only what
//! differs is collected.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::Excludes;
use crate::fs::{is_prefix_dir, rel_path, Stat};

/// How a path differs from what the index remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delta {
    /// At the source, not in the index.
    Created,
    /// In both, and its `lstat` differs (type included), or its entry is racy.
    Changed,
    /// In the index, gone from the source (everything below a deleted directory goes with it
    /// and is not listed).
    Deleted,
}

/// One path found to differ; `stat` is what the walk saw (None when deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: Vec<u8>,
    pub delta: Delta,
    pub stat: Option<Stat>,
}

/// Order two relative paths as the index orders them: `/` before any other byte.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// The entries below `source` (not the root itself) in walk order, with their `lstat`;
/// excluded entries are skipped and excluded directories not entered. Directories that cannot
/// be read are listed in [`Walk::unreadable`] (shared, filled as the walk goes: an error comes
/// right after its directory, before anything below it in walk order): what the index has
/// below them is not taken for deleted.
pub struct Walk {
    iter: walkdir::IntoIter,
    source: PathBuf,
    excludes: Excludes,
    unreadable: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl Walk {
    pub fn new(source: &Path, excludes: &Excludes) -> Walk {
        let iter = walkdir::WalkDir::new(source)
            .min_depth(1)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()))
            .into_iter();
        Walk {
            iter,
            source: source.to_path_buf(),
            excludes: excludes.clone(),
            unreadable: Rc::default(),
        }
    }

    /// The directories found unreadable so far, still filled as the walk goes on.
    pub fn unreadable(&self) -> Rc<RefCell<Vec<Vec<u8>>>> {
        self.unreadable.clone()
    }
}

impl Iterator for Walk {
    type Item = (Vec<u8>, Stat);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let e = match self.iter.next()? {
                Ok(e) => e,
                Err(err) => {
                    if let Some(p) = err.path() {
                        self.unreadable.borrow_mut().push(rel_path(&self.source, p));
                    }
                    continue;
                }
            };
            let rel = rel_path(&self.source, e.path());
            let is_dir = e.file_type().is_dir();
            if self.excludes.matches(&rel, is_dir) {
                if is_dir {
                    self.iter.skip_current_dir();
                }
                continue;
            }
            // walkdir's metadata does not follow symlinks: an lstat.
            match e.metadata() {
                Ok(m) => return Some((rel, Stat::of(&m))),
                // Gone since it was listed: as if never seen (the index tells a deletion).
                Err(_) => continue,
            }
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
    // The last directory taken for deleted: its entries in the index are not listed.
    let mut deleted_dir: Option<Vec<u8>> = None;
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
                let below_deleted = deleted_dir
                    .as_deref()
                    .is_some_and(|d| is_prefix_dir(d, &path));
                if below_deleted || unreadable(&path) {
                    continue;
                }
                deleted_dir = Some(path.clone());
                out.push(Found {
                    path,
                    delta: Delta::Deleted,
                    stat: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

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
    }

    fn catch_up(j: &crate::journal::Journal, src: &Path) -> (Vec<(String, Delta)>, bool) {
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
        assert_eq!(catch_up(&j, &src), (vec![], true), "nothing changed yet");

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

        let (got, trusted) = catch_up(&j, &src);
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
            ("rewrite".into(), Changed),
            ("tree".into(), Created),
            ("tree/a".into(), Created),
            ("tree/a/b".into(), Created),
            ("truncate".into(), Changed),
        ];
        assert_eq!(got, want);
    }
}
