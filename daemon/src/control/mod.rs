//! The control interface: `syncctl` requests in over the Unix socket (and the same requests over
//! HTTP), answers out. One file per request, named after the `syncctl` command.
//!
//! - `socket`: binding the socket privately, and who may connect;
//! - `connection`: the accept loop and one connection's frames (`frame`: proto's framing as a
//!   tokio decoder);
//! - `status`, `pause` (and resume), `resync`, `retry_failed`, `failed`, `wait_idle`, `reload`,
//!   `stop`, `log`, `verify`: the requests;
//! - `http`: the optional HTTP face of the same requests.
//!
//! Invariants:
//! - the socket is never reachable with looser permissions than configured, and every
//!   connection is checked with SO_PEERCRED;
//! - a malformed frame ends that connection only; a client that says nothing is dropped after a
//!   timeout, and a flood of connections neither exhausts the daemon nor locks `syncctl` out;
//! - a request that wrote to the journal is answered only once the write is on disk.

mod connection;
mod failed;
mod frame;
pub mod http;
mod log;
mod pause;
mod release_deletes;
mod reload;
mod resync;
mod retry_failed;
mod socket;
mod status;
mod stop;
#[cfg(test)]
mod tests;
mod verify;
mod versions;
mod wait_idle;

use std::sync::Arc;

use syncd_proto::{ErrorKind, Request, Response};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use connection::serve;
pub use socket::{bind, Access, ControlError};

use crate::engine::EngineView;
use crate::journal::Journal;

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

/// What a request's PATH must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Names {
    /// A directory there now, reached from the root through directories only (`resync`,
    /// `verify`: a full sync or a comparison of it).
    Dir,
    /// Any name beneath the root, there or not (`versions`: a deleted file's are kept).
    Any,
}

/// The targets `target` names (all of them for `None`), each with the directory of its root
/// that the absolute `path` names (empty: the whole root; targets of other roots are left
/// out), or the error answer saying why there are none.
fn chosen<'a>(
    engine: &'a EngineView,
    target: Option<&str>,
    path: Option<syncd_proto::ByteBuf>,
    names: Names,
) -> Result<Vec<(&'a crate::dispatch::TargetHandle, Vec<u8>)>, Response> {
    let ts = engine.select(target)?;
    let sub_for_root = locate(engine, path, names)?;
    let chosen: Vec<_> = ts
        .into_iter()
        .filter_map(|t| match &sub_for_root {
            Some((r, _)) if *r != t.root => None,
            Some((_, s)) => Some((t, s.clone())),
            None => Some((t, Vec::new())),
        })
        .collect();
    if chosen.is_empty() {
        return Err(err(
            ErrorKind::UnknownTarget,
            "that target does not replicate the root containing the path",
        ));
    }
    Ok(chosen)
}

/// The root holding the absolute `path` and the path inside it (`None` without a path), or
/// the error answer naming it. The path is taken as written, never resolved: `.` and empty
/// components are dropped, `..` is refused (it could name something outside the root), and
/// with [`Names::Dir`] every component must be a directory, not a symlink (a full sync through
/// a symlink would read and delete outside the root and the target).
fn locate(
    engine: &EngineView,
    path: Option<syncd_proto::ByteBuf>,
    names: Names,
) -> Result<Option<(usize, Vec<u8>)>, Response> {
    let Some(p) = path else {
        return Ok(None);
    };
    let shown = String::from_utf8_lossy(&p).into_owned();
    let parts = match components(&p) {
        Ok(parts) => parts,
        Err(why) => return Err(err(ErrorKind::BadRequest, format!("{shown}: {why}"))),
    };
    let found = engine.roots.iter().enumerate().find_map(|(i, r)| {
        let root = components(r.source.as_os_str().as_encoded_bytes()).ok()?;
        parts
            .strip_prefix(root.as_slice())
            .map(|rel| (i, rel.to_vec()))
    });
    let Some((i, rel)) = found else {
        return Err(err(
            ErrorKind::UnknownPath,
            format!("{shown} is not inside any watched root"),
        ));
    };
    if names == Names::Dir {
        real_directory(&engine.roots[i].source, &rel, &shown)?;
    }
    Ok(Some((i, rel.join(&b'/'))))
}

