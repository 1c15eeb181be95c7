//! The planner's core, without I/O: given the moves pending for a target, what runs now, what
//! the target can do and what the source holds (a [`SourceView`]), which moves start, which
//! are given up, what the pending paths wait for, and what each due path is pushed as. The
//! worker feeds it from the journal and the file system and carries out what it decides; the
//! simulation below feeds it a model of the source, applies its decisions to a model of the
//! target the way rsync would, and checks that every order of changes converges.

use super::inflight::{Claim, InFlight};
use super::rename::{file_move_groups, file_moves_claim, move_claim, MoveHolds};
use crate::journal::PendingMove;
use crate::rsync::{plan_in, SourceView};

/// What the target can do, as far as moves are concerned.
#[derive(Debug, Clone, Copy)]
pub struct MoveCaps {
    /// Every exclude pattern means the same in a subdirectory's transfer (else no move runs).
    pub excludes_same_in_subtrees: bool,
    /// Whether the rename probe's finding is known or the probe is running (else a directory
    /// move starts it).
    pub probe_known_or_running: bool,
}

/// What a pass over the pending moves decided.
#[derive(Default)]
pub struct MovesPass {
    /// Moves to forget: given up for plain pushes, or renamed files whose new name no batch
    /// will deliver now.
    pub forget: Vec<PendingMove>,
    /// Start the rename probe.
    pub probe: bool,
    /// File moves to start, by the directory they went to, each with its claim (claimed).
    pub file_groups: Vec<(Vec<u8>, Vec<PendingMove>, Claim)>,
    /// Directory moves to start, with their claims (claimed).
    pub dir_moves: Vec<(PendingMove, Claim)>,
    /// What the moves still pending hold back.
    pub holds: MoveHolds,
}

/// Decide what the pending `moves` do now. `running`: jobs running before this pass, of at
/// most `workers`; what starts is claimed in `inflight`. `attempts_of(to)`: the attempts of the
/// pending entry of a renamed file's new name (`None` when it has none).
pub fn plan_moves(
    moves: Vec<PendingMove>,
    caps: MoveCaps,
    inflight: &mut InFlight,
    running: usize,
    workers: usize,
    attempts_of: &mut dyn FnMut(&[u8]) -> Option<u32>,
) -> MovesPass {
    let mut pass = MovesPass::default();
    if moves.is_empty() {
        return pass;
    }
    if !caps.excludes_same_in_subtrees {
        pass.forget = moves;
        return pass;
    }
    let mut jobs = running;
    let try_claim = |inflight: &mut InFlight, jobs: &mut usize, claim: &Claim| {
        let free = *jobs < workers
            && !claim
                .plans
                .iter()
                .any(|plan| inflight.conflicts(&plan.0, Some(plan)));
        if free {
            inflight.claim(claim);
            *jobs += 1;
        }
        free
    };
    if moves.iter().any(|m| m.dir) && !caps.probe_known_or_running {
        pass.probe = true;
        jobs += 1;
    }
    for (dir, group) in file_move_groups(&moves) {
        let claim = file_moves_claim(&group);
        if try_claim(inflight, &mut jobs, &claim) {
            pass.file_groups.push((dir, group, claim));
        }
    }
    let mut live = Vec::new();
    for m in moves {
        if !m.dir && m.same_dir() {
            // Its new name goes with the batches. One no batch will deliver now (gone,
            // parked, or failed once and waiting for a retry) is forgotten when the target is
            // quiet: its old name was held only to be the new name's basis.
            let left =
                jobs == 0 && !inflight.carries(&m.to) && attempts_of(&m.to).is_none_or(|a| a > 0);
            match left {
                true => pass.forget.push(m),
                false => live.push(m),
            }
            continue;
        }
        if m.dir {
            let claim = move_claim(&m);
            if try_claim(inflight, &mut jobs, &claim) {
                pass.dir_moves.push((m.clone(), claim));
            }
        }
        live.push(m);
    }
    pass.holds = MoveHolds::new(&live);
    pass
}

/// What a due path does in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consider {
    /// Taken, pushed as this plan (`None`: never listed, the root itself or a path rsync
    /// cannot take).
    Take(Option<(Vec<u8>, bool)>),
    /// It waits for a push running now.
    Waits,
    /// A pending move holds it and no running push covers it: it waits for nothing that runs,
    /// which the liveness check follows.
    PassedOver,
}

