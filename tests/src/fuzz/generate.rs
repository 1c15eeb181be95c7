//! The rounds: generated from a seed and a round number on the namespace the earlier rounds
//! left (`Round::generate`), printed as a script and parsed back.
//!
//! The namespace is small on purpose, so operations collide: directories `d0`..`d3` at most
//! three deep (four after a move), files `f0`..`f5`, symlinks `l0`..`l2` and big files
//! `b0`..`b2` in each, temporary names `t`, and `NAME.tmp` (the excluded pattern). An action
//! (a swap, a file replaced by a directory…) is one to five operations in a row; each round
//! holds one write of a big file whose push is awaited while its directory is renamed.

use std::collections::BTreeSet;

use super::model::{depth, join, parent, within};
use super::{excluded_tmp, Kind, Model, Op, Rng, EXCLUDED_SUFFIX};

/// Directory names at each level.
const DIRS: [&str; 4] = ["d0", "d1", "d2", "d3"];
/// File names in each directory.
const FILES: [&str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];
/// Symlink names in each directory.
const LINKS: [&str; 3] = ["l0", "l1", "l2"];
/// Names of the big files pushed while their directory is renamed.
const BIGS: [&str; 3] = ["b0", "b1", "b2"];
/// Directories at most this deep are created (`d0/d1/d2`).
const MAX_DEPTH: usize = 3;
/// A directory moved may end up this deep.
const MAX_MOVED_DEPTH: usize = 4;

/// One round: operations applied one after another with no wait between them, then the
/// target must converge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub ops: Vec<Op>,
}

impl Round {
    /// Round `index` of `seed`, on `model` (the namespace the earlier rounds of the seed left),
    /// which it updates: about `n` operations, one of them a push in flight while its
    /// directory is renamed.
    pub fn generate(seed: u64, index: u32, model: &mut Model, n: usize) -> Round {
        let mut g = Gen {
            rng: Rng::new(seed, u64::from(index)),
            start_dirs: model
                .root
                .iter()
                .filter(|(_, k)| **k == Kind::Dir)
                .map(|(p, _)| p.clone())
                .collect(),
            model: std::mem::take(model),
            ops: Vec::new(),
            linked: BTreeSet::new(),
        };
        let in_flight_at = g.rng.below(n.max(1));
        let mut in_flight_done = false;
        while g.ops.len() < n || !in_flight_done {
            if !in_flight_done && g.ops.len() >= in_flight_at {
                in_flight_done = g.push_in_flight();
            }
            if g.ops.len() < n || !in_flight_done {
                g.action();
            }
        }
        *model = g.model;
        Round { ops: g.ops }
    }

    /// The rounds 0..`rounds` of `seed` from an empty source.
    pub fn all(seed: u64, rounds: u32, n: usize) -> Vec<Round> {
        let mut model = Model::new();
        (0..rounds)
            .map(|r| Round::generate(seed, r, &mut model, n))
            .collect()
    }

    /// Rounds printed as `# round N` headers and one operation per line; [`Round::parse`] reads
    /// them back.
    pub fn script(rounds: &[Round]) -> String {
        let mut out = String::new();
        for (i, r) in rounds.iter().enumerate() {
            out.push_str(&format!("# round {i}\n"));
            for op in &r.ops {
                out.push_str(&format!("{op}\n"));
            }
        }
        out
    }

    /// Rounds from a [`Round::script`]: a `# round` line starts one; other `#` lines and blank
    /// lines are skipped.
    pub fn parse(text: &str) -> Result<Vec<Round>, String> {
        let mut rounds: Vec<Round> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("# round") {
                rounds.push(Round::default());
            } else if !line.is_empty() && !line.starts_with('#') {
                if rounds.is_empty() {
                    rounds.push(Round::default());
                }
                rounds
                    .last_mut()
                    .expect("pushed above")
                    .ops
                    .push(line.parse()?);
            }
        }
        Ok(rounds)
    }
}

/// The generator of one round: picks an action, emits its operations, keeps the model current.
struct Gen {
    rng: Rng,
    /// Taken from the caller for the round, given back at its end.
    model: Model,
    ops: Vec<Op>,
    /// Directories there at the start of the round (so already at the target).
    start_dirs: BTreeSet<String>,
    /// Files given another name this round (see [`Gen::change_seen`]).
    linked: BTreeSet<u32>,
}

