//! `syncctl failed [--target NAME]`: the parked paths with their attempts and rsync's reason,
//! the paths failing but still retried (attempts, time to the next, the last error), and the
//! deletions `delete_guard` holds, and the paths found stuck (see `dispatch::liveness`).

use syncd_proto::{
    ByteBuf, ErrorKind, FailedList, FailedPath, HeldFullSync, HeldPath, Response, RetryingPath,
    StuckPath,
};

use super::{err, Shared};
use crate::engine::EngineView;
use crate::journal::{now_ms, JournalError};

/// Most entries in one answer, whatever the client asks for: keeps it well inside
/// `MAX_RESPONSE_FRAME`.
const MAX_LISTED: u32 = 10_000;

pub(super) fn list_failed(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    limit: u32,
) -> Response {
    let limit = limit.min(MAX_LISTED);
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut list = FailedList {
        entries: Vec::new(),
        more: 0,
        retrying: Vec::new(),
        retrying_more: 0,
        held: Vec::new(),
        held_more: 0,
        held_full: Vec::new(),
        stuck: Vec::new(),
    };
    for t in ts {
        if let Err(e) = list_target(shared, &t.id, limit as usize, &mut list) {
            return err(ErrorKind::Internal, e.to_string());
        }
        let now = std::time::SystemTime::now();
        let recent = t.view.borrow().stuck_recent.clone();
        list.stuck.extend(recent.iter().rev().map(|s| StuckPath {
            target: t.id.clone(),
            path: ByteBuf::from(s.path.clone()),
            ago_ms: now.duration_since(s.at).map_or(0, |d| d.as_millis() as u64),
            what: s.what.clone(),
        }));
    }
    Response::Failed(Box::new(list))
}

/// Add target `id`'s parked, retrying and held paths to `list`, up to `limit` of each kind in
/// all.
fn list_target(
    shared: &Shared,
    id: &str,
    limit: usize,
    list: &mut FailedList,
) -> Result<(), JournalError> {
    let (parked, total) = shared
        .journal
        .list_failed(id, limit.saturating_sub(list.entries.len()))?;
    list.more += total - parked.len() as u64;
    list.entries
        .extend(parked.into_iter().map(|(p, e)| FailedPath {
            target: id.to_string(),
            path: ByteBuf::from(p),
            attempts: e.attempts,
            last_error: e.last_error.unwrap_or_default(),
        }));
    let (retrying, total) = shared
        .journal
        .list_retrying(id, limit.saturating_sub(list.retrying.len()))?;
    list.retrying_more += total - retrying.len() as u64;
    let now = now_ms();
    list.retrying
        .extend(retrying.into_iter().map(|(p, e)| RetryingPath {
            target: id.to_string(),
            path: ByteBuf::from(p),
            attempts: e.attempts,
            next_retry_ms: e.next_attempt_ms.saturating_sub(now),
            last_error: e.last_error.unwrap_or_default(),
        }));
    list_held(shared, id, limit, list)
}

fn list_held(
    shared: &Shared,
    id: &str,
    limit: usize,
    list: &mut FailedList,
) -> Result<(), JournalError> {
    let held = shared
        .journal
        .list_held(id, limit.saturating_sub(list.held.len()))?;
    list.held_more += held.total - held.paths.len() as u64;
    list.held.extend(held.paths.into_iter().map(|p| HeldPath {
        target: id.to_string(),
        path: ByteBuf::from(p),
    }));
    list.held_full
        .extend(held.full.into_iter().map(|(p, n)| HeldFullSync {
            target: id.to_string(),
            path: ByteBuf::from(p),
            deletions: n,
        }));
    Ok(())
}