/// What the due path `p` does: wait for what runs or for a pending move, or go, planned.
pub fn consider(
    p: &[u8],
    inflight: &InFlight,
    holds: &MoveHolds,
    view: &dyn SourceView,
) -> Consider {
    if inflight.held_as_is(p) {
        return Consider::Waits;
    }
    if holds.holds(p) {
        let covered =
            inflight.touches(p) || holds.new_name_of(p).is_some_and(|to| inflight.carries(to));
        return match covered {
            true => Consider::Waits,
            false => Consider::PassedOver,
        };
    }
    let plan = plan_in(view, p);
    match inflight.conflicts(p, plan.as_ref()) {
        true => Consider::Waits,
        false => Consider::Take(plan),
    }
}

/// The simulation: a model of the source, the journal and the target, driven by random orders
/// of changes. Each round applies operations to the source, records what the watcher and the
/// coalescer would (the pending paths and the renames, through [`crate::journal::record_rename`]),
/// then runs passes of the planner until nothing is pending, carrying out what it decides the
/// way rsync would. Every pass must start something while anything is pending (else a path is
/// stuck), and at the end the target must be the source.
#[cfg(test)]
mod sim {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::fs::{is_prefix_dir, parents};
    use crate::journal::{record_rename, Move, Rename};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Node {
        File(u8),
        Dir,
        Link(u8),
    }

    /// A tree: every entry by its path (the root is implied).
    type Tree = BTreeMap<Vec<u8>, Node>;

