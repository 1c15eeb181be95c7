//! `syncctl failed [--target NAME]`: the parked paths with their attempts and rsync's reason.

use syncd_proto::{ByteBuf, ErrorKind, FailedList, FailedPath, Response};

use super::{err, Shared};
use crate::engine::EngineView;

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
    let mut entries = Vec::new();
    let mut more = 0;
    for t in ts {
        let left = (limit as usize).saturating_sub(entries.len());
        match shared.journal.list_failed(&t.id, left) {
            Ok((list, total)) => {
                more += total - list.len() as u64;
                entries.extend(list.into_iter().map(|(p, e)| FailedPath {
                    target: t.id.clone(),
                    path: ByteBuf::from(p),
                    attempts: e.attempts,
                    last_error: e.last_error.unwrap_or_default(),
                }));
            }
            Err(e) => return err(ErrorKind::Internal, e.to_string()),
        }
    }
    Response::Failed(FailedList { entries, more })
}
