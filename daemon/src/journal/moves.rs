//! Renames still to be carried out at a target as moves (tree `moves`):
//! `target_id 0x00 new_path` → [`Move`]. Recorded by the coalescer in the same write as the
//! pending paths of the rename (the old path, everything the index held below it, and the new
//! tree as the watcher walked it), and removed only once the new directory reached the target
//! (or the move was given up for a plain push): while a move is pending, the old directory must
//! stay at the target, since the move's push links its files from there.
//!
//! A file renamed needs no push of its own: its new name goes with the ordinary batches (with
//! `--fuzzy`, which takes the old name, still at the target, as the basis), and its old name
//! waits until the new one is delivered.
//!
//! Chains collapse as they are recorded: `a → b` then `b → c` is the move `a → c` (the target
//! still has `a`, never had `b`), and a rename of a directory below a pending move's new path
//! names the target's old place (`a → b`, then `b/s → t` is `a/s → t`).

use bincode::Options;
use serde::{Deserialize, Serialize};

use super::{key, opts, prefix, Item, Journal, JournalError, Trees};
use crate::fs::{is_prefix_dir, parents};

/// A rename inside one root, as the coalescer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    /// A directory (else a file, or anything else that is not a directory).
    pub dir: bool,
}

/// Where a renamed entry was, as far as the target knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The old path, still at the target.
    pub from: Vec<u8>,
    pub dir: bool,
    /// Bumped at every record: a move recorded again during its push stays (see
    /// [`Journal::move_done`]).
    pub generation: u64,
}

/// A pending move as read for a push: `to` and where it comes from, and the raw value
/// [`Journal::move_done`] compares.
#[derive(Debug, Clone)]
pub struct PendingMove {
    pub to: Vec<u8>,
    pub from: Vec<u8>,
    pub dir: bool,
    raw: sled::IVec,
}

impl PendingMove {
    /// The pending move onto `to` that `m` records (as the journal would read it back).
    pub fn of(to: &[u8], m: &Move) -> PendingMove {
        PendingMove {
            to: to.to_vec(),
            from: m.from.clone(),
            dir: m.dir,
            raw: opts()
                .serialize(m)
                .map(sled::IVec::from)
                .unwrap_or_default(),
        }
    }

    /// A file renamed inside its directory (its old name is a `--fuzzy` basis there).
    pub fn same_dir(&self) -> bool {
        crate::fs::dir_of(&self.to) == crate::fs::dir_of(&self.from)
    }

    /// Whether `other` is this very move (not one recorded since onto the same new path).
    pub fn is(&self, other: &PendingMove) -> bool {
        self.to == other.to && self.raw == other.raw
    }
}

/// Where the moves pending for one target are kept, by new path: the journal's `moves` tree,
/// or a map (the planner's simulation). [`record_rename`] is the one place a rename becomes a
/// move.
pub trait MoveMap {
    fn get(&self, to: &[u8]) -> Result<Option<Move>, JournalError>;
    fn put(&mut self, to: &[u8], m: &Move) -> Result<(), JournalError>;
    fn remove(&mut self, to: &[u8]) -> Result<(), JournalError>;
}

impl MoveMap for std::collections::BTreeMap<Vec<u8>, Move> {
    fn get(&self, to: &[u8]) -> Result<Option<Move>, JournalError> {
        Ok(std::collections::BTreeMap::get(self, to).cloned())
    }
    fn put(&mut self, to: &[u8], m: &Move) -> Result<(), JournalError> {
        self.insert(to.to_vec(), m.clone());
        Ok(())
    }
    fn remove(&mut self, to: &[u8]) -> Result<(), JournalError> {
        std::collections::BTreeMap::remove(self, to);
        Ok(())
    }
}

/// One target's part of the journal's `moves` tree.
struct TargetMoves<'a> {
    tree: &'a sled::Tree,
    target: &'a str,
}

