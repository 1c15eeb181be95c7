//! Paths relative to a root, as bytes (file names are bytes; never converted but for display).
//! The root itself is the empty path; components are separated by `/`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Join a relative directory path and a name.
pub fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
        p.extend_from_slice(dir);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// Absolute path of `rel` under `root`.
pub fn abs_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// Whether `path` is `prefix` or below it (component boundaries respected: `a/b` is not a
/// prefix of `a/bc`).
pub fn is_prefix_dir(prefix: &[u8], path: &[u8]) -> bool {
    path == prefix
        || (path.len() > prefix.len() && path.starts_with(prefix) && path[prefix.len()] == b'/')
}

/// The directory holding `p` (empty for the root).
pub fn dir_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

/// The last component of `p` (all of it at the root).
pub fn name_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// The directories strictly above `p`, the root excepted.
pub fn parents(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &p[..i])
}

/// The deepest directory (relative to the root, empty for the root) containing every path.
pub fn common_dir<'a>(mut paths: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let parent =
        |p: &'a [u8]| -> &'a [u8] { p.iter().rposition(|b| *b == b'/').map_or(&[], |i| &p[..i]) };
    let Some(first) = paths.next() else {
        return Vec::new();
    };
    let mut common = parent(first);
    for p in paths {
        while !(common.is_empty() || p.starts_with(common) && p.get(common.len()) == Some(&b'/')) {
            common = parent(common);
        }
    }
    common.to_vec()
}

/// `path` (below `root`) relative to `root`, as bytes (empty for the root itself).
pub fn rel_path(root: &Path, path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.strip_prefix(root)
        .map(|r| r.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

/// Order two relative paths as a depth-first walk with each directory's names sorted byte-wise
/// meets them (the index's key order): `/` before any other byte.
pub fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_match_respects_component_boundaries() {
        assert!(is_prefix_dir(b"a/b", b"a/b"));
        assert!(is_prefix_dir(b"a/b", b"a/b/c"));
        assert!(!is_prefix_dir(b"a/b", b"a/bc"));
        assert_eq!(join_rel(b"", b"x"), b"x");
        assert_eq!(join_rel(b"d", b"x"), b"d/x");
    }

    #[test]
    fn parents_are_every_directory_above_but_the_root() {
        let ps: Vec<&[u8]> = parents(b"a/b/c").collect();
        assert_eq!(ps, vec![&b"a"[..], &b"a/b"[..]]);
        assert_eq!(parents(b"top").count(), 0);
    }

    #[test]
    fn common_dir_is_the_deepest_shared_directory() {
        let c =
            |ps: &[&str]| String::from_utf8(common_dir(ps.iter().map(|p| p.as_bytes()))).unwrap();
        assert_eq!(c(&["a/b/c.txt", "a/b/d/e.txt"]), "a/b");
        assert_eq!(c(&["a/b/c.txt", "a/bc/d.txt"]), "a");
        assert_eq!(c(&["top.txt", "a/b.txt"]), "");
        assert_eq!(c(&["a/b"]), "a");
        assert_eq!(c(&[]), "");
    }
}
