//! One operation of the fuzzer on the source tree: what it does (`Op::apply`) and how it reads
//! (`Display`: a shell-like line, `mv d1/f2 d3/f5`, that `FromStr` parses back, so a failing
//! round printed by a test can be replayed by the example).
//!
//! Paths are relative to the source root, `/`-separated, never through a symlink (the generator
//! makes sure). `../outside/NAME` names an entry of the sibling directory `outside` next to the
//! root, where directories moved out of the root wait to be moved back in.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::content;

/// One file-system operation, relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the file, or overwrite it in place (every hard link of it sees the new content).
    Write { path: String, len: u32, seed: u64 },
    /// Overwrite every byte in place, keeping the size (rsync's quick check alone misses it).
    Scramble { path: String, seed: u64 },
    /// Append `len` bytes.
    Append { path: String, len: u32, seed: u64 },
    /// Cut or extend the file to `len` bytes.
    Truncate { path: String, len: u32 },
    /// Set the permission bits of a file or directory.
    Chmod { path: String, mode: u32 },
    /// Remove a file or a symlink.
    Remove { path: String },
    /// Remove a directory and everything below it.
    RemoveTree { path: String },
    /// Create the directory and its missing parents.
    Mkdir { path: String },
    /// rename(2) inside the root (over an existing file, or an empty directory, replaces it).
    Rename { from: String, to: String },
    /// Move an entry out of the root, to `../outside/stash`.
    MoveOut { from: String, stash: String },
    /// Move `../outside/stash` into the root.
    MoveIn { stash: String, to: String },
    /// Create a symlink.
    Symlink { target: String, path: String },
    /// Point an existing symlink elsewhere (unlink, then symlink: `ln -sfn`).
    Relink { target: String, path: String },
    /// Add a hard link `to` of the file `from`.
    HardLink { from: String, to: String },
    /// Not a change: the harness waits (with a deadline) until the file at `path` is being
    /// pushed, so the next operation happens while its push is in flight.
    AwaitPush { path: String },
}

/// The directory next to `root` that entries are moved out to and back in from.
pub fn outside_of(root: &Path) -> PathBuf {
    root.parent()
        .expect("the source root has a parent")
        .join("outside")
}

impl Op {
    /// Do it under `root` (and its `outside` sibling).
    pub fn apply(&self, root: &Path) -> std::io::Result<()> {
        let at = |p: &str| root.join(p);
        match self {
            Op::Write { path, len, seed } => {
                std::fs::write(at(path), content(*len as usize, *seed))
            }
            Op::Scramble { path, seed } => {
                let len = std::fs::symlink_metadata(at(path))?.len();
                let mut f = std::fs::OpenOptions::new().write(true).open(at(path))?;
                f.write_all(&content(len as usize, *seed))
            }
            Op::Append { path, len, seed } => std::fs::OpenOptions::new()
                .append(true)
                .open(at(path))?
                .write_all(&content(*len as usize, *seed)),
            Op::Truncate { path, len } => std::fs::OpenOptions::new()
                .write(true)
                .open(at(path))?
                .set_len(u64::from(*len)),
            Op::Chmod { path, mode } => {
                std::fs::set_permissions(at(path), std::fs::Permissions::from_mode(*mode))
            }
            Op::Remove { path } => std::fs::remove_file(at(path)),
            Op::RemoveTree { path } => std::fs::remove_dir_all(at(path)),
            Op::Mkdir { path } => std::fs::create_dir_all(at(path)),
            Op::Rename { from, to } => std::fs::rename(at(from), at(to)),
            Op::MoveOut { from, stash } => {
                let out = outside_of(root);
                std::fs::create_dir_all(&out)?;
                std::fs::rename(at(from), out.join(stash))
            }
            Op::MoveIn { stash, to } => std::fs::rename(outside_of(root).join(stash), at(to)),
            Op::Symlink { target, path } => std::os::unix::fs::symlink(target, at(path)),
            Op::Relink { target, path } => {
                std::fs::remove_file(at(path))?;
                std::os::unix::fs::symlink(target, at(path))
            }
            Op::HardLink { from, to } => std::fs::hard_link(at(from), at(to)),
            Op::AwaitPush { .. } => Ok(()),
        }
    }

