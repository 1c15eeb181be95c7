//! `syncctl retry-failed [--target NAME]`: parked paths back to pending with fresh attempts.

use syncd_proto::{ErrorKind, Response};

use super::{err, Shared};
use crate::dispatch::inbox::Command;
use crate::engine::EngineView;

pub(super) fn retry_failed(engine: &EngineView, shared: &Shared, target: Option<&str>) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut n = 0;
    for t in ts {
        match shared.journal.retry_failed(&t.id) {
            Ok(k) => n += k,
            Err(e) => return err(ErrorKind::Internal, e.to_string()),
        }
        t.inbox.send(Command::Retry);
    }
    Response::Done {
        message: format!("{n} failed path(s) queued again"),
    }
}
