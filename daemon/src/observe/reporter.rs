//! The one place the dispatcher reports to: every delivered batch, parked path, finished full
//! sync and rsync run reaches the metrics, the `syncctl log` ring and the hooks through here,
//! so the three never disagree about what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncd_proto::LogKind;
use tracing::warn;

use super::hooks::Hooks;
use super::log::Events;
use super::metrics::TargetMetrics;
use crate::journal::Item;

/// What one target's dispatcher reports to; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    /// `root/target`.
    pub id: String,
    pub hooks: Hooks,
    pub metrics: TargetMetrics,
    pub events: Events,
    /// Full syncs finished in this generation, all targets together (see `Engine::stop`).
    pub full_done: Arc<AtomicU64>,
}

impl Reporter {
    /// An rsync run of `kind` (`batch` or `full`) ended with `exit`, having sent `bytes`.
    pub fn rsync_run(&self, kind: &str, exit: &str, bytes: u64) {
        self.metrics.rsync_run(kind, exit, bytes);
    }

    /// The target confirmed `items`; `confirmed` of them were still current and left the
    /// journal.
    pub fn delivered(&self, items: &[Item], confirmed: u64) {
        self.metrics.delivered(items, confirmed);
        self.events.publish(
            &self.id,
            LogKind::Delivered,
            items.iter().map(|i| i.path.as_slice()),
            None,
        );
        self.hooks
            .delivered(items.iter().map(|i| i.path.as_slice()));
    }

    /// `path` was parked as failed for `error`.
    pub fn parked(&self, path: &[u8], error: &str) {
        warn!(target = %self.id, path = %String::from_utf8_lossy(path), error = %error, "path parked as failed");
        self.hooks.parked(path, error);
        self.events
            .publish(&self.id, LogKind::Failed, [path], Some(error));
    }

    /// `path` was found stuck (see `dispatch::liveness`): `what` says why and what was done.
    /// `on_failure` and `syncctl log` are told like of a parked path.
    pub fn stuck(&self, path: &[u8], what: &str) {
        self.metrics.stuck();
        self.hooks.parked(path, what);
        self.events
            .publish(&self.id, LogKind::Failed, [path], Some(what));
    }

    /// The deletions `held` were held by `delete_guard`; `total` of the target's are held now.
    pub fn deletes_held(&self, held: &[Item], total: u64) {
        let error = format!(
            "{total} deletion(s) held by delete_guard; check the source, then `syncctl release-deletes {}` pushes them",
            self.target_name()
        );
        warn!(target = %self.id, held = held.len(), total, "mass deletion held by delete_guard");
        self.hooks
            .held(held.iter().map(|i| i.path.as_slice()), &error);
    }

    /// A full sync of `sub` stopped deleting at `delete_guard`'s limit, `skipped` short; `total`
    /// of the target's deletions are held now.
    pub fn full_deletes_held(&self, sub: &[u8], skipped: u64, total: u64) {
        let error = format!(
            "{total} deletion(s) held by delete_guard ({skipped} by a full sync); check the source, then `syncctl release-deletes {}` pushes them",
            self.target_name()
        );
        warn!(target = %self.id, sub = %String::from_utf8_lossy(sub), skipped, total, "full sync's deletions held by delete_guard");
        let dir: &[u8] = if sub.is_empty() { b"." } else { sub };
        self.hooks.held([dir], &error);
    }

    /// The target's own name (the part of `root/target` after the root).
    fn target_name(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or(&self.id)
    }

    /// A full sync of `sub` (empty: the root) finished, having changed `changed` entries;
    /// `warning` is what it could not transfer, if anything.
    pub fn full_synced(&self, sub: &[u8], changed: u64, warning: Option<&str>) {
        self.metrics.synced();
        self.full_done.fetch_add(1, Ordering::Relaxed);
        // Which paths a full sync changed is not known exactly (rsync's names are escaped
        // ambiguously): the hook is told the directory it brought up to date, `.` for the root.
        if changed > 0 {
            let dir: &[u8] = if sub.is_empty() { b"." } else { sub };
            self.hooks.delivered([dir]);
        }
        self.events
            .publish(&self.id, LogKind::FullSync, [sub], warning);
    }
}
