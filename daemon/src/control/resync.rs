//! `syncctl resync [--target NAME] [PATH]`: a full rsync of a root (or of the directory PATH
//! inside one) owed to the chosen targets, in the journal.

use syncd_proto::{ByteBuf, ErrorKind, Response};

use super::{err, Shared};
use crate::dispatch::inbox::Command;
use crate::engine::EngineView;

pub(super) fn resync(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    path: Option<ByteBuf>,
) -> Response {
    let chosen = match super::chosen(engine, target, path, super::Names::Dir) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let n = chosen.len();
    for (t, sub) in chosen {
        let sub = sub.as_slice();
        if let Err(e) = shared.journal.request_resync(&t.id, sub) {
            return err(ErrorKind::Internal, e.to_string());
        }
        shared
            .events
            .full_sync_owed(&t.id, sub, "asked for by syncctl resync");
        t.inbox.send(Command::Resync);
    }
    Response::Done {
        message: format!("full resync queued for {n} target(s)"),
    }
}