impl MoveMap for TargetMoves<'_> {
    fn get(&self, to: &[u8]) -> Result<Option<Move>, JournalError> {
        match self.tree.get(key(self.target, to))? {
            Some(v) => Ok(Some(opts().deserialize(&v)?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, to: &[u8], m: &Move) -> Result<(), JournalError> {
        self.tree
            .insert(key(self.target, to), opts().serialize(m)?)?;
        Ok(())
    }
    fn remove(&mut self, to: &[u8]) -> Result<(), JournalError> {
        self.tree.remove(key(self.target, to))?;
        Ok(())
    }
}

/// Record the rename `r` in `map`, collapsed onto what the target has: a chain `a → b → c` is
/// the move `a → c`, a rename below a pending move's new path names the target's old place, a
/// rename back where the target has it is no move at all.
pub fn record_rename(
    map: &mut dyn MoveMap,
    r: &Rename,
    generation: u64,
) -> Result<(), JournalError> {
    let from = where_at_target(map, &r.from)?;
    if from == r.to {
        // Renamed back where the target has it: nothing to move.
        return map.remove(&r.to);
    }
    let m = Move {
        from,
        dir: r.dir,
        generation,
    };
    map.put(&r.to, &m)
}

/// Where the target has what the source now calls `path`: below a pending move's new path,
/// it is still below that move's old path (the move consumed when `path` is its new path
/// itself: its directory moves on).
fn where_at_target(map: &mut dyn MoveMap, path: &[u8]) -> Result<Vec<u8>, JournalError> {
    // Deepest first: the closest pending move at or above `path` is the one that names it.
    let above: Vec<&[u8]> = parents(path).collect();
    for to in std::iter::once(path).chain(above.into_iter().rev()) {
        let Some(m) = map.get(to)? else {
            continue;
        };
        let mut from = m.from;
        from.extend_from_slice(&path[to.len()..]);
        if to == path {
            map.remove(to)?;
        }
        return Ok(from);
    }
    Ok(path.to_vec())
}

impl Trees {
    fn record_moves(&self, targets: &[String], moves: &[Rename]) -> Result<(), JournalError> {
        if moves.is_empty() {
            return Ok(());
        }
        let generation = self.db.generate_id()?;
        for t in targets {
            let mut map = TargetMoves {
                tree: &self.moves,
                target: t,
            };
            for r in moves {
                record_rename(&mut map, r, generation)?;
            }
        }
        Ok(())
    }

    fn moves(&self, target: &str) -> Result<Vec<PendingMove>, JournalError> {
        let pfx = prefix(target);
        let mut out = Vec::new();
        for kv in self.moves.scan_prefix(&pfx) {
            let (k, v) = kv?;
            let m: Move = opts().deserialize(&v)?;
            out.push(PendingMove {
                to: k[pfx.len()..].to_vec(),
                from: m.from,
                dir: m.dir,
                raw: v,
            });
        }
        Ok(out)
    }
}

impl Journal {
    /// Record renames inside one root for every target in `targets` (with the pending paths of
    /// the same commit, before its flush).
    pub fn record_moves(&self, targets: &[String], moves: &[Rename]) -> Result<(), JournalError> {
        self.write(|t| t.record_moves(targets, moves))
    }

    /// The moves pending for `target`, in key order.
    pub fn moves(&self, target: &str) -> Result<Vec<PendingMove>, JournalError> {
        self.with(|t| t.moves(target))
    }

    /// The pending entries of `target` at or below `dir`, whatever their retry schedule (a move
    /// pushes them all).
    pub fn pending_below(&self, target: &str, dir: &[u8]) -> Result<Vec<Item>, JournalError> {
        self.with(|t| {
            let pfx = prefix(target);
            let mut out = Vec::new();
            for kv in t.pending.scan_prefix(key(target, dir)) {
                let (k, v) = kv?;
                let path = &k[pfx.len()..];
                if is_prefix_dir(dir, path) {
                    out.push(Item {
                        path: path.to_vec(),
                        entry: opts().deserialize(&v)?,
                        raw: v,
                    });
                }
            }
            Ok(out)
        })
    }

    /// The pending entry of `path` for `target`, if it has one.
    pub fn pending_entry(
        &self,
        target: &str,
        path: &[u8],
    ) -> Result<Option<super::Entry>, JournalError> {
        self.with(|t| match t.pending.get(key(target, path))? {
            Some(v) => Ok(Some(opts().deserialize(&v)?)),
            None => Ok(None),
        })
    }

    /// The move reached the target, or was given up: forgotten, unless it was recorded again
    /// since it was read (a later rename onto the same new path).
    pub fn move_done(&self, target: &str, m: &PendingMove) -> Result<(), JournalError> {
        self.write(|t| {
            let _ = t.moves.compare_and_swap(
                key(target, &m.to),
                Some(&m.raw),
                None as Option<&[u8]>,
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::open;

    const T: &str = "root/t1";

    fn pending(j: &Journal) -> Vec<(String, String)> {
        j.moves(T)
            .unwrap()
            .into_iter()
            .map(|m| {
                (
                    String::from_utf8(m.from).unwrap(),
                    String::from_utf8(m.to).unwrap(),
                )
            })
            .collect()
    }

    fn mv(j: &Journal, from: &str, to: &str) {
        let r = Rename {
            from: from.into(),
            to: to.into(),
            dir: true,
        };
        j.record_moves(&[T.into()], &[r]).unwrap();
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn chains_collapse_to_what_the_target_has() {
        let (_d, j) = open();
        mv(&j, "a", "b");
        mv(&j, "b", "c");
        assert_eq!(pending(&j), pairs(&[("a", "c")]), "a → b → c is a → c");
        mv(&j, "c/sub", "x/y");
        assert_eq!(
            pending(&j),
            pairs(&[("a", "c"), ("a/sub", "x/y")]),
            "below a pending move's new path is below its old path at the target"
        );
        mv(&j, "c", "a");
        assert_eq!(
            pending(&j),
            pairs(&[("a/sub", "x/y")]),
            "renamed back: nothing to move"
        );
    }

    #[test]
    fn swapped_names_move_both_ways() {
        let (_d, j) = open();
        mv(&j, "a", "tmp");
        mv(&j, "b", "a");
        mv(&j, "tmp", "b");
        assert_eq!(pending(&j), pairs(&[("b", "a"), ("a", "b")]));
    }

    #[test]
    fn a_move_recorded_again_during_its_push_stays() {
        let (_d, j) = open();
        mv(&j, "a", "b");
        let read = j.moves(T).unwrap();
        mv(&j, "z", "b");
        j.move_done(T, &read[0]).unwrap();
        assert_eq!(pending(&j), pairs(&[("z", "b")]));
        let read = j.moves(T).unwrap();
        j.move_done(T, &read[0]).unwrap();
        assert!(pending(&j).is_empty());
        assert!(j.moves("root/other").unwrap().is_empty());
    }
}