/// The components of an absolute path as written, `.` and empty ones dropped; why not.
fn components(p: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if !p.starts_with(b"/") {
        return Err("not an absolute path (syncctl sends paths absolute)");
    }
    let parts: Vec<&[u8]> = p
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.contains(&&b".."[..]) {
        return Err("`..` is not allowed (the path could leave the root): name the directory by its own path inside the root");
    }
    Ok(parts)
}

/// Check that `rel` (components below `root`) is a directory reached through directories only.
fn real_directory(root: &std::path::Path, rel: &[&[u8]], shown: &str) -> Result<(), Response> {
    use std::os::unix::ffi::OsStrExt;
    let mut at = root.to_path_buf();
    for (n, c) in rel.iter().enumerate() {
        at.push(std::ffi::OsStr::from_bytes(c));
        let here = String::from_utf8_lossy(&rel[..=n].join(&b'/')).into_owned();
        let last = n + 1 == rel.len();
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err(
                    ErrorKind::UnknownPath,
                    format!("{shown} does not exist ({here} is not there)"),
                ));
            }
            Err(e) => {
                return Err(err(
                    ErrorKind::UnknownPath,
                    format!("{shown}: cannot read {here}: {e}"),
                ));
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(
                    ErrorKind::BadRequest,
                    format!("{shown}: {here} is a symlink; syncd replicates it as a link and never syncs through one: name a directory of the root"),
                ));
            }
            Ok(m) if !m.is_dir() && last => {
                let parent = std::path::Path::new(shown.trim_end_matches('/'))
                    .parent()
                    .map_or_else(|| "/".to_string(), |p| p.display().to_string());
                return Err(err(
                    ErrorKind::BadRequest,
                    format!("{shown} is not a directory: name the directory holding it ({parent})"),
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(err(
                    ErrorKind::UnknownPath,
                    format!("{shown} does not exist ({here} is not a directory)"),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

fn err(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

/// Carry out one request: the control socket's and the HTTP interface's single implementation.
pub(crate) async fn answer(req: Request, shared: &Shared) -> Response {
    let Some(engine) = shared.engine.borrow().clone() else {
        return err(ErrorKind::Internal, "syncd is starting");
    };
    match req {
        Request::Hello { .. } => err(ErrorKind::BadRequest, "already greeted"),
        Request::Status => status::status(&engine, shared),
        Request::Pause { target } => pause::set_paused(&engine, target.as_deref(), true).await,
        Request::Resume { target } => pause::set_paused(&engine, target.as_deref(), false).await,
        Request::Resync { target, path } => {
            let resp = resync::resync(&engine, shared, target.as_deref(), path);
            durable(shared, resp).await
        }
        Request::RetryFailed { target } => {
            let resp = retry_failed::retry_failed(&engine, shared, target.as_deref());
            durable(shared, resp).await
        }
        Request::ReleaseDeletes { target } => {
            let resp = release_deletes::release_deletes(&engine, shared, target.as_deref());
            durable(shared, resp).await
        }
        Request::ListFailed { target, limit } => {
            failed::list_failed(&engine, shared, target.as_deref(), limit)
        }
        Request::WaitIdle { target, timeout_ms } => {
            wait_idle::wait_idle(&engine, shared, target.as_deref(), timeout_ms).await
        }
        Request::Reload => reload::reload(shared).await,
        Request::Verify {
            target,
            path,
            checksum,
        } => verify::verify(&engine, target.as_deref(), path, checksum).await,
        Request::Versions { target, path } => {
            versions::versions(&engine, target.as_deref(), path).await
        }
        // Answered by the connection itself (it streams).
        Request::Log { .. } => err(
            ErrorKind::BadRequest,
            "log is only served on the control socket",
        ),
        Request::Shutdown => stop::stop(shared),
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