    struct View<'a>(&'a Tree);

    impl SourceView for View<'_> {
        fn entry(&self, rel: &[u8]) -> Option<bool> {
            if rel.is_empty() {
                return Some(true);
            }
            self.0.get(rel).map(|n| *n == Node::Dir)
        }
    }

    fn is_dir(t: &Tree, p: &[u8]) -> bool {
        p.is_empty() || t.get(p) == Some(&Node::Dir)
    }

    fn parent(p: &[u8]) -> &[u8] {
        crate::fs::dir_of(p)
    }

    fn below<'a>(t: &'a Tree, p: &'a [u8]) -> impl Iterator<Item = Vec<u8>> + 'a {
        t.keys()
            .filter(move |k| k.as_slice() != p && is_prefix_dir(p, k))
            .cloned()
    }

    fn remove_tree(t: &mut Tree, p: &[u8]) {
        t.retain(|k, _| !is_prefix_dir(p, k));
    }

    /// One operation on the source.
    #[derive(Clone)]
    enum Op {
        Write(Vec<u8>, u8),
        Mkdir(Vec<u8>),
        Remove(Vec<u8>),
        RemoveTree(Vec<u8>),
        Rename(Vec<u8>, Vec<u8>),
        Symlink(Vec<u8>, u8),
    }

    impl std::fmt::Debug for Op {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let s = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
            match self {
                Op::Write(p, c) => write!(f, "write {} {c}", s(p)),
                Op::Mkdir(p) => write!(f, "mkdir {}", s(p)),
                Op::Remove(p) => write!(f, "rm {}", s(p)),
                Op::RemoveTree(p) => write!(f, "rm -r {}", s(p)),
                Op::Rename(a, b) => write!(f, "mv {} {}", s(a), s(b)),
                Op::Symlink(p, c) => write!(f, "ln -s {c} {}", s(p)),
            }
        }
    }

    /// The model of the journal for one target: pending paths (with their attempts) and moves.
    #[derive(Default)]
    struct Journal {
        pending: BTreeMap<Vec<u8>, u32>,
        moves: BTreeMap<Vec<u8>, Move>,
        generation: u64,
    }

    impl Journal {
        fn touch(&mut self, p: Vec<u8>) {
            if !p.is_empty() {
                self.pending.insert(p, 0);
            }
        }
    }

    /// Apply `op` to `src` as the file system would (an operation it would refuse changes
    /// nothing), and record in `j` what the watcher and the coalescer would.
    fn apply(op: &Op, src: &mut Tree, j: &mut Journal) {
        match op {
            Op::Write(p, c) | Op::Symlink(p, c) => {
                if !is_dir(src, parent(p)) || is_dir(src, p) {
                    return;
                }
                if matches!(op, Op::Symlink(..)) && src.contains_key(p) {
                    return;
                }
                let node = match op {
                    Op::Write(..) => Node::File(*c),
                    _ => Node::Link(*c),
                };
                src.insert(p.clone(), node);
                j.touch(p.clone());
            }
            Op::Mkdir(p) => {
                if is_dir(src, parent(p)) && !src.contains_key(p) {
                    src.insert(p.clone(), Node::Dir);
                    j.touch(p.clone());
                }
            }
            Op::Remove(p) => {
                if matches!(src.get(p), Some(Node::File(_) | Node::Link(_))) {
                    src.remove(p);
                    j.touch(p.clone());
                }
            }
            Op::RemoveTree(p) => {
                if is_dir(src, p) && !p.is_empty() {
                    let gone: Vec<Vec<u8>> = below(src, p).collect();
                    remove_tree(src, p);
                    gone.into_iter().for_each(|g| j.touch(g));
                    j.touch(p.clone());
                }
            }
            Op::Rename(from, to) => rename(from, to, src, j),
        }
    }

    /// rename(2): over a file (not by a directory), or a directory over an empty directory.
    fn rename(from: &[u8], to: &[u8], src: &mut Tree, j: &mut Journal) {
        let Some(node) = src.get(from).cloned() else {
            return;
        };
        if from == to || is_prefix_dir(from, to) || !is_dir(src, parent(to)) {
            return;
        }
        let dir = node == Node::Dir;
        match src.get(to) {
            Some(Node::Dir) if !dir || below(src, to).next().is_some() => return,
            Some(Node::File(_) | Node::Link(_)) if dir => return,
            _ => {}
        }
        let old: Vec<Vec<u8>> = below(src, from).collect();
        let moved: Vec<(Vec<u8>, Node)> = old
            .iter()
            .map(|k| {
                let mut n = to.to_vec();
                n.extend_from_slice(&k[from.len()..]);
                (n, src[k].clone())
            })
            .collect();
        remove_tree(src, from);
        src.insert(to.to_vec(), node);
        for (k, n) in &moved {
            src.insert(k.clone(), n.clone());
        }
        // MOVED_FROM: the old path and what the index held below it; MOVED_TO: the new path
        // and the new tree as the watcher walks it; the pair: a rename.
        j.touch(from.to_vec());
        old.into_iter().for_each(|k| j.touch(k));
        j.touch(to.to_vec());
        moved.into_iter().for_each(|(k, _)| j.touch(k));
        j.generation += 1;
        let r = Rename {
            from: from.to_vec(),
            to: to.to_vec(),
            dir,
        };
        record_rename(&mut j.moves, &r, j.generation).expect("a map cannot fail");
    }

    /// Why a run did not converge.
    type Failure = String;

    /// What a path is listed as, and whether that is a deletion.
    type Listed = (Vec<u8>, bool);

    /// Make `tgt[p]` what `src[p]` is, as one listed path of a batch does (`--force`: a file
    /// replaces a directory and the reverse; a directory's contents stay). Directories missing
    /// above it are created; one that is a file at the target fails the path ("Not a
    /// directory").
    fn upsert(src: &Tree, tgt: &mut Tree, p: &[u8]) -> bool {
        let Some(node) = src.get(p).cloned() else {
            // Vanished: skipped (--ignore-missing-args); its deletion is journaled.
            return true;
        };
        if !make_parents(tgt, p) {
            return false;
        }
        match (tgt.get(p), &node) {
            (Some(Node::Dir), Node::Dir) => {}
            (Some(Node::Dir), _) => {
                remove_tree(tgt, p);
                tgt.insert(p.to_vec(), node);
            }
            _ => {
                tgt.insert(p.to_vec(), node);
            }
        }
        true
    }

    /// Create the directories missing above `p` at the target, as rsync does; false when one
    /// of them is something else there (rsync: "Not a directory", "File exists").
    fn make_parents(tgt: &mut Tree, p: &[u8]) -> bool {
        for d in parents(p) {
            match tgt.get(d) {
                None => {
                    tgt.insert(d.to_vec(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => return false,
            }
        }
        true
    }

    /// A directory move: `to` pushed whole (`--delete` inside it, `--mkpath` above it).
    fn push_tree(src: &Tree, tgt: &mut Tree, to: &[u8]) -> bool {
        if !is_dir(src, to) {
            return false;
        }
        // mkdir over a file: exit 11, a path failure: given up for plain pushes.
        if !make_parents(tgt, to) {
            return false;
        }
        if matches!(tgt.get(to), Some(Node::File(_) | Node::Link(_))) {
            return false;
        }
        remove_tree(tgt, to);
        tgt.insert(to.to_vec(), Node::Dir);
        for k in below(src, to).collect::<Vec<_>>() {
            tgt.insert(k.clone(), src[&k].clone());
        }
        true
    }

    /// Confirm every pending path at or below `p`.
    fn confirm_below(j: &mut Journal, p: &[u8]) {
        j.pending.retain(|k, _| !is_prefix_dir(p, k));
    }

    /// One pass of the worker: moves, then one batch. Returns whether anything ran.
    fn pass(
        src: &Tree,
        tgt: &mut Tree,
        j: &mut Journal,
        max_batch: usize,
    ) -> Result<bool, Failure> {
        let moves: Vec<PendingMove> = j
            .moves
            .iter()
            .map(|(to, m)| PendingMove::of(to, m))
            .collect();
        let mut inflight = InFlight::default();
        let caps = MoveCaps {
            excludes_same_in_subtrees: true,
            probe_known_or_running: true,
        };
        let pending = j.pending.clone();
        let mut attempts_of = |to: &[u8]| pending.get(to).copied();
        let mp = plan_moves(moves, caps, &mut inflight, 0, 4, &mut attempts_of);
        let mut ran = !mp.forget.is_empty();
        for m in &mp.forget {
            j.moves.remove(&m.to);
        }
        for (dir, group, _) in &mp.file_groups {
            ran = true;
            let ok = is_dir(src, dir)
                && group
                    .iter()
                    .all(|m| matches!(src.get(&m.to), Some(Node::File(_) | Node::Link(_))))
                && is_dir(tgt, dir)
                // Without --force rsync keeps a non-empty directory in a file's way (exit 23).
                && group.iter().all(|m| below(tgt, &m.to).next().is_none());
            if ok {
                for m in group {
                    remove_tree(tgt, &m.to);
                    tgt.insert(m.to.clone(), src[&m.to].clone());
                    confirm_below(j, &m.to);
                }
            }
            for m in group {
                j.moves.remove(&m.to);
            }
        }
        for (m, _) in &mp.dir_moves {
            ran = true;
            if push_tree(src, tgt, &m.to) {
                confirm_below(j, &m.to);
            }
            j.moves.remove(&m.to);
        }
        // The batch: due paths in key order, as the journal scan finds them.
        let inflight = InFlight::default();
        let view = View(src);
        let mut plans: Vec<(Vec<u8>, Option<Listed>)> = Vec::new();
        for p in j.pending.keys() {
            if plans.len() == max_batch {
                break;
            }
            if let Consider::Take(plan) = consider(p, &inflight, &mp.holds, &view) {
                plans.push((p.clone(), plan));
            }
        }
        if plans.is_empty() {
            return Ok(ran);
        }
        // Upserts first, deletions after (a renamed file's basis is still there).
        let mut failed = BTreeSet::new();
        let mut listed: Vec<(Vec<u8>, bool)> =
            plans.iter().filter_map(|(_, p)| p.clone()).collect();
        listed.sort();
        listed.dedup();
        for (l, deletion) in listed.iter().filter(|(_, d)| !d) {
            let _ = deletion;
            if !upsert(src, tgt, l) {
                failed.insert(l.clone());
            }
        }
        for (l, _) in listed.iter().filter(|(_, d)| *d) {
            remove_tree(tgt, l);
        }
        for (p, plan) in plans {
            let listed_as = plan.map(|(l, _)| l);
            match listed_as {
                Some(l) if failed.contains(&l) => {
                    // The path failed on its own: the directories above it are journaled,
                    // it is tried again.
                    let a = j.pending.entry(p.clone()).or_default();
                    *a += 1;
                    if *a > 5 {
                        return Err(format!("{} failed 5 times", String::from_utf8_lossy(&p)));
                    }
                    for d in parents(&p) {
                        j.pending.entry(d.to_vec()).or_default();
                    }
                }
                _ => {
                    j.pending.remove(&p);
                    // A renamed file's new name delivered: its old name may go.
                    if j.moves
                        .get(&p)
                        .is_some_and(|m| !m.dir && parent(&m.from) == parent(&p))
                    {
                        j.moves.remove(&p);
                    }
                }
            }
        }
        Ok(true)
    }

    fn show(t: &Tree) -> Vec<String> {
        t.iter()
            .map(|(k, n)| format!("{}={n:?}", String::from_utf8_lossy(k)))
            .collect()
    }

    /// Run `rounds` against a target that starts as the source does (`initial`).
    fn run(initial: &[Op], rounds: &[Vec<Op>], max_batch: usize) -> Result<(), Failure> {
        let mut src = Tree::new();
        let mut j = Journal::default();
        for op in initial {
            apply(op, &mut src, &mut j);
        }
        let mut tgt = src.clone();
        j = Journal::default();
        for (i, ops) in rounds.iter().enumerate() {
            for op in ops {
                apply(op, &mut src, &mut j);
            }
            let mut passes = 0;
            while !j.pending.is_empty() || !j.moves.is_empty() {
                passes += 1;
                if !pass(&src, &mut tgt, &mut j, max_batch)? {
                    return Err(format!(
                        "round {i}: stuck: pending {:?}, moves {:?}",
                        j.pending
                            .keys()
                            .map(|k| String::from_utf8_lossy(k))
                            .collect::<Vec<_>>(),
                        j.moves
                    ));
                }
                if passes > 200 {
                    return Err(format!("round {i}: no end after 200 passes"));
                }
            }
            if src != tgt {
                return Err(format!(
                    "round {i}: the target differs\nsource {:?}\ntarget {:?}",
                    show(&src),
                    show(&tgt)
                ));
            }
        }
        Ok(())
    }

    /// Paths of a small namespace, so that operations collide often.
    fn path() -> impl Strategy<Value = Vec<u8>> {
        let name = prop::sample::select(vec!["a", "b", "c", "t"]);
        prop::collection::vec(name, 1..=3).prop_map(|parts| parts.join("/").into_bytes())
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (path(), 0u8..4).prop_map(|(p, c)| Op::Write(p, c)),
            2 => path().prop_map(Op::Mkdir),
            1 => path().prop_map(Op::Remove),
            1 => path().prop_map(Op::RemoveTree),
            4 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
            1 => (path(), 0u8..4).prop_map(|(p, c)| Op::Symlink(p, c)),
        ]
    }

    /// One operation, or a swap of two names through a third, or a cycle of three names: the
    /// orders that random single operations almost never line up.
    fn chunk() -> impl Strategy<Value = Vec<Op>> {
        let r = |a: &Vec<u8>, b: &Vec<u8>| Op::Rename(a.clone(), b.clone());
        prop_oneof![
            6 => op().prop_map(|o| vec![o]),
            1 => (path(), path(), path()).prop_map(move |(a, b, t)| vec![r(&a, &t), r(&b, &a), r(&t, &b)]),
            1 => (path(), path(), path(), path())
                .prop_map(move |(a, b, c, t)| vec![r(&a, &t), r(&c, &a), r(&b, &c), r(&t, &b)]),
        ]
    }

    fn round() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(chunk(), 1..16).prop_map(|c| c.concat())
    }

    fn rounds() -> impl Strategy<Value = (Vec<Op>, Vec<Vec<Op>>, usize)> {
        (
            prop::collection::vec(op(), 0..12),
            prop::collection::vec(round(), 1..4),
            prop::sample::select(vec![1usize, 3, 1000]),
        )
    }

    fn w(p: &str) -> Op {
        Op::Write(p.into(), 1)
    }
    fn mv(a: &str, b: &str) -> Op {
        Op::Rename(a.into(), b.into())
    }

    #[test]
    fn a_swap_and_a_cycle_of_file_names_converge() {
        let initial = [
            Op::Mkdir(b"d".to_vec()),
            w("d/a"),
            Op::Write(b"d/b".to_vec(), 2),
            Op::Write(b"d/c".to_vec(), 3),
        ];
        run(
            &initial,
            &[vec![mv("d/a", "d/t"), mv("d/b", "d/a"), mv("d/t", "d/b")]],
            1000,
        )
        .unwrap();
        run(
            &initial,
            &[vec![
                mv("d/a", "d/t"),
                mv("d/c", "d/a"),
                mv("d/b", "d/c"),
                mv("d/t", "d/b"),
            ]],
            1,
        )
        .unwrap();
    }

    #[test]
    fn a_directory_swap_and_a_file_turned_directory_receiving_moved_files_converge() {
        let initial = [
            Op::Mkdir(b"x".to_vec()),
            w("x/f"),
            Op::Mkdir(b"y".to_vec()),
            Op::Write(b"y/g".to_vec(), 2),
            w("n"),
        ];
        let round = vec![
            mv("x", "t"),
            mv("y", "x"),
            mv("t", "y"),
            Op::Remove(b"n".to_vec()),
            Op::Mkdir(b"n".to_vec()),
            mv("x/g", "n/g"),
            mv("y", "n/y"),
        ];
        run(&initial, &[round], 1000).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // ~3 s in a debug build, ~1 s in a release one.
            cases: 20_000,
            // XorShift: in a debug build ChaCha took most of the time.
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            .. ProptestConfig::default()
        })]
        #[test]
        fn every_order_of_changes_converges_with_nothing_stuck((initial, rounds, max_batch) in rounds()) {
            if let Err(e) = run(&initial, &rounds, max_batch) {
                panic!("{e}\ninitial {initial:?}\nrounds {rounds:?}\nmax_batch {max_batch}");
            }
        }
    }
}
