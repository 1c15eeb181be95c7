//! What the index remembers of one path: the fields of its `lstat` that tell a change, and the
//! rule that says whether two of them differ.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The type of a directory entry (symlinks are not followed).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// One path's `lstat`, as far as a change shows in it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
}

impl Stat {
    /// `lstat(path)`.
    pub fn lstat(path: &Path) -> std::io::Result<Stat> {
        Ok(Stat::of(&std::fs::symlink_metadata(path)?))
    }

    pub fn of(m: &std::fs::Metadata) -> Stat {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Stat {
            kind,
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode(),
            nlink: m.nlink(),
        }
    }

    /// Whether the entry changed between `self` (remembered) and `now` (seen): its type, size,
    /// mtime, ctime, inode, mode or link count differ. The ctime catches a same-size rewrite
    /// whose mtime was put back (`touch -r`, `cp -p`), which rsync's quick check cannot see.
    /// A directory's size and times change with its entries, which are compared one by one:
    /// for a directory only its type, inode and mode count.
    pub fn changed(&self, now: &Stat) -> bool {
        if self.kind != now.kind || self.ino != now.ino || self.mode != now.mode {
            return true;
        }
        self.kind != Kind::Dir
            && (self.size != now.size
                || self.mtime_ns != now.mtime_ns
                || self.ctime_ns != now.ctime_ns
                || self.nlink != now.nlink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Stat {
        Stat {
            kind: Kind::File,
            size: 10,
            mtime_ns: 1_000,
            ctime_ns: 2_000,
            ino: 7,
            mode: 0o100644,
            nlink: 1,
        }
    }

    /// What happened, the change to the stat, whether it counts.
    type Case = (&'static str, fn(&mut Stat), bool);

    #[test]
    fn what_counts_as_a_change() {
        let base = file();
        let cases: Vec<Case> = vec![
            ("the same", |_| {}, false),
            ("appended", |s| s.size = 11, true),
            (
                "rewritten, mtime put back: only the ctime moved",
                |s| s.ctime_ns = 3_000,
                true,
            ),
            ("touched", |s| s.mtime_ns = 1_500, true),
            ("replaced by another inode", |s| s.ino = 8, true),
            ("chmod", |s| s.mode = 0o100600, true),
            ("a second name", |s| s.nlink = 2, true),
            ("now a directory", |s| s.kind = Kind::Dir, true),
            ("now a symlink", |s| s.kind = Kind::Symlink, true),
        ];
        for (what, change, want) in cases {
            let mut now = base;
            change(&mut now);
            assert_eq!(base.changed(&now), want, "{what}");
        }
    }

    #[test]
    fn a_directory_changes_by_type_inode_or_mode_only() {
        let dir = Stat {
            kind: Kind::Dir,
            mode: 0o40755,
            ..file()
        };
        let entries_changed = Stat {
            size: 4096,
            mtime_ns: 9_000,
            ctime_ns: 9_000,
            nlink: 3,
            ..dir
        };
        assert!(!dir.changed(&entries_changed));
        assert!(dir.changed(&Stat {
            mode: 0o40700,
            ..dir
        }));
    }

    #[test]
    fn lstat_does_not_follow_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", d.path().join("l")).unwrap();
        let f = Stat::lstat(&d.path().join("f")).unwrap();
        let l = Stat::lstat(&d.path().join("l")).unwrap();
        assert_eq!((f.kind, f.size), (Kind::File, 3));
        assert_eq!(l.kind, Kind::Symlink);
        assert_ne!(f.ino, l.ino);
    }
}
