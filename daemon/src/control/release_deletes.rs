//! `syncctl release-deletes [TARGET]`: the deletions `delete_guard` holds go back to pending,
//! released (they go unguarded), and the targets are woken to push them.

use syncd_proto::{ErrorKind, Response};

use super::{err, Shared};
use crate::dispatch::inbox::Command;
use crate::engine::EngineView;

pub(super) fn release_deletes(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut done = Vec::new();
    for t in ts {
        match shared.journal.release_deletes(&t.id) {
            Ok(0) => {}
            Ok(n) => done.push(format!("{n} at {}", t.id)),
            Err(e) => return err(ErrorKind::Internal, e.to_string()),
        }
        t.inbox.send(Command::Release);
    }
    let message = match done.is_empty() {
        true => "no deletions were held".to_string(),
        false => format!("held deletions released: {}", done.join(", ")),
    };
    Response::Done { message }
}
