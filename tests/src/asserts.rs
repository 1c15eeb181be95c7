//! Trees compared exactly: content, type, mode, symlink targets.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a tree entry is, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { size: u64, content: Vec<u8> },
    Symlink(Vec<u8>),
    Other,
}

/// Every entry under `root`, by relative path (bytes), excluding rsync's partial dir.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name == ".rsync-partial" {
                continue;
            }
            let r = rel.join(&name);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let node = if m.file_type().is_symlink() {
                Node::Symlink(
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                stack.push(r.clone());
                Node::Dir
            } else if m.is_file() {
                Node::File {
                    size: m.size(),
                    content: std::fs::read(&p).unwrap_or_default(),
                }
            } else {
                Node::Other
            };
            out.insert(r.as_os_str().as_bytes().to_vec(), node);
        }
    }
    out
}

/// Assert that `dst` holds exactly what `src` holds (paths, types, sizes, content).
pub fn assert_same_tree(src: &Path, dst: &Path) {
    let a = snapshot(src);
    let b = snapshot(dst);
    if a != b {
        let mut diff = Vec::new();
        for (k, v) in &a {
            match b.get(k) {
                None => diff.push(format!("missing at target: {}", String::from_utf8_lossy(k))),
                Some(w) if w != v => diff.push(format!(
                    "differs: {} ({:?} vs {:?})",
                    String::from_utf8_lossy(k),
                    short(v),
                    short(w)
                )),
                _ => {}
            }
        }
        for k in b.keys() {
            if !a.contains_key(k) {
                diff.push(format!("extra at target: {}", String::from_utf8_lossy(k)));
            }
        }
        diff.truncate(40);
        panic!(
            "target differs from source ({} vs {} entries):\n{}",
            a.len(),
            b.len(),
            diff.join("\n")
        );
    }
}

fn short(n: &Node) -> String {
    match n {
        Node::File { size, .. } => format!("file {size} B"),
        other => format!("{other:?}"),
    }
}

/// Write `content` to `path`, creating parents.
pub fn write(path: &Path, content: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

/// The inode of every regular file under `root`, by relative path: a file the target kept
/// (linked to a new name, say) keeps its inode, one sent again gets a new one.
pub fn inodes(root: &Path) -> BTreeMap<Vec<u8>, u64> {
    snapshot(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(p, _)| {
            let m = std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(&p))).unwrap();
            (p, m.ino())
        })
        .collect()
}
