//! Connections: the accept loop (connections capped; at the cap the client quiet longest makes
//! room), and one task per connection: credentials checked, `Hello` first, then requests
//! answered in turn until the client goes quiet for [`READ_TIMEOUT`] or closes.
//!
//! A frame's length is checked against [`MAX_REQUEST_FRAME`] before anything is allocated, and
//! payloads are decoded with a byte limit; a malformed frame ends that connection only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use syncd_proto::{
    decode_payload, encode_frame, ErrorKind, Request, Response, MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::frame::FrameDecoder;
use super::{answer, err, log, Shared};

/// Most clients held at once (each costs a task and at most one request frame of memory).
const MAX_CLIENTS: usize = 128;
/// A client must send its next request within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected client, as the accept loop sees it.
struct Client {
    /// When it last sent a request (ms since the server started); `u64::MAX` while one is
    /// being answered, so a client waiting on `wait-idle` is the last to be dropped.
    quiet_since: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// Accept connections until `shutdown`.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let clients: Arc<Mutex<HashMap<u64, Client>>> = Arc::default();
    let epoch = Instant::now();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // EMFILE and friends: back off a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let id = next_id;
        let quiet_since = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let stop = CancellationToken::new();
        {
            let mut live = clients.lock().unwrap_or_else(|e| e.into_inner());
            if live.len() >= MAX_CLIENTS {
                let quietest = live
                    .iter()
                    .min_by_key(|(_, c)| c.quiet_since.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                if let Some(old) = quietest.and_then(|q| live.remove(&q)) {
                    debug!("too many control clients; dropping the one quiet longest");
                    old.stop.cancel();
                }
            }
            live.insert(
                id,
                Client {
                    quiet_since: quiet_since.clone(),
                    stop: stop.clone(),
                },
            );
        }
        let shared = shared.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = handle(stream, &shared, &quiet_since, epoch) => {
                    if let Err(e) = r {
                        debug!(error = %e, "control connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
            clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
}

pub(super) async fn send(w: &mut OwnedWriteHalf, resp: &Response) -> std::io::Result<()> {
    let frame = encode_frame(resp, MAX_RESPONSE_FRAME).map_err(std::io::Error::other)?;
    w.write_all(&frame).await
}

/// The request frames of one connection.
pub(super) type Frames = FramedRead<OwnedReadHalf, FrameDecoder>;

/// When a connection last sent a request, for the accept loop's choice of whom to drop.
struct Quiet<'a> {
    since: &'a AtomicU64,
    epoch: Instant,
}

impl Quiet<'_> {
    /// A request is being answered: this client is the last to be dropped.
    fn busy(&self) {
        self.since.store(u64::MAX, Ordering::Relaxed);
    }

    fn idle(&self) {
        self.since
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// What the next frame of a connection brought.
enum Next {
    Request(Request),
    /// The connection is over (closed, quiet too long, or a bad frame already answered).
    End(std::io::Result<()>),
}

async fn handle(
    stream: UnixStream,
    shared: &Shared,
    quiet_since: &AtomicU64,
    epoch: Instant,
) -> std::io::Result<()> {
    let quiet = Quiet {
        since: quiet_since,
        epoch,
    };
    let cred = stream.peer_cred()?;
    let (r, mut w) = stream.into_split();
    if !shared.access.allows(cred.uid(), cred.gid()) {
        info!(uid = cred.uid(), "control client refused");
        let denied = err(
            ErrorKind::Denied,
            "permission denied: only root, the daemon's user or socket_group may control syncd",
        );
        return send(&mut w, &denied).await;
    }
    let codec = FrameDecoder {
        max: MAX_REQUEST_FRAME,
    };
    let mut frames = FramedRead::new(r, codec);
    match next(&mut frames, &mut w).await {
        Next::Request(hello) => {
            if !greet(hello, &mut w).await? {
                return Ok(());
            }
        }
        Next::End(r) => return r,
    }
    loop {
        let req = match next(&mut frames, &mut w).await {
            Next::Request(r) => r,
            Next::End(r) => return r,
        };
        quiet.busy();
        match req {
            Request::Log { follow } => {
                if !log::stream(follow, shared, &mut frames, &mut w).await? {
                    return Ok(());
                }
            }
            req => {
                let resp = answer(req, shared).await;
                send(&mut w, &resp).await?;
            }
        }
        quiet.idle();
    }
}

/// Read and decode the next request.
async fn next(frames: &mut Frames, w: &mut OwnedWriteHalf) -> Next {
    let frame = match tokio::time::timeout(READ_TIMEOUT, frames.next()).await {
        Err(_) | Ok(None) => return Next::End(Ok(())),
        Ok(Some(Err(e))) => {
            let _ = send(w, &err(ErrorKind::BadRequest, format!("bad frame: {e}"))).await;
            return Next::End(Err(e));
        }
        Ok(Some(Ok(f))) => f,
    };
    match decode_payload(&frame, MAX_REQUEST_FRAME) {
        Ok(r) => Next::Request(r),
        Err(e) => {
            let bad = err(ErrorKind::BadRequest, format!("undecodable request: {e}"));
            let _ = send(w, &bad).await;
            Next::End(Ok(()))
        }
    }
}

/// The first request must be `Hello` with our protocol; returns whether it was.
async fn greet(req: Request, w: &mut OwnedWriteHalf) -> std::io::Result<bool> {
    match req {
        Request::Hello { protocol } if protocol == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").into(),
            };
            send(w, &hello).await?;
            Ok(true)
        }
        Request::Hello { protocol } => {
            send(w, &err(ErrorKind::ProtocolMismatch, format!("syncctl speaks protocol {protocol}, syncd speaks {PROTOCOL_VERSION}: use the syncctl of the same release"))).await?;
            Ok(false)
        }
        _ => {
            send(w, &err(ErrorKind::BadRequest, "expected Hello first")).await?;
            Ok(false)
        }
    }
}
