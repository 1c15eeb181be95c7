//! `syncctl wait-idle [--timeout SECONDS]`: answered once nothing is waiting in the coalescer,
//! pending in the journal, in flight, a move still to carry out, or owed a full resync (after a barrier through the
//! watcher: every event already queued in the kernel counts), or when the timeout passes.
//! Deletions `delete_guard` holds are not idle: then the answer says how many (at once: they
//! wait for an operator, not for time).

use std::time::Duration;

use syncd_proto::{ErrorKind, IdleOutcome, Response, RootState};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use super::{err, Shared};
use crate::engine::EngineView;
use crate::watch::WatchCmd;

pub(super) async fn wait_idle(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    timeout_ms: Option<u64>,
) -> Response {
    let targets = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.unwrap_or(365 * 86_400_000));
    let mut tick = engine.tick.subscribe();
    // Barrier: every inotify event queued before this request is read and handed on first.
    let (tx, rx) = oneshot::channel();
    if engine.watch_cmd.send(WatchCmd::Barrier(tx)).await.is_ok() {
        let _ = tokio::time::timeout_at(deadline, rx).await;
    }
    loop {
        tick.borrow_and_update();
        // Cheap checks on every tick; counting happens only for the answer.
        let mut busy = *engine.waiting.borrow() > 0;
        for t in &targets {
            let v = t.view.borrow().clone();
            // A root that is not there cannot be in sync, whatever the journal says.
            let root_gone = matches!(
                *engine.roots[t.root].state.borrow(),
                RootState::Unavailable { .. }
            );
            busy = busy
                || root_gone
                || v.in_flight > 0
                || v.full_sync.is_some()
                || v.probing
                || shared.journal.has_pending(&t.id).unwrap_or(true)
                || shared
                    .journal
                    .moves(&t.id)
                    .map(|m| !m.is_empty())
                    .unwrap_or(true)
                || shared
                    .journal
                    .resyncs(&t.id)
                    .map(|r| !r.is_empty())
                    .unwrap_or(true);
            if busy {
                break;
            }
        }
        if !busy {
            let count = |f: &dyn Fn(&str) -> u64| targets.iter().map(|t| f(&t.id)).sum::<u64>();
            let failed = count(&|id| shared.journal.failed_count(id).unwrap_or(0));
            let held = count(&|id| shared.journal.held_count(id).unwrap_or(0));
            return Response::WaitIdle(match held {
                0 => IdleOutcome::Idle { failed },
                held => IdleOutcome::DeletesHeld { held, failed },
            });
        }
        tokio::select! {
            r = tick.changed() => if r.is_err() { return err(ErrorKind::Internal, "syncd is shutting down") },
            _ = sleep_until(deadline) => {
                let pending = *engine.waiting.borrow() as u64
                    + targets.iter().map(|t| shared.journal.pending_stats(&t.id).map(|s| s.0).unwrap_or(0)).sum::<u64>();
                return Response::WaitIdle(IdleOutcome::TimedOut { pending });
            }
        }
    }
}
