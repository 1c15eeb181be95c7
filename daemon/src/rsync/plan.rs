//! Planning: what rsync must be told about each changed journal path (itself, the deletion of
//! its top-most missing ancestor, or the file that replaced a directory above it).

use std::path::Path;

use crate::fs::abs_path;

/// rsync cannot take longer list entries (its list reader truncates at MAXPATHLEN).
pub const MAX_PATH_BYTES: usize = 4095;

/// What the planner may ask of the source: the type of an entry (an `lstat`, never following
/// a symlink), or `None` when it is not there. The real file system ([`Fs`]) or a model of it
/// (the planner's simulation).
pub trait SourceView {
    /// Whether `rel` (relative to the root; empty: the root) exists, and is a directory.
    fn entry(&self, rel: &[u8]) -> Option<bool>;
}

/// The source root on disk.
pub struct Fs<'a>(pub &'a Path);

impl SourceView for Fs<'_> {
    fn entry(&self, rel: &[u8]) -> Option<bool> {
        std::fs::symlink_metadata(abs_path(self.0, rel))
            .ok()
            .map(|m| m.is_dir())
    }
}

/// What rsync must be told about one changed path, and whether that is a deletion:
/// - the path itself if it exists;
/// - else its top-most missing ancestor, deleted with everything below it (rsync warns and skips
///   a missing path whose parent is gone);
/// - else, when what is left above it is not a directory (a directory replaced by a file), that
///   non-directory: its push replaces the whole subtree at the target (rsync fails on a path
///   below a file, exit 23, and the path would be retried in vain).
///
/// `None` for what is never listed: the root itself and paths rsync cannot take.
pub fn plan_path(root: &Path, p: &[u8]) -> Option<(Vec<u8>, bool)> {
    plan_in(&Fs(root), p)
}

/// [`plan_path`] against any [`SourceView`].
pub fn plan_in(view: &dyn SourceView, p: &[u8]) -> Option<(Vec<u8>, bool)> {
    if p.is_empty() || p.len() > MAX_PATH_BYTES {
        return None;
    }
    let mut cur: &[u8] = p;
    let mut missing: Option<&[u8]> = None;
    loop {
        match view.entry(cur) {
            Some(is_dir) => {
                return Some(match missing {
                    None => (p.to_vec(), false),
                    Some(top) if is_dir => (top.to_vec(), true),
                    Some(_) => (cur.to_vec(), false),
                })
            }
            None => missing = Some(cur),
        }
        match cur.iter().rposition(|b| *b == b'/') {
            Some(i) => cur = &cur[..i],
            // The root is there (checked before every batch).
            None => return Some((cur.to_vec(), true)),
        }
    }
}

/// Reduce a batch to what rsync must be told (see [`plan_path`]), without duplicates and sorted
/// (rsync works best on sorted input).
pub fn plan_list(root: &Path, paths: &[Vec<u8>]) -> Vec<(Vec<u8>, bool)> {
    let mut out: Vec<(Vec<u8>, bool)> = paths.iter().filter_map(|p| plan_path(root, p)).collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_subtree_collapses_to_top_most_missing_ancestor() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keep")).unwrap();
        let list = plan_list(
            d.path(),
            &[
                b"gone/a/b".to_vec(),
                b"gone/a".to_vec(),
                b"keep/x".to_vec(),
                b"keep/x".to_vec(),
            ],
        );
        assert_eq!(
            list,
            vec![(b"gone".to_vec(), true), (b"keep/x".to_vec(), true)]
        );
    }

    #[test]
    fn a_path_is_planned_as_itself_its_deleted_subtree_or_the_file_that_replaced_its_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/file"), b"x").unwrap();
        std::fs::write(d.path().join("was-a-dir"), b"x").unwrap();
        let plan = |p: &str| plan_path(d.path(), p.as_bytes());
        let is = |p: &str, deletion: bool| Some((p.as_bytes().to_vec(), deletion));
        assert_eq!(plan("dir/file"), is("dir/file", false));
        assert_eq!(plan("dir"), is("dir", false));
        assert_eq!(plan("dir/gone"), is("dir/gone", true));
        assert_eq!(plan("dir/gone/a/b"), is("dir/gone", true));
        assert_eq!(plan("gone/a"), is("gone", true));
        assert_eq!(plan("was-a-dir/a/b"), is("was-a-dir", false));
        assert_eq!(plan("dir/file/a"), is("dir/file", false));
        assert_eq!(plan(""), None);
        assert_eq!(plan(&"a".repeat(MAX_PATH_BYTES + 1)), None);
    }
}
