//! `syncctl log [--follow]`: the recent events of the ring, then (following) new ones as they
//! happen, until the client goes or syncd stops. Served on the socket only: it streams.

use futures::StreamExt;
use syncd_proto::{LogEvent, LogKind, Response};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::broadcast::error::RecvError;

use super::connection::{send, Frames};
use super::Shared;
use crate::journal::now_ms;

/// Stream the log; returns whether the connection goes on (it does after the recent events
/// alone, it does not after following).
pub(super) async fn stream(
    follow: bool,
    shared: &Shared,
    frames: &mut Frames,
    w: &mut OwnedWriteHalf,
) -> std::io::Result<bool> {
    let (recent, mut rx) = shared.events.follow();
    for ev in recent {
        send(w, &Response::Event(ev)).await?;
    }
    if !follow {
        let end = Response::Done {
            message: "end of the log".into(),
        };
        send(w, &end).await?;
        return Ok(true);
    }
    // Until the client goes (its end of the stream closes) or syncd stops.
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(n)) => skipped(n),
                    Err(RecvError::Closed) => return Ok(false),
                };
                send(w, &Response::Event(ev)).await?;
            }
            f = frames.next() => if !matches!(f, Some(Ok(_))) { return Ok(false) },
            _ = shared.shutdown.cancelled() => return Ok(false),
        }
    }
}

/// A follower read too slowly: it is told how many events it missed.
fn skipped(n: u64) -> LogEvent {
    LogEvent {
        time_ms: now_ms(),
        target: String::new(),
        kind: LogKind::Skipped,
        paths: n,
        sample: Vec::new(),
        error: None,
    }
}
