//! The JSON views of the wire types, for `syncctl --json` and `GET /status`: derived
//! `Serialize` structs over borrowed data. Fields are declared in alphabetical order, the order
//! these documents have always had (`tests/json.rs` pins the bytes).

use std::borrow::Cow;

use serde::Serialize;

use crate::{RootState, StatusReport, SyncProgress, TargetStatus, TreeSize};

/// `syncctl --json status`: every root with its targets, and the targets again as a flat list.
#[derive(Serialize)]
pub struct StatusView<'a> {
    pub pid: u32,
    pub roots: Vec<RootView<'a>>,
    pub targets: Vec<TargetView<'a>>,
    pub uptime_ms: u64,
    pub version: &'a str,
}

#[derive(Serialize)]
pub struct RootView<'a> {
    pub name: &'a str,
    pub reason: Option<&'a str>,
    pub source: Cow<'a, str>,
    pub state: &'static str,
    pub targets: Vec<TargetView<'a>>,
    pub watches: u64,
}

#[derive(Serialize, Clone)]
pub struct TargetView<'a> {
    /// Deletions held by `delete_guard`.
    pub deletes_held: u64,
    pub delivered: u64,
    pub dest: &'a str,
    pub failed: u64,
    pub full_sync: Option<ProgressView<'a>>,
    /// `root/target`.
    pub id: String,
    pub in_flight: u64,
    pub last_error: Option<&'a str>,
    pub name: &'a str,
    pub next_retry_ms: Option<u64>,
    pub oldest_pending_ms: Option<u64>,
    pub pending: u64,
    /// `unprobed`, `moves` or `plain`.
    pub renames: &'static str,
    /// Why renames are plain pushes, when they are.
    pub renames_reason: Option<&'a str>,
    pub root: &'a str,
    pub state: &'static str,
    /// Paths found stuck since the daemon started (see `syncctl failed`).
    pub stuck: u64,
    pub verify: Option<ProgressView<'a>>,
}

/// A running full sync.
#[derive(Serialize, Clone)]
pub struct ProgressView<'a> {
    pub bytes_sent: u64,
    pub checked: u64,
    pub checked_bytes: u64,
    pub deleted: u64,
    pub elapsed_ms: u64,
    pub files: u64,
    pub fraction: Option<f64>,
    pub path: Cow<'a, str>,
    pub queued: u64,
    pub total: Option<TotalView>,
}

#[derive(Serialize, Clone, Copy)]
pub struct TotalView {
    pub bytes: u64,
    pub entries: u64,
}