    /// The kind of operation, for counts ("mv", "write", "ln -s"…).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::Scramble { .. } => "scramble",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Chmod { .. } => "chmod",
            Op::Remove { .. } => "rm",
            Op::RemoveTree { .. } => "rm -rf",
            Op::Mkdir { .. } => "mkdir -p",
            Op::Rename { .. } => "mv",
            Op::MoveOut { .. } => "mv out",
            Op::MoveIn { .. } => "mv in",
            Op::Symlink { .. } => "ln -s",
            Op::Relink { .. } => "ln -sfn",
            Op::HardLink { .. } => "ln",
            Op::AwaitPush { .. } => "await-push",
        }
    }
}

/// The prefix of a path in the `outside` directory, as printed.
const OUTSIDE: &str = "../outside/";

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write { path, len, seed } => write!(f, "write {path} {len} {seed:#x}"),
            Op::Scramble { path, seed } => write!(f, "scramble {path} {seed:#x}"),
            Op::Append { path, len, seed } => write!(f, "append {path} {len} {seed:#x}"),
            Op::Truncate { path, len } => write!(f, "truncate -s {len} {path}"),
            Op::Chmod { path, mode } => write!(f, "chmod {mode:04o} {path}"),
            Op::Remove { path } => write!(f, "rm {path}"),
            Op::RemoveTree { path } => write!(f, "rm -rf {path}"),
            Op::Mkdir { path } => write!(f, "mkdir -p {path}"),
            Op::Rename { from, to } => write!(f, "mv {from} {to}"),
            Op::MoveOut { from, stash } => write!(f, "mv {from} {OUTSIDE}{stash}"),
            Op::MoveIn { stash, to } => write!(f, "mv {OUTSIDE}{stash} {to}"),
            Op::Symlink { target, path } => write!(f, "ln -s {target} {path}"),
            Op::Relink { target, path } => write!(f, "ln -sfn {target} {path}"),
            Op::HardLink { from, to } => write!(f, "ln {from} {to}"),
            Op::AwaitPush { path } => write!(f, "await-push {path}"),
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    /// The line `Display` prints (names never hold spaces).
    fn from_str(line: &str) -> Result<Op, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let s = |i: usize| -> Result<String, String> {
            w.get(i)
                .map(|x| x.to_string())
                .ok_or_else(|| format!("{line:?}: word {} missing", i + 1))
        };
        let num = |i: usize| -> Result<u64, String> {
            let x = s(i)?;
            let r = match x.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => x.parse(),
            };
            r.map_err(|e| format!("{line:?}: {x:?}: {e}"))
        };
        let len = |i: usize| -> Result<u32, String> {
            u32::try_from(num(i)?).map_err(|e| format!("{line:?}: {e}"))
        };
        let outside = |p: &str| p.strip_prefix(OUTSIDE).map(str::to_string);
        let op = match (w.first().copied(), w.get(1).copied()) {
            (Some("write"), _) => Op::Write {
                path: s(1)?,
                len: len(2)?,
                seed: num(3)?,
            },
            (Some("scramble"), _) => Op::Scramble {
                path: s(1)?,
                seed: num(2)?,
            },
            (Some("append"), _) => Op::Append {
                path: s(1)?,
                len: len(2)?,
                seed: num(3)?,
            },
            (Some("truncate"), Some("-s")) => Op::Truncate {
                len: len(2)?,
                path: s(3)?,
            },
            (Some("chmod"), _) => Op::Chmod {
                mode: u32::from_str_radix(&s(1)?, 8).map_err(|e| format!("{line:?}: {e}"))?,
                path: s(2)?,
            },
            (Some("rm"), Some("-rf")) => Op::RemoveTree { path: s(2)? },
            (Some("rm"), _) => Op::Remove { path: s(1)? },
            (Some("mkdir"), Some("-p")) => Op::Mkdir { path: s(2)? },
            (Some("mv"), _) => match (outside(&s(1)?), outside(&s(2)?)) {
                (None, None) => Op::Rename {
                    from: s(1)?,
                    to: s(2)?,
                },
                (None, Some(stash)) => Op::MoveOut { from: s(1)?, stash },
                (Some(stash), None) => Op::MoveIn { stash, to: s(2)? },
                (Some(_), Some(_)) => return Err(format!("{line:?}: both outside the root")),
            },
            (Some("ln"), Some("-s")) => Op::Symlink {
                target: s(2)?,
                path: s(3)?,
            },
            (Some("ln"), Some("-sfn")) => Op::Relink {
                target: s(2)?,
                path: s(3)?,
            },
            (Some("ln"), _) => Op::HardLink {
                from: s(1)?,
                to: s(2)?,
            },
            (Some("await-push"), _) => Op::AwaitPush { path: s(1)? },
            _ => return Err(format!("{line:?}: not an operation")),
        };
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Op> {
        let p = |s: &str| s.to_string();
        vec![
            Op::Write {
                path: p("d1/f2"),
                len: 4711,
                seed: 0xabc,
            },
            Op::Scramble {
                path: p("f0"),
                seed: 7,
            },
            Op::Append {
                path: p("f0"),
                len: 0,
                seed: 1,
            },
            Op::Truncate {
                path: p("d0/f1"),
                len: 12,
            },
            Op::Chmod {
                path: p("d0"),
                mode: 0o700,
            },
            Op::Remove { path: p("l0") },
            Op::RemoveTree { path: p("d2/d0") },
            Op::Mkdir {
                path: p("d0/d1/d2"),
            },
            Op::Rename {
                from: p("d1/f2"),
                to: p("d3/f5"),
            },
            Op::MoveOut {
                from: p("d1"),
                stash: p("o3"),
            },
            Op::MoveIn {
                stash: p("o3"),
                to: p("d2/d1"),
            },
            Op::Symlink {
                target: p("../f1"),
                path: p("d0/l1"),
            },
            Op::Relink {
                target: p("d0/f1"),
                path: p("l2"),
            },
            Op::HardLink {
                from: p("f0"),
                to: p("d1/f4"),
            },
            Op::AwaitPush { path: p("d1/b0") },
        ]
    }

    #[test]
    fn every_operation_prints_as_a_line_that_parses_back() {
        for op in every_kind() {
            let line = op.to_string();
            assert_eq!(line.parse::<Op>(), Ok(op.clone()), "{line}");
        }
        assert_eq!(
            every_kind()[8].to_string(),
            "mv d1/f2 d3/f5",
            "shell-like, as the brief of a failure reads"
        );
        assert!("frobnicate x".parse::<Op>().is_err());
        assert!("mv a".parse::<Op>().is_err());
    }

    #[test]
    fn operations_do_what_they_say_on_a_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let run = |line: &str| line.parse::<Op>().unwrap().apply(&root).unwrap();
        run("mkdir -p d0/d1");
        run("write d0/f0 100 0x1");
        assert_eq!(std::fs::read(root.join("d0/f0")).unwrap(), content(100, 1));
        run("scramble d0/f0 0x2");
        assert_eq!(std::fs::read(root.join("d0/f0")).unwrap(), content(100, 2));
        run("append d0/f0 10 0x3");
        run("truncate -s 5 d0/f0");
        assert_eq!(std::fs::read(root.join("d0/f0")).unwrap(), content(5, 2));
        run("ln d0/f0 f1");
        run("write f1 3 0x4");
        assert_eq!(std::fs::read(root.join("d0/f0")).unwrap(), content(3, 4));
        run("chmod 0600 f1");
        let mode = std::fs::metadata(root.join("d0/f0"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        run("ln -s ../f1 d0/l0");
        run("ln -sfn d1 d0/l0");
        assert_eq!(
            std::fs::read_link(root.join("d0/l0")).unwrap(),
            Path::new("d1")
        );
        run("mv d0 d2");
        run("mv d2 ../outside/o0");
        assert!(outside_of(&root).join("o0/d1").is_dir());
        run("mv ../outside/o0 d3");
        run("rm d3/l0");
        run("rm -rf d3");
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["f1"]);
    }
}
