//! The identity of a source root (device and inode): a root deleted, replaced or unmounted is
//! never taken for an empty tree, which a push would turn into deletes at the target.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Device and inode of a root, taken when it was first watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl RootIdentity {
    /// Identity of the directory at `path`, without following a symlink at the last component.
    pub fn of(path: &Path) -> std::io::Result<RootIdentity> {
        let m = std::fs::symlink_metadata(path)?;
        if !m.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        Ok(RootIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Why nothing may be pushed for a root now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootUnavailable {
    #[error("source root {} is no longer the directory syncd started on (replaced or unmounted); nothing is pushed until it is back", .0.display())]
    Replaced(PathBuf),
    #[error("source root {} is unavailable ({why}); nothing is pushed until it is back", .path.display())]
    Gone { path: PathBuf, why: String },
}

/// Refuse to push when the root is not the directory it was: a deleted, replaced or unmounted
/// root would otherwise turn into deletes at the target.
pub fn check_root(root: &Path, expected: RootIdentity) -> Result<(), RootUnavailable> {
    match RootIdentity::of(root) {
        Ok(id) if id == expected => Ok(()),
        Ok(_) => Err(RootUnavailable::Replaced(root.to_path_buf())),
        Err(e) => Err(RootUnavailable::Gone {
            path: root.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// Whether `path` is a directory with nothing in it (what an unmounted filesystem looks like).
pub fn dir_is_empty(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_or_missing_root_is_refused_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir(&root).unwrap();
        let id = RootIdentity::of(&root).unwrap();
        assert_eq!(check_root(&root, id), Ok(()));
        std::fs::rename(&root, d.path().join("away")).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(dir_is_empty(&root));
        let e = check_root(&root, id).unwrap_err();
        assert!(matches!(e, RootUnavailable::Replaced(_)), "{e}");
        assert!(e.to_string().contains("no longer the directory"), "{e}");
        std::fs::remove_dir(&root).unwrap();
        let e = check_root(&root, id).unwrap_err();
        assert!(e.to_string().contains("is unavailable"), "{e}");
        assert!(RootIdentity::of(&d.path().join("nothing")).is_err());
    }
}
