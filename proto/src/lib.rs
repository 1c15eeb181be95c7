//! Wire protocol between `syncd` and `syncctl`.
//!
//! Every message travels as one frame: a `u32` big-endian payload length followed by a bincode 1.3
//! payload (varint integers, little endian, trailing bytes rejected). The first exchange on a
//! connection is `Request::Hello` / `Response::Hello`; a peer speaking another
//! [`PROTOCOL_VERSION`] is rejected before anything else is decoded.
//!
//! Invariants:
//! - bincode is not self-describing: enum variants are only ever **appended**, never reordered or
//!   removed, and `proto/tests/golden.rs` pins the encoding of every message.
//! - This crate does no IO. The length of a frame is checked against a maximum before anything is
//!   allocated for it, and every payload is decoded with a byte limit, so a hostile length or a
//!   hostile inner length can never make the reader allocate more than the limit.
//! - Paths are bytes ([`ByteBuf`]): Linux file names need not be UTF-8.

pub mod json;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

/// Version of this protocol; bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u16 = 8;

/// Largest request frame the daemon accepts (requests are small; anything bigger is hostile).
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;

/// Largest response frame a client accepts (a long failed-path list fits; a runaway one does not).
pub const MAX_RESPONSE_FRAME: usize = 16 * 1024 * 1024;

/// Length of the frame header: a big-endian `u32` payload length.
pub const HEADER_LEN: usize = 4;

/// A request from `syncctl` (or any client) to the daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// First message on every connection.
    Hello { protocol: u16 },
    /// Per root and target state and counters.
    Status,
    /// Stop pushing to one target (`Some(name)`) or to all of them; changes keep being journaled.
    Pause { target: Option<String> },
    /// Undo `Pause`.
    Resume { target: Option<String> },
    /// Full rsync of every root (or the one containing `path`), to one target or all.
    Resync {
        target: Option<String>,
        path: Option<ByteBuf>,
    },
    /// Move parked (failed) paths back into the pending queue.
    RetryFailed { target: Option<String> },
    /// List parked paths with their last error, at most `limit` of them.
    ListFailed { target: Option<String>, limit: u32 },
    /// Answer once nothing is pending or in flight (for one target, or all), or after
    /// `timeout_ms`.
    WaitIdle {
        target: Option<String>,
        timeout_ms: Option<u64>,
    },
    /// Re-read the configuration file; a bad one is rejected and the running one kept.
    Reload,
    /// Shut the daemon down cleanly.
    Shutdown,
    /// The recent delivered and failed batches as `Event`s, then `Done`; with `follow`, the
    /// connection then streams new ones as they happen instead, until the client goes.
    Log { follow: bool },
    /// Compare the targets (one, or all) with the source, changing nothing: a dry-run rsync of
    /// every root (or the directory `path` inside one); `checksum` compares content, not size
    /// and time.
    Verify {
        target: Option<String>,
        path: Option<ByteBuf>,
        checksum: bool,
    },
    /// The versions each target (one, or all) keeps of the absolute source `path` (`versions`
    /// in the target's configuration).
    Versions {
        target: Option<String>,
        path: ByteBuf,
    },
    /// Push the deletions `delete_guard` holds for one target, or for all of them.
    ReleaseDeletes { target: Option<String> },
}

/// The daemon's answer to one [`Request`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Hello`: the daemon's protocol and program version.
    Hello { protocol: u16, version: String },
    /// The request was carried out; `message` says what was done, for humans.
    Done { message: String },
    /// Answer to `Status`.
    Status(StatusReport),
    /// Answer to `ListFailed`.
    Failed(Box<FailedList>),
    /// Answer to `WaitIdle`.
    WaitIdle(IdleOutcome),
    /// The request could not be carried out.
    Error { kind: ErrorKind, message: String },
    /// One entry of `Log`.
    Event(LogEvent),
    /// Answer to `Verify`.
    Verify(VerifyReport),
    /// Answer to `Versions`.
    Versions(VersionsList),
}

/// The kept versions of one path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VersionsList {
    /// The path relative to its root.
    pub path: ByteBuf,
    pub targets: Vec<TargetVersions>,
}

/// What one target keeps of the path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TargetVersions {
    /// `root/target`.
    pub target: String,
    /// The versions directory at the target root; None: the target keeps no versions.
    pub dir: Option<String>,
    /// Oldest first.
    pub versions: Vec<KeptVersion>,
    /// Why the target could not be asked.
    pub error: Option<String>,
}

/// One kept version: the run that replaced or deleted it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    /// The run's directory name (its UTC time, RFC 3339).
    pub run: String,
    pub size: u64,
}

/// What `Verify` found, per target.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub targets: Vec<TargetDrift>,
}

