//! Every difference between a source tree and a target tree: entries missing or extra at the
//! target, of another type, with other content, another symlink target (bytes) or other
//! permission bits (files and directories). Built on `asserts::snapshot` (which leaves out
//! rsync's `.rsync-partial`), plus each entry's mode.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{snapshot, Node};

/// An entry with its permission bits (`mode & 0o7777`; 0 for symlinks, whose mode means
/// nothing on Linux).
type Entries = BTreeMap<Vec<u8>, (Node, u32)>;

fn entries(root: &Path, excluded: &impl Fn(&[u8]) -> bool) -> Entries {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !excluded(p))
        .map(|(p, n)| {
            let mode = match n {
                Node::Symlink(_) => 0,
                _ => std::fs::symlink_metadata(root.join(OsStr::from_bytes(&p)))
                    .map_or(0, |m| m.mode() & 0o7777),
            };
            (p, (n, mode))
        })
        .collect()
}

/// Ok when `dst` holds exactly what `src` holds, paths for which `excluded` is true left out on
/// both sides; otherwise every difference, one per line (what lies below an entry missing,
/// extra or of another type is counted on that entry's line, not listed).
pub fn compare(src: &Path, dst: &Path, excluded: impl Fn(&[u8]) -> bool) -> Result<(), String> {
    let diffs = differences(&entries(src, &excluded), &entries(dst, &excluded));
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

fn differences(a: &Entries, b: &Entries) -> Vec<String> {
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    // Entries whose subtree is reported whole on their own line, with how many lie below.
    let mut whole: BTreeMap<Vec<u8>, (String, usize)> = BTreeMap::new();
    let below_whole = |whole: &mut BTreeMap<Vec<u8>, (String, usize)>, p: &[u8]| {
        let mut at = p;
        while let Some(i) = at.iter().rposition(|c| *c == b'/') {
            at = &at[..i];
            if let Some(w) = whole.get_mut(at) {
                w.1 += 1;
                return true;
            }
        }
        false
    };
    let mut lines = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for p in keys {
        if below_whole(&mut whole, p) {
            continue;
        }
        match (a.get(p), b.get(p)) {
            (Some((n, _)), None) => {
                whole.insert(
                    p.clone(),
                    (
                        format!("missing at the target: {} ({})", show(p), kind(n)),
                        0,
                    ),
                );
            }
            (None, Some((n, _))) => {
                whole.insert(
                    p.clone(),
                    (format!("extra at the target: {} ({})", show(p), kind(n)), 0),
                );
            }
            (Some((x, xm)), Some((y, ym))) => {
                if let Some(d) = node_difference(x, y) {
                    let line = format!("{}: {d}", show(p));
                    if kind(x) != kind(y) {
                        whole.insert(p.clone(), (line, 0));
                    } else {
                        lines.push((p.clone(), line));
                    }
                }
                if kind(x) == kind(y) && xm != ym {
                    lines.push((
                        p.clone(),
                        format!(
                            "{}: mode {xm:04o} at the source, {ym:04o} at the target",
                            show(p)
                        ),
                    ));
                }
            }
            (None, None) => unreachable!("a key of one of them"),
        }
    }
    for (p, (line, n)) in whole {
        let line = if n > 0 {
            format!("{line}, and {n} entries below it")
        } else {
            line
        };
        lines.push((p, line));
    }
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

fn kind(n: &Node) -> &'static str {
    match n {
        Node::Dir => "directory",
        Node::File { .. } => "file",
        Node::Symlink(_) => "symlink",
        Node::Other => "special file",
    }
}

/// How two entries of one path differ (type, content, symlink target), None when they do not.
fn node_difference(x: &Node, y: &Node) -> Option<String> {
    match (x, y) {
        (Node::File { content: a, .. }, Node::File { content: b, .. }) if a != b => {
            let at = a
                .iter()
                .zip(b)
                .position(|(p, q)| p != q)
                .unwrap_or(a.len().min(b.len()));
            Some(format!(
                "content differs ({} bytes at the source, {} at the target, first difference at byte {at})",
                a.len(),
                b.len()
            ))
        }
        (Node::Symlink(a), Node::Symlink(b)) if a != b => Some(format!(
            "symlink target {:?} at the source, {:?} at the target",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        )),
        _ if kind(x) != kind(y) => Some(format!(
            "a {} at the source, a {} at the target",
            kind(x),
            kind(y)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::excluded_tmp;
    use std::os::unix::fs::PermissionsExt;

    /// Two trees holding the same: a file, a directory with a file, a symlink, an empty
    /// directory, and an excluded file only at the source.
    fn twins() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for r in [&a, &b] {
            std::fs::create_dir_all(r.join("d/e")).unwrap();
            std::fs::create_dir(r.join("empty")).unwrap();
            std::fs::write(r.join("f"), b"same").unwrap();
            std::fs::write(r.join("d/g"), b"also same").unwrap();
            std::os::unix::fs::symlink("../f", r.join("d/l")).unwrap();
        }
        std::fs::write(a.join("d/x.tmp"), b"excluded").unwrap();
        (dir, a, b)
    }

    fn diff(a: &Path, b: &Path) -> String {
        compare(a, b, excluded_tmp).expect_err("a difference")
    }

    #[test]
    fn identical_trees_and_excluded_names_compare_equal() {
        let (_d, a, b) = twins();
        assert_eq!(compare(&a, &b, excluded_tmp), Ok(()));
        std::fs::create_dir(b.join("junk.tmp")).unwrap();
        std::fs::write(b.join("junk.tmp/x"), b"at the target only, excluded").unwrap();
        assert_eq!(compare(&a, &b, excluded_tmp), Ok(()));
        assert!(
            compare(&a, &b, |_| false).is_err(),
            "without the exclusion they differ"
        );
    }

    #[test]
    fn each_kind_of_difference_is_caught_and_named() {
        type Change = fn(&Path);
        let cases: [(&str, Change, &str); 9] = [
            ("missing", |b| std::fs::remove_file(b.join("f")).unwrap(), "missing at the target: f (file)"),
            ("missing tree", |b| std::fs::remove_dir_all(b.join("d")).unwrap(), "missing at the target: d (directory), and 3 entries below it"),
            ("extra", |b| std::fs::write(b.join("d/e/new"), b"x").unwrap(), "extra at the target: d/e/new (file)"),
            ("type", |b| {
                std::fs::remove_file(b.join("f")).unwrap();
                std::fs::create_dir(b.join("f")).unwrap();
                std::fs::write(b.join("f/inner"), b"x").unwrap();
            }, "f: a file at the source, a directory at the target, and 1 entries below it"),
            ("content, same size", |b| std::fs::write(b.join("f"), b"SAME").unwrap(), "f: content differs (4 bytes at the source, 4 at the target, first difference at byte 0)"),
            ("content, shorter", |b| std::fs::write(b.join("d/g"), b"also").unwrap(), "d/g: content differs (9 bytes at the source, 4 at the target, first difference at byte 4)"),
            ("symlink target", |b| {
                std::fs::remove_file(b.join("d/l")).unwrap();
                std::os::unix::fs::symlink(".././f", b.join("d/l")).unwrap();
            }, "d/l: symlink target \"../f\" at the source, \".././f\" at the target"),
            ("file mode", |b| std::fs::set_permissions(b.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap(), "f: mode 0644 at the source, 0600 at the target"),
            ("directory mode", |b| std::fs::set_permissions(b.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap(), "empty: mode 0755 at the source, 0700 at the target"),
        ];
        for (what, change, expected) in cases {
            let (_d, a, b) = twins();
            // Modes made explicit at both sides: the umask of whoever runs the test differs.
            for r in [&a, &b] {
                for (p, m) in [
                    ("f", 0o644),
                    ("d/g", 0o644),
                    ("empty", 0o755),
                    ("d", 0o755),
                    ("d/e", 0o755),
                ] {
                    std::fs::set_permissions(r.join(p), std::fs::Permissions::from_mode(m))
                        .unwrap();
                }
            }
            change(&b);
            assert_eq!(diff(&a, &b), expected, "{what}");
        }
    }

    #[test]
    fn several_differences_are_all_listed() {
        let (_d, a, b) = twins();
        std::fs::remove_file(b.join("f")).unwrap();
        std::fs::write(b.join("extra"), b"x").unwrap();
        std::fs::write(b.join("d/g"), b"changed").unwrap();
        let d = diff(&a, &b);
        assert_eq!(d.lines().count(), 3, "{d}");
    }
}
