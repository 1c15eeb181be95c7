//! `syncctl stop`: the shutdown sequence starts; the answer goes out first.

use syncd_proto::Response;

use super::Shared;

pub(super) fn stop(shared: &Shared) -> Response {
    shared.shutdown.cancel();
    Response::Done {
        message: "syncd is shutting down".into(),
    }
}