impl<'a> StatusView<'a> {
    pub fn of(s: &'a StatusReport) -> StatusView<'a> {
        let roots: Vec<RootView> = s.roots.iter().map(RootView::of).collect();
        let targets = roots.iter().flat_map(|r| r.targets.clone()).collect();
        StatusView {
            pid: s.pid,
            roots,
            targets,
            uptime_ms: s.uptime_ms,
            version: &s.version,
        }
    }
}

impl<'a> RootView<'a> {
    fn of(r: &'a crate::RootStatus) -> RootView<'a> {
        let (state, reason) = match &r.state {
            RootState::Watching => ("watching", None),
            RootState::ScheduledResync { reason } => ("scheduled-resync", Some(reason.as_str())),
            RootState::Unavailable { reason } => ("unavailable", Some(reason.as_str())),
        };
        RootView {
            name: &r.name,
            reason,
            source: String::from_utf8_lossy(&r.source),
            state,
            targets: r
                .targets
                .iter()
                .map(|t| TargetView::of(&r.name, t))
                .collect(),
            watches: r.watches,
        }
    }
}

impl<'a> TargetView<'a> {
    fn of(root: &'a str, t: &'a TargetStatus) -> TargetView<'a> {
        TargetView {
            deletes_held: t.deletes_held,
            delivered: t.delivered,
            dest: &t.dest,
            failed: t.failed,
            full_sync: t.full_sync.as_ref().map(ProgressView::of),
            id: format!("{root}/{}", t.name),
            in_flight: t.in_flight,
            last_error: t.last_error.as_deref(),
            name: &t.name,
            next_retry_ms: t.next_retry_ms,
            oldest_pending_ms: t.oldest_pending_ms,
            pending: t.pending,
            renames: t.renames.as_str(),
            renames_reason: match &t.renames {
                crate::RenameMode::Plain(why) => Some(why),
                _ => None,
            },
            root,
            state: t.state.as_str(),
            stuck: t.stuck,
            verify: t.verify.as_ref().map(ProgressView::of),
        }
    }
}

impl<'a> ProgressView<'a> {
    fn of(p: &'a SyncProgress) -> ProgressView<'a> {
        ProgressView {
            bytes_sent: p.bytes_sent,
            checked: p.checked,
            checked_bytes: p.checked_bytes,
            deleted: p.deleted,
            elapsed_ms: p.elapsed_ms,
            files: p.files,
            fraction: p.fraction(),
            path: String::from_utf8_lossy(&p.path),
            queued: p.queued,
            total: p
                .total
                .map(|TreeSize { entries, bytes }| TotalView { bytes, entries }),
        }
    }
}

/// `{"ok": true, "message": …}` or `{"ok": false, "error": …}`: the answer to a control action.
#[derive(Serialize)]
pub struct Outcome<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    pub ok: bool,
}

impl<'a> Outcome<'a> {
    pub fn done(message: &'a str) -> Outcome<'a> {
        Outcome {
            error: None,
            message: Some(message),
            ok: true,
        }
    }

    pub fn failed(error: &'a str) -> Outcome<'a> {
        Outcome {
            error: Some(error),
            message: None,
            ok: false,
        }
    }
}

/// One event of `syncctl --json log`.
#[derive(Serialize)]
pub struct LogEventView<'a> {
    pub error: Option<&'a str>,
    pub kind: &'static str,
    pub paths: u64,
    pub sample: Vec<Cow<'a, str>>,
    pub target: &'a str,
    pub time_ms: u64,
}

impl<'a> LogEventView<'a> {
    pub fn of(ev: &'a crate::LogEvent) -> LogEventView<'a> {
        LogEventView {
            error: ev.error.as_deref(),
            kind: ev.kind.as_str(),
            paths: ev.paths,
            sample: ev
                .sample
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect(),
            target: &ev.target,
            time_ms: ev.time_ms,
        }
    }
}

/// `syncctl --json failed`: `failed` are parked, `retrying` still retried, `held` deletions
/// wait for `syncctl release-deletes` (and `held_full_sync`, what full syncs left undeleted).
#[derive(Serialize)]
pub struct FailedView<'a> {
    pub failed: Vec<FailedPathView<'a>>,
    pub held: Vec<HeldPathView<'a>>,
    pub held_full_sync: Vec<HeldFullSyncView<'a>>,
    pub held_more: u64,
    pub more: u64,
    pub retrying: Vec<RetryingPathView<'a>>,
    pub retrying_more: u64,
    /// Paths found pending with nothing running to deliver them, and what was done.
    pub stuck: Vec<StuckPathView<'a>>,
}

#[derive(Serialize)]
pub struct StuckPathView<'a> {
    pub ago_ms: u64,
    pub path: Cow<'a, str>,
    pub target: &'a str,
    pub what: &'a str,
}

#[derive(Serialize)]
pub struct HeldPathView<'a> {
    pub path: Cow<'a, str>,
    pub target: &'a str,
}

#[derive(Serialize)]
pub struct HeldFullSyncView<'a> {
    pub deletions: u64,
    pub path: Cow<'a, str>,
    pub target: &'a str,
}

#[derive(Serialize)]
pub struct RetryingPathView<'a> {
    pub attempts: u32,
    pub last_error: &'a str,
    pub next_retry_ms: u64,
    pub path: Cow<'a, str>,
    pub target: &'a str,
}

#[derive(Serialize)]
pub struct FailedPathView<'a> {
    pub attempts: u32,
    pub last_error: &'a str,
    pub path: Cow<'a, str>,
    pub target: &'a str,
}