impl VerifyReport {
    /// Whether any target differs from the source.
    pub fn drift(&self) -> bool {
        self.targets
            .iter()
            .any(|t| !t.paths.is_empty() || t.more > 0)
    }

    /// Whether any target could not be compared.
    pub fn errors(&self) -> bool {
        self.targets.iter().any(|t| t.error.is_some())
    }
}

/// How one target differs from the source.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TargetDrift {
    /// `root/target`.
    pub target: String,
    /// The directory compared, relative to the root; empty for the whole root.
    pub dir: ByteBuf,
    /// Why it could not be compared (target down, root unavailable); nothing is listed then.
    pub error: Option<String>,
    /// The differing paths (relative to the root, as rsync names them: unprintable bytes
    /// escaped as `\#ooo`), the first ones up to the daemon's limit.
    pub paths: Vec<DriftPath>,
    /// Differing paths not listed because of the limit.
    pub more: u64,
    pub elapsed_ms: u64,
}

/// One path that differs between source and target.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DriftPath {
    pub path: ByteBuf,
    pub kind: DriftKind,
    /// rsync's itemized change string (`>f.st......`, `*deleting`).
    pub itemized: String,
}

/// How a path differs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// At the source, not at the target.
    Missing,
    /// At the target, not at the source.
    Extra,
    /// Other content of the same size (found with `checksum`), a symlink pointing elsewhere.
    Content,
    /// Another size.
    Size,
    /// Another modification time.
    Time,
    /// Permissions, owner, group, ACLs or extended attributes only.
    Attributes,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Extra => "extra",
            DriftKind::Content => "content",
            DriftKind::Size => "size",
            DriftKind::Time => "time",
            DriftKind::Attributes => "attributes",
        }
    }
}

/// Something that happened to a target's paths (`syncctl log`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// `root/target`.
    pub target: String,
    pub kind: LogKind,
    /// How many paths.
    pub paths: u64,
    /// The first few of them.
    pub sample: Vec<ByteBuf>,
    /// Why, for failures.
    pub error: Option<String>,
}

/// What a [`LogEvent`] reports.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A batch was confirmed by the target.
    Delivered,
    /// A path was parked as failed.
    Failed,
    /// A full sync of a directory finished.
    FullSync,
    /// The stream skipped this many events (the client read too slowly).
    Skipped,
    /// A full sync of a directory is owed instead of a catch-up (or was asked for); `error`
    /// says why.
    FullSyncOwed,
    /// A catch-up (at start, or after lost events) journaled what changed unseen: `paths` of
    /// them, found by a local walk diffed against the index.
    CaughtUp,
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Delivered => "delivered",
            LogKind::Failed => "failed",
            LogKind::FullSync => "full-sync",
            LogKind::Skipped => "skipped",
            LogKind::FullSyncOwed => "full-sync-owed",
            LogKind::CaughtUp => "caught-up",
        }
    }
}

/// Why a request failed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The peer speaks another protocol version.
    ProtocolMismatch,
    /// The frame could not be decoded or the request makes no sense here.
    BadRequest,
    /// No target with that name.
    UnknownTarget,
    /// The path is not inside any watched root.
    UnknownPath,
    /// The peer is not allowed to use the control socket.
    Denied,
    /// A reload was refused because the new configuration is invalid.
    Config,
    /// Something inside the daemon failed (journal I/O, for instance).
    Internal,
}

/// Snapshot of the whole daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub roots: Vec<RootStatus>,
}

/// One `[[sync]]` root.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RootStatus {
    pub name: String,
    pub source: ByteBuf,
    pub state: RootState,
    /// Directories under inotify watch.
    pub watches: u64,
    pub targets: Vec<TargetStatus>,
}

/// How changes under a root are detected.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RootState {
    /// Every directory is watched; changes are pushed as they happen.
    Watching,
    /// Watching is incomplete (watch limit, say): the root is kept in sync by scheduled full
    /// resyncs instead.
    ScheduledResync { reason: String },
    /// The root itself is gone, replaced or unmounted: nothing is pushed until it is back.
    Unavailable { reason: String },
}

