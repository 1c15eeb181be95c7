//! `syncctl resync [--target NAME] [PATH]`: a full rsync of a root (or of the directory PATH
//! inside one) owed to the chosen targets, in the journal.

use std::sync::atomic::Ordering;

use syncd_proto::{ByteBuf, ErrorKind, Response};

use super::{err, Shared};
use crate::engine::EngineView;

pub(super) fn resync(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    path: Option<ByteBuf>,
) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let sub_for_root = match super::locate(engine, path) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut n = 0;
    for t in ts {
        let sub: &[u8] = match &sub_for_root {
            Some((r, _)) if *r != t.root => continue,
            Some((_, s)) => s,
            None => b"",
        };
        if let Err(e) = shared.journal.request_resync(&t.id, sub) {
            return err(ErrorKind::Internal, e.to_string());
        }
        shared
            .events
            .full_sync_owed(&t.id, sub, "asked for by syncctl resync");
        t.kick.store(true, Ordering::Relaxed);
        t.wake.notify_one();
        n += 1;
    }
    if n == 0 {
        return err(
            ErrorKind::UnknownTarget,
            "that target does not replicate the root containing the path",
        );
    }
    Response::Done {
        message: format!("full resync queued for {n} target(s)"),
    }
}
