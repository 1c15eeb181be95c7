//! The source's namespace as the generator sees it: each path's kind, its hard-link group,
//! what waits outside the root. Only the namespace is modelled (not content or modes: those
//! are compared between source and target); `Model::apply` refuses what the real call would
//! refuse, and `Model::check` holds the model against the real source after each round.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{outside_of, Op};
use crate::{snapshot, Node};

/// What a path of the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file; names with the same `ino` are hard links of one file.
    File {
        ino: u32,
    },
    Symlink,
}

/// The excluded suffix (the configuration's `exclude = ["*.tmp"]`).
pub const EXCLUDED_SUFFIX: &str = ".tmp";

/// Whether rsync's `*.tmp` excludes this relative path (a component of it matches).
pub fn excluded_tmp(path: &[u8]) -> bool {
    path.split(|b| *b == b'/')
        .any(|c| c.ends_with(EXCLUDED_SUFFIX.as_bytes()))
}

/// `dir/name`, or `name` at the root (`dir` empty).
pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The directory holding `path` ("" at the root).
pub(super) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Number of components ("" is 0).
pub(super) fn depth(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        path.matches('/').count() + 1
    }
}

/// Whether `path` is `dir` or below it.
pub(super) fn within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

/// The source's namespace: the root's entries and those moved outside, by relative path.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub(super) root: BTreeMap<String, Kind>,
    pub(super) outside: BTreeMap<String, Kind>,
    next_ino: u32,
    pub(super) next_stash: u32,
}

impl Model {
    /// An empty source with nothing outside.
    pub fn new() -> Model {
        Model::default()
    }

    /// The kind of `path` in the root.
    pub fn kind(&self, path: &str) -> Option<Kind> {
        if path.is_empty() {
            return Some(Kind::Dir);
        }
        self.root.get(path).copied()
    }

    /// Entries in the root.
    pub fn len(&self) -> usize {
        self.root.len()
    }