/// One target of one root.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub name: String,
    pub dest: String,
    pub state: TargetState,
    /// Paths journaled and not yet confirmed by the target.
    pub pending: u64,
    /// Paths in the rsync running now.
    pub in_flight: u64,
    /// Paths parked after exhausting their attempts.
    pub failed: u64,
    /// Paths confirmed since the daemon started.
    pub delivered: u64,
    /// Age of the oldest pending path.
    pub oldest_pending_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Time until the next attempt when in backoff.
    pub next_retry_ms: Option<u64>,
    /// Progress of a full sync while one runs.
    pub full_sync: Option<SyncProgress>,
    /// Progress of a `verify` of this target while one runs (`files`: paths found to differ).
    pub verify: Option<SyncProgress>,
    /// How a directory renamed at the source reaches this target.
    pub renames: RenameMode,
    /// Deletions held by `delete_guard` until `ReleaseDeletes`.
    pub deletes_held: u64,
    /// Paths found pending with nothing running to deliver them since the daemon started (a
    /// bug of syncd's; each was pushed again): see `FailedList::stuck`.
    pub stuck: u64,
}

/// How a directory renamed at the source reaches a target.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RenameMode {
    /// Not known until the first rename probes the target.
    Unprobed,
    /// Moved: its files are linked from the old directory at the target (`--link-dest`).
    Moves,
    /// Pushed like new files, and why (the probe found `--link-dest` not linking there).
    Plain(String),
}

impl RenameMode {
    /// The name used in `syncctl --json status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RenameMode::Unprobed => "unprobed",
            RenameMode::Moves => "moves",
            RenameMode::Plain(_) => "plain",
        }
    }
}

/// What a target is doing.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Running,
    Paused,
    Backoff,
    InitialSync,
}

impl TargetState {
    /// The name used in `syncctl status` and its JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Running => "running",
            TargetState::Paused => "paused",
            TargetState::Backoff => "backoff",
            TargetState::InitialSync => "initial-sync",
        }
    }
}

/// Progress of a running full sync: one directory (the root, or a subdirectory owed a resync)
/// at a time.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SyncProgress {
    /// Since this directory's rsync started.
    pub elapsed_ms: u64,
    /// Entries rsync has sent (new or changed) or deleted so far.
    pub files: u64,
    /// The directory being synced, relative to the root; empty for the whole root.
    pub path: ByteBuf,
    /// Further directories owed a full sync after this one, in the same run.
    pub queued: u64,
    /// Entries of the source rsync has compared with the target so far, up to date or not.
    pub checked: u64,
    /// Sizes of the non-directory entries checked so far.
    pub checked_bytes: u64,
    /// Of `files`, the deletions at the target.
    pub deleted: u64,
    /// Bytes rsync has sent so far (its `%b`: data and protocol overhead).
    pub bytes_sent: u64,
    /// What the directory holds, once syncd has counted it beside rsync: what `checked` and
    /// `checked_bytes` run up to.
    pub total: Option<TreeSize>,
}

/// Entries (the directory itself included) and bytes (sizes of its non-directories) of a tree.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSize {
    pub entries: u64,
    pub bytes: u64,
}

impl SyncProgress {
    /// How far along the sync is, 0.0 to 1.0, by entries checked; `None` until the total is
    /// known. Never 1.0 while it runs (the tree can grow under it).
    pub fn fraction(&self) -> Option<f64> {
        let total = self.total?;
        let f = self.checked as f64 / total.entries.max(1) as f64;
        Some(f.clamp(0.0, 0.999))
    }
}

/// Parked paths, paths failing but still retried, and deletions held by `delete_guard`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FailedList {
    pub entries: Vec<FailedPath>,
    /// Parked paths not listed because of the limit.
    pub more: u64,
    /// Paths that failed and wait for their next attempt (not parked yet).
    pub retrying: Vec<RetryingPath>,
    /// Retrying paths not listed because of the limit.
    pub retrying_more: u64,
    /// Deletions held by `delete_guard` until `ReleaseDeletes`.
    pub held: Vec<HeldPath>,
    /// Held deletions not listed because of the limit.
    pub held_more: u64,
    /// What guarded full syncs left undeleted (rsync counts them; it does not name them).
    pub held_full: Vec<HeldFullSync>,
    /// The latest paths found stuck (pending with nothing running to deliver them), and what
    /// was done about each.
    pub stuck: Vec<StuckPath>,
}

/// A path found pending at a running target with nothing running to deliver it: a bug of
/// syncd's own, told rather than left silent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StuckPath {
    /// `root/target`.
    pub target: String,
    /// Path relative to the root.
    pub path: ByteBuf,
    /// How long ago it was found.
    pub ago_ms: u64,
    /// Why, and what syncd did about it.
    pub what: String,
}

/// A deletion held by `delete_guard`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HeldPath {
    /// `root/target`.
    pub target: String,
    /// Path relative to the root.
    pub path: ByteBuf,
}

/// Deletions a full sync of `path` left undone at `delete_guard`'s limit (`--max-delete`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HeldFullSync {
    /// `root/target`.
    pub target: String,
    /// The full sync's subpath relative to the root (empty: the whole root).
    pub path: ByteBuf,
    /// How many deletions rsync skipped.
    pub deletions: u64,
}

