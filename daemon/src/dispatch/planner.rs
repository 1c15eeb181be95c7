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
        return match inflight.touches(p) {
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