    /// Whether the root is empty.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    pub(super) fn is_dir(&self, path: &str) -> bool {
        self.kind(path) == Some(Kind::Dir)
    }

    fn is_file(&self, path: &str) -> bool {
        matches!(self.kind(path), Some(Kind::File { .. }))
    }

    /// Apply `op` to the model; an error says why it would not work on the real tree (then
    /// nothing changed).
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        let need = |ok: bool, why: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{op}: {why}"))
            }
        };
        match op {
            Op::Write { path, .. } => {
                need(self.is_dir(parent(path)), "no such directory")?;
                match self.kind(path) {
                    None => {
                        let ino = self.new_ino();
                        self.root.insert(path.clone(), Kind::File { ino });
                    }
                    Some(Kind::File { .. }) => {}
                    Some(_) => need(false, "not a file")?,
                }
            }
            Op::Scramble { path, .. } | Op::Append { path, .. } | Op::Truncate { path, .. } => {
                need(self.is_file(path), "not a file")?
            }
            Op::Chmod { path, .. } => need(
                !path.is_empty() && (self.is_file(path) || self.is_dir(path)),
                "neither a file nor a directory",
            )?,
            Op::Remove { path } => {
                need(
                    matches!(self.kind(path), Some(Kind::File { .. } | Kind::Symlink)),
                    "not a file or symlink",
                )?;
                self.root.remove(path);
            }
            Op::RemoveTree { path } => {
                need(!path.is_empty() && self.is_dir(path), "not a directory")?;
                self.root.retain(|k, _| !within(k, path));
            }
            Op::Mkdir { path } => {
                let mut at = String::new();
                for c in path.split('/') {
                    at = join(&at, c);
                    need(
                        matches!(self.kind(&at), None | Some(Kind::Dir)),
                        "a component is not a directory",
                    )?;
                }
                let mut at = String::new();
                for c in path.split('/') {
                    at = join(&at, c);
                    self.root.insert(at.clone(), Kind::Dir);
                }
            }
            Op::Rename { from, to } => self.rename(from, to).map_err(|e| format!("{op}: {e}"))?,
            Op::MoveOut { from, stash } => {
                need(
                    !from.is_empty() && self.kind(from).is_some(),
                    "no such entry",
                )?;
                need(!self.outside.contains_key(stash), "stash name taken")?;
                let moved = take(&mut self.root, from);
                put(&mut self.outside, moved, stash);
            }
            Op::MoveIn { stash, to } => {
                need(self.outside.contains_key(stash), "no such stash")?;
                need(
                    self.is_dir(parent(to)) && self.kind(to).is_none(),
                    "destination taken or parent missing",
                )?;
                let moved = take(&mut self.outside, stash);
                put(&mut self.root, moved, to);
            }
            Op::Symlink { target, path } => {
                need(!target.is_empty(), "empty target")?;
                need(
                    self.is_dir(parent(path)) && self.kind(path).is_none(),
                    "destination taken or parent missing",
                )?;
                self.root.insert(path.clone(), Kind::Symlink);
            }
            Op::Relink { target, path } => {
                need(!target.is_empty(), "empty target")?;
                need(self.kind(path) == Some(Kind::Symlink), "not a symlink")?;
            }
            Op::HardLink { from, to } => {
                let Some(k @ Kind::File { .. }) = self.kind(from) else {
                    return Err(format!("{op}: not a file"));
                };
                need(
                    self.is_dir(parent(to)) && self.kind(to).is_none(),
                    "destination taken or parent missing",
                )?;
                self.root.insert(to.clone(), k);
            }
            Op::AwaitPush { .. } => {}
        }
        Ok(())
    }

    /// rename(2) as Linux does it: a non-directory replaces a non-directory (two names of one
    /// file: nothing happens), a directory replaces an empty directory, never into itself.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
        let f = self
            .kind(from)
            .filter(|_| !from.is_empty())
            .ok_or("no such entry")?;
        if to.is_empty() || within(to, from) {
            return Err("into itself".into());
        }
        if !self.is_dir(parent(to)) {
            return Err("no such directory".into());
        }
        match (f, self.kind(to)) {
            (_, None) => {}
            (Kind::Dir, Some(Kind::Dir)) if !self.root.keys().any(|k| parent(k) == to) => {}
            (Kind::File { ino: a }, Some(Kind::File { ino: b })) if a == b => return Ok(()),
            (Kind::File { .. } | Kind::Symlink, Some(Kind::File { .. } | Kind::Symlink)) => {}
            _ => return Err("destination of another kind, or not empty".into()),
        }
        self.root.remove(to);
        let moved = take(&mut self.root, from);
        put(&mut self.root, moved, to);
        Ok(())
    }

    fn new_ino(&mut self) -> u32 {
        self.next_ino += 1;
        self.next_ino
    }

    /// Whether the real tree under `root` (and its `outside` sibling) holds exactly the model's
    /// names with the model's kinds, and the model's hard-link groups are the real ones.
    pub fn check(&self, root: &Path) -> Result<(), String> {
        let mut errors = Vec::new();
        for (model, dir) in [
            (&self.root, root.to_path_buf()),
            (&self.outside, outside_of(root)),
        ] {
            let real = snapshot(&dir);
            let mut inodes: HashMap<u32, u64> = HashMap::new();
            for (p, k) in model {
                let node = real.get(p.as_bytes());
                let same = matches!(
                    (k, node),
                    (Kind::Dir, Some(Node::Dir))
                        | (Kind::File { .. }, Some(Node::File { .. }))
                        | (Kind::Symlink, Some(Node::Symlink(_)))
                );
                if !same {
                    errors.push(format!(
                        "{}: model {k:?}, real {:?}",
                        dir.join(p).display(),
                        node.map(kind_of)
                    ));
                }
                if let (Kind::File { ino }, Ok(m)) = (k, std::fs::symlink_metadata(dir.join(p))) {
                    if *inodes.entry(*ino).or_insert(m.ino()) != m.ino() {
                        errors.push(format!(
                            "{}: not the hard link the model says",
                            dir.join(p).display()
                        ));
                    }
                }
            }
            for p in real.keys() {
                let p = String::from_utf8_lossy(p);
                if !model.contains_key(p.as_ref()) {
                    errors.push(format!(
                        "{}: real, not in the model",
                        dir.join(p.as_ref()).display()
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

fn kind_of(n: &Node) -> &'static str {
    match n {
        Node::Dir => "dir",
        Node::File { .. } => "file",
        Node::Symlink(_) => "symlink",
        Node::Other => "other",
    }
}

/// Remove `from` and everything below it from `tree`; the entries, relative to `from`.
fn take(tree: &mut BTreeMap<String, Kind>, from: &str) -> Vec<(String, Kind)> {
    let keys: Vec<String> = tree.keys().filter(|k| within(k, from)).cloned().collect();
    keys.into_iter()
        .map(|k| {
            let v = tree.remove(&k).expect("listed just before");
            (k[from.len()..].to_string(), v)
        })
        .collect()
}

/// Insert entries taken by [`take`] under `to`.
fn put(tree: &mut BTreeMap<String, Kind>, moved: Vec<(String, Kind)>, to: &str) {
    for (rest, v) in moved {
        tree.insert(format!("{to}{rest}"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_refuses_what_rename_refuses() {
        let mut m = Model::new();
        for line in ["mkdir -p d0/d1", "write d0/f0 1 0x1", "ln d0/f0 f1"] {
            m.apply(&line.parse().unwrap()).unwrap();
        }
        for bad in [
            "mv d0 d0/d1/d2",
            "mv d0/f0 d0/d1",
            "mv d0 f1",
            "rm d0",
            "write d0 1 0x1",
            "mv nothing x",
            "ln -s x d0/f0",
        ] {
            assert!(m.apply(&bad.parse().unwrap()).is_err(), "{bad}");
        }
        // Two names of one file: rename does nothing.
        m.apply(&"mv d0/f0 f1".parse().unwrap()).unwrap();
        assert!(m.kind("d0/f0").is_some() && m.kind("f1").is_some());
        assert!(excluded_tmp(b"d0/x.tmp/f1") && !excluded_tmp(b"d0/tmp"));
    }
}