/// A path that failed and is still retried.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RetryingPath {
    /// `root/target`.
    pub target: String,
    /// Path relative to the root.
    pub path: ByteBuf,
    /// Attempts spent so far.
    pub attempts: u32,
    /// Milliseconds until the next attempt (0: due now).
    pub next_retry_ms: u64,
    pub last_error: String,
}

/// One parked path and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FailedPath {
    /// `root/target`.
    pub target: String,
    /// Path relative to the root.
    pub path: ByteBuf,
    pub attempts: u32,
    pub last_error: String,
}

/// Answer to `WaitIdle`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum IdleOutcome {
    /// Nothing pending or in flight; `failed` paths are parked.
    Idle { failed: u64 },
    /// The timeout passed first.
    TimedOut { pending: u64 },
    /// Nothing else is pending or in flight, but `delete_guard` holds `held` deletions: not
    /// idle until `ReleaseDeletes` (answered at once rather than waiting for the timeout).
    DeletesHeld { held: u64, failed: u64 },
}

/// The demo's control socket (syncd with no configuration), relative to the directory it runs
/// in: `syncctl` run from that directory finds it without `--socket`.
pub const DEMO_SOCKET: &str = "syncd-demo/syncd.sock";

/// Where the control socket lives when neither the config nor `--socket` says: `/run/syncd/syncd.sock`
/// for root, `$XDG_RUNTIME_DIR/syncd/syncd.sock` (or `/tmp/syncd-UID/syncd.sock`) for other users.
/// Shared so that `syncd` and `syncctl` always agree.
pub fn default_socket_path() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return "/run/syncd/syncd.sock".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d).join("syncd/syncd.sock"),
        _ => std::path::PathBuf::from(format!("/tmp/syncd-{uid}/syncd.sock")),
    }
}

/// Errors of the codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
}

fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit as u64)
}

/// Encode `msg` as a payload (no header).
pub fn encode_payload<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let payload = options(max).serialize(msg)?;
    if payload.len() > max {
        return Err(CodecError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(payload)
}

/// Encode `msg` as a whole frame: header and payload.
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let payload = encode_payload(msg, max)?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Validate a frame header and return the payload length it announces.
pub fn frame_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decode one complete payload; never allocates more than `max` bytes for it.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], max: usize) -> Result<T, CodecError> {
    if payload.len() > max {
        return Err(CodecError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(options(max).deserialize(payload)?)
}

/// Split one frame off the front of `buf`: `Ok(None)` while it is incomplete, otherwise the
/// payload and the number of bytes consumed.
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = frame_len(header.try_into().expect("slice of HEADER_LEN bytes"), max)?;
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .map(|payload| (payload, HEADER_LEN + len)))
}

/// The JSON of `syncctl --json status` and of `GET /status`: one object per root with its
/// targets, and the targets again as a flat list (`targets`, each with its `id`).
pub fn status_json(s: &StatusReport) -> String {
    serde_json::to_string(&json::StatusView::of(s)).expect("a view of plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_non_utf8_path() {
        let req = Request::Resync {
            target: Some("t".into()),
            path: Some(ByteBuf::from(b"dir/bad\xff\xfe.bin".to_vec())),
        };
        let frame = encode_frame(&req, MAX_REQUEST_FRAME).unwrap();
        let (payload, used) = split_frame(&frame, MAX_REQUEST_FRAME).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let back: Request = decode_payload(payload, MAX_REQUEST_FRAME).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn huge_length_is_rejected_before_allocation() {
        let err = frame_len([0xff, 0xff, 0xff, 0xff], MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(
            err,
            CodecError::TooLarge {
                len: 0xffff_ffff,
                ..
            }
        ));
    }

    #[test]
    fn hostile_inner_length_is_a_decode_error_not_an_abort() {
        // Variant `Pause`, `Some`, then a string claiming 2^40 bytes.
        let payload = [2u8, 1, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(decode_payload::<Request>(&payload, MAX_REQUEST_FRAME).is_err());
    }

    #[test]
    fn incomplete_frame_waits_for_more() {
        let frame = encode_frame(&Request::Status, MAX_REQUEST_FRAME).unwrap();
        assert!(split_frame(&frame[..2], MAX_REQUEST_FRAME)
            .unwrap()
            .is_none());
        assert!(split_frame(&frame[..frame.len() - 1], MAX_REQUEST_FRAME)
            .unwrap()
            .is_none());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut payload = encode_payload(&Request::Status, MAX_REQUEST_FRAME).unwrap();
        payload.push(0);
        assert!(decode_payload::<Request>(&payload, MAX_REQUEST_FRAME).is_err());
    }
}