impl<'a> FailedView<'a> {
    pub fn of(list: &'a crate::FailedList) -> FailedView<'a> {
        FailedView {
            failed: list
                .entries
                .iter()
                .map(|e| FailedPathView {
                    attempts: e.attempts,
                    last_error: &e.last_error,
                    path: String::from_utf8_lossy(&e.path),
                    target: &e.target,
                })
                .collect(),
            more: list.more,
            retrying: list
                .retrying
                .iter()
                .map(|e| RetryingPathView {
                    attempts: e.attempts,
                    last_error: &e.last_error,
                    next_retry_ms: e.next_retry_ms,
                    path: String::from_utf8_lossy(&e.path),
                    target: &e.target,
                })
                .collect(),
            retrying_more: list.retrying_more,
            held: list
                .held
                .iter()
                .map(|e| HeldPathView {
                    path: String::from_utf8_lossy(&e.path),
                    target: &e.target,
                })
                .collect(),
            held_more: list.held_more,
            held_full_sync: list
                .held_full
                .iter()
                .map(|e| HeldFullSyncView {
                    deletions: e.deletions,
                    path: String::from_utf8_lossy(&e.path),
                    target: &e.target,
                })
                .collect(),
            stuck: list
                .stuck
                .iter()
                .map(|e| StuckPathView {
                    ago_ms: e.ago_ms,
                    path: String::from_utf8_lossy(&e.path),
                    target: &e.target,
                    what: &e.what,
                })
                .collect(),
        }
    }
}

/// `syncctl --json wait-idle`: `{"failed":N,"idle":true}`, `{"idle":false,"pending":N}`, or
/// `{"deletes_held":N,"failed":N,"idle":false}`.
#[derive(Serialize)]
pub struct IdleView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletes_held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    pub idle: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

impl IdleView {
    pub fn of(o: &crate::IdleOutcome) -> IdleView {
        match *o {
            crate::IdleOutcome::Idle { failed } => IdleView {
                deletes_held: None,
                failed: Some(failed),
                idle: true,
                pending: None,
            },
            crate::IdleOutcome::TimedOut { pending } => IdleView {
                deletes_held: None,
                failed: None,
                idle: false,
                pending: Some(pending),
            },
            crate::IdleOutcome::DeletesHeld { held, failed } => IdleView {
                deletes_held: Some(held),
                failed: Some(failed),
                idle: false,
                pending: None,
            },
        }
    }
}

/// `syncctl --json verify`.
#[derive(Serialize)]
pub struct VerifyView<'a> {
    pub drift: bool,
    pub targets: Vec<TargetDriftView<'a>>,
}

#[derive(Serialize)]
pub struct TargetDriftView<'a> {
    pub dir: Cow<'a, str>,
    pub elapsed_ms: u64,
    pub error: Option<&'a str>,
    pub more: u64,
    pub paths: Vec<DriftPathView<'a>>,
    pub target: &'a str,
}

#[derive(Serialize)]
pub struct DriftPathView<'a> {
    pub itemized: &'a str,
    pub kind: &'static str,
    pub path: Cow<'a, str>,
}

impl<'a> VerifyView<'a> {
    pub fn of(r: &'a crate::VerifyReport) -> VerifyView<'a> {
        VerifyView {
            drift: r.drift(),
            targets: r
                .targets
                .iter()
                .map(|t| TargetDriftView {
                    dir: String::from_utf8_lossy(&t.dir),
                    elapsed_ms: t.elapsed_ms,
                    error: t.error.as_deref(),
                    more: t.more,
                    paths: t
                        .paths
                        .iter()
                        .map(|p| DriftPathView {
                            itemized: &p.itemized,
                            kind: p.kind.as_str(),
                            path: String::from_utf8_lossy(&p.path),
                        })
                        .collect(),
                    target: &t.target,
                })
                .collect(),
        }
    }
}

/// `syncctl --json versions PATH`.
#[derive(Serialize)]
pub struct VersionsView<'a> {
    pub path: Cow<'a, str>,
    pub targets: Vec<TargetVersionsView<'a>>,
}

#[derive(Serialize)]
pub struct TargetVersionsView<'a> {
    pub dir: Option<&'a str>,
    pub error: Option<&'a str>,
    pub target: &'a str,
    pub versions: Vec<KeptVersionView<'a>>,
}

#[derive(Serialize)]
pub struct KeptVersionView<'a> {
    /// Where it is at the target, relative to the target root.
    pub at: String,
    pub run: &'a str,
    pub size: u64,
}

impl<'a> VersionsView<'a> {
    pub fn of(list: &'a crate::VersionsList) -> VersionsView<'a> {
        let path = String::from_utf8_lossy(&list.path);
        let targets = list
            .targets
            .iter()
            .map(|t| TargetVersionsView {
                dir: t.dir.as_deref(),
                error: t.error.as_deref(),
                target: &t.target,
                versions: t
                    .versions
                    .iter()
                    .map(|v| KeptVersionView {
                        at: format!("{}/{}/{}", t.dir.as_deref().unwrap_or(""), v.run, path),
                        run: &v.run,
                        size: v.size,
                    })
                    .collect(),
            })
            .collect();
        VersionsView { path, targets }
    }
}
