//! `syncctl reload`: handed to the supervisor, which re-reads the configuration and answers
//! once the new generation runs (or why the old one stays).

use syncd_proto::{ErrorKind, Response};
use tokio::sync::oneshot;

use super::{err, Shared};

pub(super) async fn reload(shared: &Shared) -> Response {
    let (tx, rx) = oneshot::channel();
    if shared.reload.send(tx).await.is_err() {
        return err(ErrorKind::Internal, "syncd is shutting down");
    }
    match rx.await {
        Ok(Ok(m)) => Response::Done { message: m },
        Ok(Err(m)) => err(ErrorKind::Config, m),
        Err(_) => err(ErrorKind::Internal, "reload was interrupted"),
    }
}