/// An action: emits its operations and says true, or false when it does not apply now.
type Action = fn(&mut Gen) -> bool;

/// The actions with their weights.
const ACTIONS: &[(u32, Action)] = &[
    (14, Gen::write_file),
    (5, Gen::rewrite_file),
    (4, Gen::scramble),
    (4, Gen::append),
    (3, Gen::truncate),
    (3, Gen::chmod_file),
    (2, Gen::chmod_dir),
    (4, Gen::remove),
    (2, Gen::remove_tree),
    (5, Gen::mkdir),
    (4, Gen::rename_in_dir),
    (4, Gen::rename_across),
    (2, Gen::swap_files),
    (2, Gen::cycle_files),
    (2, Gen::swap_dirs),
    (3, Gen::rename_dir_then_write),
    (2, Gen::rename_and_recreate),
    (2, Gen::move_out_and_in),
    (2, Gen::file_to_dir),
    (2, Gen::dir_to_file),
    (3, Gen::symlink),
    (2, Gen::relink),
    (1, Gen::symlink_to_file),
    (2, Gen::hard_link),
    (2, Gen::hide_under_an_excluded_name),
    (1, Gen::out_of_excluded),
    (2, Gen::save_through_excluded),
];

impl Gen {
    fn push(&mut self, op: Op) {
        if let Op::HardLink { from, .. } = &op {
            if let Some(Kind::File { ino }) = self.model.kind(from) {
                self.linked.insert(ino);
            }
        }
        if let Err(e) = self.model.apply(&op) {
            panic!("fuzz generator bug: it emitted an operation invalid on its model: {e}");
        }
        self.ops.push(op);
    }

    /// One action drawn by weight (tried again with another when it does not apply).
    fn action(&mut self) {
        let total: u32 = ACTIONS.iter().map(|(w, _)| w).sum();
        for _ in 0..20 {
            let mut x = self.rng.below(total as usize) as u32;
            for (w, act) in ACTIONS {
                if x < *w {
                    if act(self) {
                        return;
                    }
                    break;
                }
                x -= w;
            }
        }
        // Nothing applied twenty times (an empty tree): creating always does.
        let d = self.dir();
        self.mkdir_at(&d);
    }

