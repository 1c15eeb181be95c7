//! `syncctl status`: every root and target, from the workers' published views and the
//! journal's counts.

use syncd_proto::{
    ByteBuf, RenameMode, Response, RootState, RootStatus, StatusReport, TargetStatus,
};
use tokio::time::Instant;

use super::Shared;
use crate::engine::EngineView;
use crate::journal::now_ms;
use crate::rsync::LinkDest;

fn root_state(engine: &EngineView, i: usize) -> RootState {
    engine.roots[i].state.borrow().clone()
}

pub(super) fn status(engine: &EngineView, shared: &Shared) -> Response {
    let now = now_ms();
    let journal_error = engine.journal_error.borrow().clone();
    let mut roots = Vec::new();
    for (i, r) in engine.roots.iter().enumerate() {
        let mut targets = Vec::new();
        for t in engine.targets.iter().filter(|t| t.root == i) {
            let v = t.view.borrow().clone();
            let (pending, oldest) = shared.journal.pending_stats(&t.id).unwrap_or((0, None));
            let failed = shared.journal.failed_count(&t.id).unwrap_or(0);
            let deletes_held = shared.journal.held_count(&t.id).unwrap_or(0);
            let last_error = match (&root_state(engine, i), &journal_error) {
                (RootState::Unavailable { reason }, _) => Some(reason.clone()),
                (_, Some(j)) => Some(j.clone()),
                _ => v.last_error.clone(),
            };
            targets.push(TargetStatus {
                name: t.name.clone(),
                dest: t.dest.clone(),
                // Pause and resume are answered once the worker shows them (`pause`).
                state: v.state,
                pending,
                in_flight: v.in_flight,
                failed,
                delivered: v.delivered,
                oldest_pending_ms: oldest.map(|o| now.saturating_sub(o)),
                last_error,
                next_retry_ms: v
                    .next_retry
                    .map(|n| n.saturating_duration_since(Instant::now()).as_millis() as u64),
                full_sync: v.full_sync.as_ref().map(|p| p.status()),
                verify: t
                    .verifying
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|p| p.status()),
                renames: match &v.renames {
                    None => RenameMode::Unprobed,
                    Some(LinkDest::Works) => RenameMode::Moves,
                    Some(LinkDest::Fails(why)) => RenameMode::Plain(why.clone()),
                },
                deletes_held,
                stuck: v.stuck,
            });
        }
        use std::os::unix::ffi::OsStrExt;
        roots.push(RootStatus {
            name: r.name.clone(),
            source: ByteBuf::from(r.source.as_os_str().as_bytes().to_vec()),
            state: root_state(engine, i),
            watches: engine.watches.watches[i].load(std::sync::atomic::Ordering::Relaxed),
            targets,
        });
    }
    Response::Status(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_ms: shared.started.elapsed().as_millis() as u64,
        roots,
    })
}
