//! The control socket: `syncctl` requests in, answers out.
//!
//! Invariants:
//! - the socket is created in a private directory with a umask applied before `bind`, so it is
//!   never reachable with looser permissions, and every connection is checked with SO_PEERCRED:
//!   root, the daemon's own uid, or a member of `socket_group`;
//! - a frame's length is checked against [`MAX_REQUEST_FRAME`] before anything is allocated, and
//!   payloads are decoded with a byte limit; a malformed frame ends that connection only;
//! - a client that connects and says nothing is dropped after a timeout; connections are capped,
//!   and when the cap is reached the client that has been quiet longest makes room for the new
//!   one, so a flood of connections neither exhausts the daemon nor locks `syncctl` out.

pub mod http;

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use syncd_proto::{
    decode_payload, encode_frame, ByteBuf, ErrorKind, FailedList, FailedPath, IdleOutcome,
    LogEvent, LogKind, Request, Response, RootState, RootStatus, StatusReport, TargetState,
    TargetStatus, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::engine::EngineView;
use crate::journal::{now_ms, Journal};
use crate::watch::WatchCmd;

/// Most clients held at once (each costs a task and at most one request frame of memory).
const MAX_CLIENTS: usize = 128;
/// A client must send its next request within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket setup failures: fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create socket directory {dir}: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("another syncd{pid} is already serving {path}; stop it first (syncctl --socket {path} stop)", pid = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { path: PathBuf, pid: Option<i32> },
    #[error("cannot bind control socket {path}: {error}")]
    Bind {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct Access {
    pub uid: u32,
    pub group: Option<(u32, Vec<String>)>,
}

impl Access {
    /// Access for the daemon's uid and an optional group name.
    pub fn new(group: Option<&str>) -> Access {
        let group = group
            .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| (g.gid.as_raw(), g.mem));
        Access {
            uid: nix::unistd::geteuid().as_raw(),
            group,
        }
    }

    fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.uid {
            return true;
        }
        let Some((g, members)) = &self.group else {
            return false;
        };
        if gid == *g {
            return true;
        }
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .is_some_and(|u| members.contains(&u.name))
    }
}