    fn paths(&self, pred: impl Fn(&str, Kind) -> bool) -> Vec<String> {
        self.model
            .root
            .iter()
            .filter(|(p, k)| pred(p, **k))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn files(&self) -> Vec<String> {
        self.paths(|_, k| matches!(k, Kind::File { .. }))
    }

    /// Whether a change of a file's content or mode made through `path` reaches syncd for
    /// every name of the file. Not where inotify cannot tell (docs/reliability.md, "not
    /// covered"): when the file has another name and `path` is under an excluded name (not
    /// watched: no event at all, seed 86), or when the file got a name this round (syncd may
    /// not have read that name yet; removed before it does, nothing tells which file it was:
    /// seed 2239). Writes through hard links made in earlier rounds are generated.
    fn change_seen(&self, path: &str) -> bool {
        let Some(Kind::File { ino }) = self.model.kind(path) else {
            return true;
        };
        let names = self
            .model
            .root
            .values()
            .filter(|k| **k == Kind::File { ino })
            .count();
        names < 2 || !(excluded_tmp(path.as_bytes()) || self.linked.contains(&ino))
    }

    /// Files whose content or mode may change now (see [`Gen::change_seen`]).
    fn changeable_files(&self) -> Vec<String> {
        let mut all = self.files();
        all.retain(|p| self.change_seen(p));
        all
    }

    /// Whether a file may be written at `path`: nothing there, or a file whose change is seen.
    fn writable(&self, path: &str) -> bool {
        match self.model.kind(path) {
            None => true,
            Some(Kind::File { .. }) => self.change_seen(path),
            Some(_) => false,
        }
    }

    /// Directories other than the root.
    fn subdirs(&self) -> Vec<String> {
        self.paths(|_, k| k == Kind::Dir)
    }

    /// A directory, the root included.
    fn dir(&mut self) -> String {
        let mut all = self.subdirs();
        all.push(String::new());
        self.rng.pick(&all).expect("the root at least")
    }

    /// A name from `pool` in `dir` that nothing has.
    fn free(&mut self, dir: &str, pool: &[&str]) -> Option<String> {
        let start = self.rng.below(pool.len());
        (0..pool.len())
            .map(|i| join(dir, pool[(start + i) % pool.len()]))
            .find(|p| self.model.kind(p).is_none())
    }

    /// A file name from `FILES` in `dir`, there or not.
    fn file_in(&mut self, dir: &str) -> String {
        join(dir, FILES[self.rng.below(FILES.len())])
    }

    /// Write a file named from `FILES` in `dir`, unless that name cannot take it now.
    fn write_in(&mut self, dir: &str) {
        let f = self.file_in(dir);
        if self.writable(&f) {
            self.write(&f);
        }
    }

    /// A path in some directory where a file can be written (nothing there, or a file).
    fn file_slot(&mut self) -> Option<String> {
        for _ in 0..5 {
            let d = self.dir();
            let p = self.file_in(&d);
            if self.writable(&p) {
                return Some(p);
            }
        }
        None
    }

    fn size(&mut self) -> u32 {
        let max = match self.rng.below(100) {
            0..=9 => 0,
            10..=39 => 255,
            40..=74 => 8 << 10,
            _ => 64 << 10,
        };
        self.rng.range(0, max) as u32
    }

    fn seed(&mut self) -> u64 {
        self.rng.next_u64() & 0xffff_ffff
    }

    fn write(&mut self, path: &str) {
        let (len, seed) = (self.size(), self.seed());
        self.push(Op::Write {
            path: path.to_string(),
            len,
            seed,
        });
    }

    /// Height of the directory tree at `path` (1 for a directory with no subdirectory, 0 for
    /// anything else).
    fn height(&self, path: &str) -> usize {
        if !self.model.is_dir(path) {
            return 0;
        }
        self.model
            .root
            .iter()
            .filter(|(p, k)| **k == Kind::Dir && within(p, path))
            .map(|(p, _)| depth(p) - depth(path) + 1)
            .max()
            .unwrap_or(1)
    }

    /// A place for the directory `from` (or a stash of `height`): a free name in a directory
    /// not below it, not too deep.
    fn dir_dest(&mut self, from: Option<&str>, height: usize) -> Option<String> {
        for _ in 0..5 {
            let d = self.dir();
            if from.is_some_and(|f| within(&d, f)) || depth(&d) + height > MAX_MOVED_DEPTH {
                continue;
            }
            if let Some(p) = self.free(&d, &DIRS) {
                return Some(p);
            }
        }
        None
    }

    fn write_file(&mut self) -> bool {
        let Some(p) = self.file_slot() else {
            return false;
        };
        self.write(&p);
        true
    }

    fn rewrite_file(&mut self) -> bool {
        let Some(p) = self.rng.pick(&self.changeable_files()) else {
            return false;
        };
        self.write(&p);
        true
    }

    fn scramble(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.changeable_files()) else {
            return false;
        };
        let seed = self.seed();
        self.push(Op::Scramble { path, seed });
        true
    }