/// Bind the control socket. The caller holds the pidfile lock, so a leftover socket file that
/// nobody answers on is stale and may be removed.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ControlError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let gid = group
        .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
        .map(|g| g.gid);
    if !dir.exists() {
        let dir_err = |error| ControlError::Dir {
            dir: dir.to_path_buf(),
            error,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(if gid.is_some() { 0o750 } else { 0o700 })
            .create(dir)
            .map_err(dir_err)?;
        // Group members must be able to reach the socket.
        if gid.is_some() {
            nix::unistd::chown(dir, None, gid).map_err(|e| dir_err(e.into()))?;
        }
    } else if let Some(gid) = gid {
        // A private directory made for us (systemd's RuntimeDirectory=: owned by our user, no
        // access for others) becomes the group's, so its members can reach the socket. Any
        // other directory (/run itself, somebody else's) keeps what its owner gave it.
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(dir) {
            if m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o007 == 0
                && m.gid() != gid.as_raw()
            {
                let dir_err = |error| ControlError::Dir {
                    dir: dir.to_path_buf(),
                    error,
                };
                nix::unistd::chown(dir, None, Some(gid)).map_err(|e| dir_err(e.into()))?;
                let mode = (m.mode() & 0o700) | 0o050;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(dir_err)?;
            }
        }
    }
    if let Ok(live) = std::os::unix::net::UnixStream::connect(path) {
        let pid = nix::sys::socket::getsockopt(&live, nix::sys::socket::sockopt::PeerCredentials)
            .ok()
            .map(|c| c.pid());
        return Err(ControlError::InUse {
            path: path.to_path_buf(),
            pid,
        });
    }
    let _ = std::fs::remove_file(path);
    let mask = if group.is_some() { 0o007 } else { 0o077 };
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    let res = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = res.map_err(|error| ControlError::Bind {
        path: path.to_path_buf(),
        error,
    })?;
    if gid.is_some() {
        let bind_err = |error| ControlError::Bind {
            path: path.to_path_buf(),
            error,
        };
        nix::unistd::chown(path, None, gid).map_err(|e| bind_err(e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    }
    Ok(listener)
}

/// What every connection handler shares.
pub struct Shared {
    pub journal: Journal,
    pub engine: watch::Receiver<Option<Arc<EngineView>>>,
    pub started: std::time::Instant,
    pub reload: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
    pub shutdown: CancellationToken,
    pub access: Access,
    /// `syncctl log`.
    pub events: crate::observe::log::Events,
}

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

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, resp: &Response) -> std::io::Result<()> {
    let frame = encode_frame(resp, MAX_RESPONSE_FRAME).map_err(std::io::Error::other)?;
    w.write_all(&frame).await
}

fn err(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

async fn handle(
    stream: UnixStream,
    shared: &Shared,
    quiet_since: &AtomicU64,
    epoch: Instant,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (r, mut w) = stream.into_split();
    if !shared.access.allows(cred.uid(), cred.gid()) {
        info!(uid = cred.uid(), "control client refused");
        return send(
            &mut w,
            &err(
                ErrorKind::Denied,
                "permission denied: only root, the daemon's user or socket_group may control syncd",
            ),
        )
        .await;
    }
    let codec = LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(MAX_REQUEST_FRAME)
        .new_codec();
    let mut frames = FramedRead::new(r, codec);
    let mut greeted = false;
    loop {
        let frame = match tokio::time::timeout(READ_TIMEOUT, frames.next()).await {
            Err(_) => return Ok(()),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                let _ = send(
                    &mut w,
                    &err(ErrorKind::BadRequest, format!("bad frame: {e}")),
                )
                .await;
                return Err(e);
            }
            Ok(Some(Ok(f))) => f,
        };
        let req: Request = match decode_payload(&frame, MAX_REQUEST_FRAME) {
            Ok(r) => r,
            Err(e) => {
                let _ = send(
                    &mut w,
                    &err(ErrorKind::BadRequest, format!("undecodable request: {e}")),
                )
                .await;
                return Ok(());
            }
        };
        if !greeted {
            match req {
                Request::Hello { protocol } if protocol == PROTOCOL_VERSION => {
                    greeted = true;
                    send(
                        &mut w,
                        &Response::Hello {
                            protocol: PROTOCOL_VERSION,
                            version: env!("CARGO_PKG_VERSION").into(),
                        },
                    )
                    .await?;
                    continue;
                }
                Request::Hello { protocol } => {
                    return send(&mut w, &err(ErrorKind::ProtocolMismatch, format!("syncctl speaks protocol {protocol}, syncd speaks {PROTOCOL_VERSION}: use the syncctl of the same release"))).await;
                }
                _ => {
                    return send(&mut w, &err(ErrorKind::BadRequest, "expected Hello first")).await
                }
            }
        }
        quiet_since.store(u64::MAX, Ordering::Relaxed);
        if let Request::Log { follow } = req {
            let (recent, mut rx) = shared.events.follow();
            for ev in recent {
                send(&mut w, &Response::Event(ev)).await?;
            }
            if !follow {
                let end = Response::Done {
                    message: "end of the log".into(),
                };
                send(&mut w, &end).await?;
                quiet_since.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                continue;
            }
            // Until the client goes (its end of the stream closes) or syncd stops.
            loop {
                tokio::select! {
                    ev = rx.recv() => {
                        let ev = match ev {
                            Ok(ev) => ev,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => LogEvent {
                                time_ms: crate::journal::now_ms(),
                                target: String::new(),
                                kind: LogKind::Skipped,
                                paths: n,
                                sample: Vec::new(),
                                error: None,
                            },
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                        };
                        send(&mut w, &Response::Event(ev)).await?;
                    }
                    f = frames.next() => if !matches!(f, Some(Ok(_))) { return Ok(()) },
                    _ = shared.shutdown.cancelled() => return Ok(()),
                }
            }
        }
        let resp = answer(req, shared).await;
        send(&mut w, &resp).await?;
        quiet_since.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Carry out one request: the control socket's and the HTTP interface's single implementation.
pub(crate) async fn answer(req: Request, shared: &Shared) -> Response {
    let Some(engine) = shared.engine.borrow().clone() else {
        return err(ErrorKind::Internal, "syncd is starting");
    };
    match req {
        Request::Hello { .. } => err(ErrorKind::BadRequest, "already greeted"),
        Request::Status => status(&engine, shared),
        Request::Pause { target } => set_paused(&engine, target.as_deref(), true),
        Request::Resume { target } => set_paused(&engine, target.as_deref(), false),
        Request::Resync { target, path } => {
            durable(shared, resync(&engine, shared, target.as_deref(), path)).await
        }
        Request::RetryFailed { target } => {
            let ts = match engine.select(target.as_deref()) {
                Ok(t) => t,
                Err(e) => return e,
            };
            let mut n = 0;
            for t in ts {
                match shared.journal.retry_failed(&t.id) {
                    Ok(k) => n += k,
                    Err(e) => return err(ErrorKind::Internal, e.to_string()),
                }
                t.kick.store(true, std::sync::atomic::Ordering::Relaxed);
                t.wake.notify_one();
            }
            let done = Response::Done {
                message: format!("{n} failed path(s) queued again"),
            };
            durable(shared, done).await
        }
        Request::ListFailed { target, limit } => {
            // Keeps the answer well inside MAX_RESPONSE_FRAME whatever the client asks for.
            let limit = limit.min(10_000);
            let ts = match engine.select(target.as_deref()) {
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
        Request::WaitIdle { target, timeout_ms } => {
            wait_idle(&engine, shared, target.as_deref(), timeout_ms).await
        }
        Request::Reload => {
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
        // Answered by the connection itself (it streams).
        Request::Log { .. } => err(
            ErrorKind::BadRequest,
            "log is only served on the control socket",
        ),
        Request::Shutdown => {
            shared.shutdown.cancel();
            Response::Done {
                message: "syncd is shutting down".into(),
            }
        }
    }
}

fn set_paused(engine: &EngineView, target: Option<&str>, paused: bool) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let names: Vec<String> = ts.iter().map(|t| t.id.clone()).collect();
    for t in ts {
        t.paused.send_replace(paused);
        t.wake.notify_one();
    }
    Response::Done {
        message: format!(
            "{} {}",
            if paused { "paused" } else { "resumed" },
            names.join(", ")
        ),
    }
}

/// A request that wrote to the journal is answered only once the write is on disk.
async fn durable(shared: &Shared, resp: Response) -> Response {
    if !matches!(resp, Response::Done { .. }) {
        return resp;
    }
    match shared.journal.flush().await {
        Ok(()) => resp,
        Err(e) => err(
            ErrorKind::Internal,
            format!("could not save the request: {e}"),
        ),
    }
}

fn resync(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    path: Option<ByteBuf>,
) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut sub_for_root: Option<(usize, Vec<u8>)> = None;
    if let Some(p) = path {
        use std::os::unix::ffi::OsStrExt;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(&p));
        let found = engine.roots.iter().enumerate().find_map(|(i, r)| {
            p.strip_prefix(&r.source)
                .ok()
                .map(|rel| (i, rel.as_os_str().as_bytes().to_vec()))
        });
        match found {
            Some(f) => sub_for_root = Some(f),
            None => {
                return err(
                    ErrorKind::UnknownPath,
                    format!("{} is not inside any watched root", p.display()),
                )
            }
        }
    }
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
        t.kick.store(true, std::sync::atomic::Ordering::Relaxed);
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

fn root_state(engine: &EngineView, i: usize) -> RootState {
    engine.roots[i].state.borrow().clone()
}

fn status(engine: &EngineView, shared: &Shared) -> Response {
    let now = now_ms();
    let journal_error = engine.journal_error.borrow().clone();
    let mut roots = Vec::new();
    for (i, r) in engine.roots.iter().enumerate() {
        let mut targets = Vec::new();
        for t in engine.targets.iter().filter(|t| t.root == i) {
            let v = t.view.borrow().clone();
            let (pending, oldest) = shared.journal.pending_stats(&t.id).unwrap_or((0, None));
            let failed = shared.journal.failed_count(&t.id).unwrap_or(0);
            let last_error = match (&root_state(engine, i), &journal_error) {
                (RootState::Unavailable { reason }, _) => Some(reason.clone()),
                (_, Some(j)) => Some(j.clone()),
                _ => v.last_error.clone(),
            };
            targets.push(TargetStatus {
                name: t.name.clone(),
                dest: t.dest.clone(),
                // The switch itself, not the worker's last view of it: status right after
                // pause/resume must already show it.
                state: match (*t.paused.borrow(), v.state) {
                    (true, _) => TargetState::Paused,
                    (false, TargetState::Paused) => TargetState::Running,
                    (false, s) => s,
                },
                pending,
                in_flight: v.in_flight,
                failed,
                delivered: v.delivered,
                oldest_pending_ms: oldest.map(|o| now.saturating_sub(o)),
                last_error,
                next_retry_ms: v
                    .next_retry
                    .map(|n| n.saturating_duration_since(Instant::now()).as_millis() as u64),
                full_sync: v.full_sync.as_ref().map(|p| p.status()),
            });
        }
        use std::os::unix::ffi::OsStrExt;
        roots.push(RootStatus {
            name: r.name.clone(),
            source: ByteBuf::from(r.source.as_os_str().as_bytes().to_vec()),
            state: root_state(engine, i),
            watches: engine.watches.watches[i].load(std::sync::atomic::Ordering::Relaxed),
            targets,
        });
    }
    Response::Status(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_ms: shared.started.elapsed().as_millis() as u64,
        roots,
    })
}

async fn wait_idle(
    engine: &EngineView,
    shared: &Shared,
    target: Option<&str>,
    timeout_ms: Option<u64>,
) -> Response {
    let targets = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.unwrap_or(365 * 86_400_000));
    let mut tick = engine.tick.subscribe();
    // Barrier: every inotify event queued before this request is read and handed on first.
    let (tx, rx) = oneshot::channel();
    if engine.watch_cmd.send(WatchCmd::Barrier(tx)).await.is_ok() {
        let _ = tokio::time::timeout_at(deadline, rx).await;
    }
    loop {
        tick.borrow_and_update();
        // Cheap checks on every tick; counting happens only for the answer.
        let mut busy = *engine.waiting.borrow() > 0;
        for t in &targets {
            let v = t.view.borrow().clone();
            // A root that is not there cannot be in sync, whatever the journal says.
            let root_gone = matches!(
                *engine.roots[t.root].state.borrow(),
                RootState::Unavailable { .. }
            );
            busy = busy
                || root_gone
                || v.in_flight > 0
                || v.full_sync.is_some()
                || shared.journal.has_pending(&t.id).unwrap_or(true)
                || shared
                    .journal
                    .resyncs(&t.id)
                    .map(|r| !r.is_empty())
                    .unwrap_or(true);
            if busy {
                break;
            }
        }
        if !busy {
            let failed = targets
                .iter()
                .map(|t| shared.journal.failed_count(&t.id).unwrap_or(0))
                .sum();
            return Response::WaitIdle(IdleOutcome::Idle { failed });
        }
        tokio::select! {
            r = tick.changed() => if r.is_err() { return err(ErrorKind::Internal, "syncd is shutting down") },
            _ = sleep_until(deadline) => {
                let pending = *engine.waiting.borrow() as u64
                    + targets.iter().map(|t| shared.journal.pending_stats(&t.id).map(|s| s.0).unwrap_or(0)).sum::<u64>();
                return Response::WaitIdle(IdleOutcome::TimedOut { pending });
            }
        }
    }
}