    fn append(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.changeable_files()) else {
            return false;
        };
        let (len, seed) = (self.size() / 4 + 1, self.seed());
        self.push(Op::Append { path, len, seed });
        true
    }

    fn truncate(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.changeable_files()) else {
            return false;
        };
        let len = self.size() / 2;
        self.push(Op::Truncate { path, len });
        true
    }

    fn chmod_file(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.changeable_files()) else {
            return false;
        };
        let mode = self
            .rng
            .pick(&[0o644, 0o600, 0o755, 0o640, 0o444, 0o700, 0o664])
            .expect("modes");
        self.push(Op::Chmod { path, mode });
        true
    }

    fn chmod_dir(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.subdirs()) else {
            return false;
        };
        let mode = self
            .rng
            .pick(&[0o755, 0o700, 0o750, 0o775, 0o555, 0o711])
            .expect("modes");
        self.push(Op::Chmod { path, mode });
        true
    }

    /// rm of a file (maybe one name of several hard links) or a symlink.
    fn remove(&mut self) -> bool {
        let all = self.paths(|_, k| k != Kind::Dir);
        let Some(path) = self.rng.pick(&all) else {
            return false;
        };
        self.push(Op::Remove { path });
        true
    }

    fn remove_tree(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.subdirs()) else {
            return false;
        };
        self.push(Op::RemoveTree { path });
        true
    }

    fn mkdir(&mut self) -> bool {
        let d = self.dir();
        self.mkdir_at(&d)
    }

    /// mkdir -p of one to three new levels below `d`, then maybe a file in it.
    fn mkdir_at(&mut self, d: &str) -> bool {
        let mut path = d.to_string();
        for _ in 0..self.rng.range(1, 3) {
            if depth(&path) >= MAX_DEPTH {
                break;
            }
            let next = join(&path, DIRS[self.rng.below(DIRS.len())]);
            if !matches!(self.model.kind(&next), None | Some(Kind::Dir)) {
                break;
            }
            path = next;
        }
        if path == d {
            return false;
        }
        self.push(Op::Mkdir { path: path.clone() });
        if self.rng.chance(60) {
            self.write_in(&path);
        }
        true
    }

    /// mv of a file to another name in its directory (free, or a file it replaces).
    fn rename_in_dir(&mut self) -> bool {
        let Some(from) = self.rng.pick(&self.files()) else {
            return false;
        };
        let to = self.file_in(parent(&from));
        self.rename_file(from, to)
    }

    /// mv of a file into another directory (free name, or over a file).
    fn rename_across(&mut self) -> bool {
        let Some(from) = self.rng.pick(&self.files()) else {
            return false;
        };
        let Some(to) = self.file_slot() else {
            return false;
        };
        if parent(&to) == parent(&from) {
            return false;
        }
        self.rename_file(from, to)
    }

    fn rename_file(&mut self, from: String, to: String) -> bool {
        if from == to || !matches!(self.model.kind(&to), None | Some(Kind::File { .. })) {
            return false;
        }
        self.push(Op::Rename { from, to });
        true
    }

    /// Two distinct files, then a temporary name free in the first one's directory.
    fn files_and_temp(&mut self, n: usize) -> Option<(Vec<String>, String)> {
        let mut files = self.files();
        if files.len() < n {
            return None;
        }
        let mut picked = Vec::new();
        for _ in 0..n {
            let i = self.rng.below(files.len());
            picked.push(files.swap_remove(i));
        }
        let t = join(parent(&picked[0]), "t");
        self.model.kind(&t).is_none().then_some((picked, t))
    }

    /// mv a t; mv b a; mv t b.
    fn swap_files(&mut self) -> bool {
        let Some((f, t)) = self.files_and_temp(2) else {
            return false;
        };
        let (a, b) = (&f[0], &f[1]);
        for (from, to) in [(a, &t), (b, a), (&t, b)] {
            self.push(Op::Rename {
                from: from.clone(),
                to: to.clone(),
            });
        }
        true
    }

    /// mv a t; mv c a; mv b c; mv t b: three files change places.
    fn cycle_files(&mut self) -> bool {
        let Some((f, t)) = self.files_and_temp(3) else {
            return false;
        };
        let (a, b, c) = (&f[0], &f[1], &f[2]);
        for (from, to) in [(a, &t), (c, a), (b, c), (&t, b)] {
            self.push(Op::Rename {
                from: from.clone(),
                to: to.clone(),
            });
        }
        true
    }

    /// Two directories, neither below the other, change places through a temporary name.
    fn swap_dirs(&mut self) -> bool {
        let dirs = self.subdirs();
        let (Some(a), Some(b)) = (self.rng.pick(&dirs), self.rng.pick(&dirs)) else {
            return false;
        };
        if within(&a, &b) || within(&b, &a) {
            return false;
        }
        let t = join(parent(&a), "t");
        let fits = depth(parent(&a)) + self.height(&b) <= MAX_MOVED_DEPTH
            && depth(parent(&b)) + self.height(&a) <= MAX_MOVED_DEPTH;
        if !fits || self.model.kind(&t).is_some() {
            return false;
        }
        for (from, to) in [(&a, &t), (&b, &a), (&t, &b)] {
            self.push(Op::Rename {
                from: from.clone(),
                to: to.clone(),
            });
        }
        true
    }

    /// mv D E, then a write into E (its old file or a new one).
    fn rename_dir_then_write(&mut self) -> bool {
        let Some(from) = self.rng.pick(&self.subdirs()) else {
            return false;
        };
        let h = self.height(&from);
        let Some(to) = self.dir_dest(Some(&from), h) else {
            return false;
        };
        self.push(Op::Rename {
            from,
            to: to.clone(),
        });
        self.write_in(&to);
        true
    }

    /// mv f g; write f.
    fn rename_and_recreate(&mut self) -> bool {
        let Some(from) = self.rng.pick(&self.files()) else {
            return false;
        };
        let Some(to) = self.file_slot() else {
            return false;
        };
        if !self.rename_file(from.clone(), to) {
            return false;
        }
        self.write(&from);
        true
    }

    /// A directory moved out of the root, and one waiting outside moved back in.
    fn move_out_and_in(&mut self) -> bool {
        let mut did = false;
        if let Some(from) = self.rng.pick(&self.subdirs()) {
            if self.rng.chance(70) {
                let stash = format!("o{}", self.model.next_stash);
                self.model.next_stash += 1;
                self.push(Op::MoveOut { from, stash });
                did = true;
            }
        }
        let stashes: Vec<String> = self
            .model
            .outside
            .keys()
            .filter(|k| !k.contains('/'))
            .cloned()
            .collect();
        if let Some(stash) = self.rng.pick(&stashes) {
            let h = (self.model.outside.iter())
                .filter(|(k, v)| **v == Kind::Dir && within(k, &stash))
                .map(|(k, _)| depth(k))
                .max()
                .unwrap_or(1);
            if let Some(to) = self.dir_dest(None, h) {
                self.push(Op::MoveIn { stash, to });
                did = true;
            }
        }
        did
    }

    /// rm f; mkdir f; files moved into it.
    fn file_to_dir(&mut self) -> bool {
        let Some(f) = self.rng.pick(&self.files()) else {
            return false;
        };
        if depth(&f) > MAX_DEPTH {
            return false;
        }
        self.push(Op::Remove { path: f.clone() });
        self.push(Op::Mkdir { path: f.clone() });
        for _ in 0..self.rng.range(1, 2) {
            if let Some(g) = self.rng.pick(&self.files()) {
                let to = self.file_in(&f);
                self.rename_file(g, to);
            }
        }
        true
    }

    /// rm -rf d; write d.
    fn dir_to_file(&mut self) -> bool {
        let Some(d) = self.rng.pick(&self.subdirs()) else {
            return false;
        };
        self.push(Op::RemoveTree { path: d.clone() });
        self.write(&d);
        true
    }

    /// A relative target from the directory `dir` to some path of the root (there or not):
    /// normalized, `..` only leading and never above the root.
    fn link_target(&mut self, dir: &str) -> Option<String> {
        let mut all: Vec<String> = self.model.root.keys().cloned().collect();
        let d = self.dir();
        all.push(self.file_in(&d));
        let to = self.rng.pick(&all)?;
        let (a, b): (Vec<&str>, Vec<&str>) = (
            dir.split('/').filter(|c| !c.is_empty()).collect(),
            to.split('/').collect(),
        );
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        if common == b.len() {
            // `to` is the link's directory or above it: the target would be empty or only `..`.
            return None;
        }
        let mut parts = vec![".."; a.len() - common];
        parts.extend(&b[common..]);
        Some(parts.join("/"))
    }

    fn symlink(&mut self) -> bool {
        let d = self.dir();
        let Some(path) = self.free(&d, &LINKS) else {
            return false;
        };
        let Some(target) = self.link_target(&d) else {
            return false;
        };
        self.push(Op::Symlink { target, path });
        true
    }

    fn relink(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.paths(|_, k| k == Kind::Symlink)) else {
            return false;
        };
        let Some(target) = self.link_target(parent(&path)) else {
            return false;
        };
        self.push(Op::Relink { target, path });
        true
    }

    fn symlink_to_file(&mut self) -> bool {
        let Some(path) = self.rng.pick(&self.paths(|_, k| k == Kind::Symlink)) else {
            return false;
        };
        self.push(Op::Remove { path: path.clone() });
        self.write(&path);
        true
    }

    fn hard_link(&mut self) -> bool {
        let Some(from) = self.rng.pick(&self.files()) else {
            return false;
        };
        let d = self.dir();
        let Some(to) = self.free(&d, &FILES) else {
            return false;
        };
        self.push(Op::HardLink { from, to });
        true
    }

    /// mv X X.tmp (out of replication), maybe a write in there, then often out again.
    fn hide_under_an_excluded_name(&mut self) -> bool {
        let all = self.paths(|p, k| k != Kind::Symlink && !excluded_tmp(p.as_bytes()));
        let Some(x) = self.rng.pick(&all) else {
            return false;
        };
        let hidden = format!("{x}{EXCLUDED_SUFFIX}");
        if self.model.kind(&hidden).is_some() {
            return false;
        }
        self.push(Op::Rename {
            from: x.clone(),
            to: hidden.clone(),
        });
        if self.rng.chance(50) {
            match self.model.kind(&hidden) {
                Some(Kind::Dir) => {
                    let f = join(&hidden, "f0");
                    if self.writable(&f) {
                        self.write(&f);
                    }
                }
                _ if !self.change_seen(&hidden) => {}
                _ => {
                    let seed = self.seed();
                    self.push(Op::Append {
                        path: hidden.clone(),
                        len: 100,
                        seed,
                    });
                }
            }
        }
        if self.rng.chance(60) && self.model.kind(&x).is_none() {
            self.push(Op::Rename {
                from: hidden,
                to: x,
            });
        }
        true
    }

    /// An entry left under an excluded name moved back to a replicated one.
    fn out_of_excluded(&mut self) -> bool {
        let all =
            self.paths(|p, _| p.ends_with(EXCLUDED_SUFFIX) && !excluded_tmp(parent(p).as_bytes()));
        let Some(from) = self.rng.pick(&all) else {
            return false;
        };
        let to = from.trim_end_matches(EXCLUDED_SUFFIX).to_string();
        if self.model.kind(&to).is_some() {
            return false;
        }
        self.push(Op::Rename { from, to });
        true
    }

    /// An editor's save: write f.tmp (excluded), mv f.tmp f.
    fn save_through_excluded(&mut self) -> bool {
        let Some(f) = self.file_slot() else {
            return false;
        };
        let t = format!("{f}{EXCLUDED_SUFFIX}");
        if !self.writable(&t) {
            return false;
        }
        self.write(&t);
        self.push(Op::Rename { from: t, to: f });
        true
    }

    /// A 2-8 MiB file written into a directory the target already has, the harness waits until
    /// its push is under way, and the directory is renamed at once (then written into).
    fn push_in_flight(&mut self) -> bool {
        let dirs: Vec<String> = self
            .start_dirs
            .iter()
            .filter(|d| self.model.is_dir(d) && !excluded_tmp(d.as_bytes()))
            .cloned()
            .collect();
        let d = self.rng.pick(&dirs).unwrap_or_default();
        let big = join(&d, BIGS[self.rng.below(BIGS.len())]);
        if !matches!(self.model.kind(&big), None | Some(Kind::File { .. })) {
            return false;
        }
        let len = self.rng.range(2 << 20, 8 << 20) as u32;
        let seed = self.seed();
        self.push(Op::Write {
            path: big.clone(),
            len,
            seed,
        });
        self.push(Op::AwaitPush { path: big.clone() });
        if d.is_empty() {
            // Nothing to rename but the file itself.
            if let Some(to) = self.free("", &BIGS) {
                self.push(Op::Rename { from: big, to });
            }
            return true;
        }
        let h = self.height(&d);
        if let Some(to) = self.dir_dest(Some(&d), h) {
            self.push(Op::Rename {
                from: d,
                to: to.clone(),
            });
            if self.rng.chance(50) {
                self.write_in(&to);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_seed_generates_the_same_rounds_every_time() {
        assert_eq!(Round::all(11, 4, 25), Round::all(11, 4, 25));
        assert_ne!(Round::all(11, 4, 25), Round::all(12, 4, 25));
    }

    #[test]
    fn rounds_print_as_a_script_that_parses_back() {
        let rounds = Round::all(5, 3, 25);
        assert_eq!(Round::parse(&Round::script(&rounds)), Ok(rounds));
    }

    /// No file's content or mode is changed where inotify cannot tell syncd of every name
    /// (`Gen::change_seen`): through a name under an excluded one while the file has another,
    /// or of a file given another name in the same round. Writes through hard links made in an
    /// earlier round still happen.
    #[test]
    fn no_change_is_generated_that_inotify_cannot_tell() {
        let mut through_old_links = 0;
        for seed in 1..=300 {
            let mut model = Model::new();
            for r in 0..3 {
                let before = model.clone();
                let round = Round::generate(seed, r, &mut model, 25);
                let mut m = before;
                let mut linked = BTreeSet::new();
                for op in &round.ops {
                    let changed = match op {
                        Op::Write { path, .. }
                        | Op::Scramble { path, .. }
                        | Op::Append { path, .. }
                        | Op::Truncate { path, .. }
                        | Op::Chmod { path, .. } => Some(path),
                        _ => None,
                    };
                    if let Some(Kind::File { ino }) = changed.and_then(|p| m.kind(p)) {
                        let path = changed.expect("a file");
                        let names = m
                            .root
                            .values()
                            .filter(|k| **k == Kind::File { ino })
                            .count();
                        let unseen = excluded_tmp(path.as_bytes()) || linked.contains(&ino);
                        assert!(
                            names < 2 || !unseen,
                            "seed {seed} round {r}: {op}: a change inotify cannot tell\n{}",
                            Round::script(std::slice::from_ref(&round))
                        );
                        through_old_links += usize::from(names >= 2);
                    }
                    if let Op::HardLink { from, .. } = op {
                        if let Some(Kind::File { ino }) = m.kind(from) {
                            linked.insert(ino);
                        }
                    }
                    m.apply(op).unwrap();
                }
            }
        }
        assert!(through_old_links >= 20, "{through_old_links}");
    }

    /// Every generated operation works on a real tree and leaves it as the model says; each
    /// kind of action shows up over a few seeds. No syncd: this checks the fuzzer itself.
    #[test]
    fn generated_operations_apply_cleanly_and_the_model_follows_the_real_tree() {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        let mut most_depth = 0;
        for seed in 1..=40 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("src");
            std::fs::create_dir(&root).unwrap();
            let mut model = Model::new();
            for r in 0..4 {
                let round = Round::generate(seed, r, &mut model, 25);
                assert!(round.ops.len() >= 25);
                assert_eq!(
                    round
                        .ops
                        .iter()
                        .filter(|o| matches!(o, Op::AwaitPush { .. }))
                        .count(),
                    1,
                    "seed {seed} round {r}"
                );
                for op in &round.ops {
                    if let Err(e) = op.apply(&root) {
                        panic!(
                            "seed {seed} round {r}: {op}: {e}\n{}",
                            Round::script(std::slice::from_ref(&round))
                        );
                    }
                    *kinds.entry(op.name()).or_default() += 1;
                    if let Op::Symlink { target, .. } | Op::Relink { target, .. } = op {
                        assert!(
                            !target.contains("//")
                                && !target.ends_with('/')
                                && !target.split('/').any(|c| c == "."),
                            "{op}"
                        );
                    }
                }
                if let Err(e) = model.check(&root) {
                    panic!(
                        "seed {seed} round {r}: the model drifted:\n{e}\n{}",
                        Round::script(&[round])
                    );
                }
                most_depth = most_depth.max(model.root.keys().map(|k| depth(k)).max().unwrap_or(0));
            }
        }
        for k in [
            "write",
            "scramble",
            "append",
            "truncate",
            "chmod",
            "rm",
            "rm -rf",
            "mkdir -p",
            "mv",
            "mv out",
            "mv in",
            "ln -s",
            "ln -sfn",
            "ln",
            "await-push",
        ] {
            assert!(
                kinds.get(k).copied().unwrap_or(0) >= 5,
                "{k} too rare: {kinds:?}"
            );
        }
        assert!(
            (3..=MAX_MOVED_DEPTH + 1).contains(&most_depth),
            "depth {most_depth}"
        );
    }

    #[test]
    fn symlink_targets_stay_inside_the_root_and_are_normalized() {
        let mut model = Model::new();
        for p in ["d0", "d0/d1", "d0/d1/d2", "d3"] {
            model.root.insert(p.into(), Kind::Dir);
        }
        let mut g = Gen {
            rng: Rng::new(1, 1),
            model,
            ops: Vec::new(),
            start_dirs: BTreeSet::new(),
            linked: BTreeSet::new(),
        };
        for _ in 0..500 {
            let dir = g.dir();
            if let Some(t) = g.link_target(&dir) {
                let ups = t.split('/').take_while(|c| *c == "..").count();
                assert!(ups <= depth(&dir), "{dir}: {t} climbs above the root");
                assert!(
                    !t.split('/')
                        .skip(ups)
                        .any(|c| c == ".." || c == "." || c.is_empty()),
                    "{dir}: {t}"
                );
            }
        }
    }
}
