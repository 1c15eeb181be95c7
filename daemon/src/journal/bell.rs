//! The bell between the journal's writer and a target's worker.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How a target's worker is woken: the coalescer rings it with the number of paths it just
/// journaled (so a stream the worker paces starts as soon as it makes a full batch), anything
/// else just nudges it.
#[derive(Default)]
pub struct Bell {
    notify: Notify,
    fresh: AtomicUsize,
}

impl Bell {
    /// `paths` new paths were journaled for the target.
    pub fn ring(&self, paths: usize) {
        self.fresh.fetch_add(paths, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Look again (a resync, a retry, a pause or resume).
    pub fn notify_one(&self) {
        self.notify.notify_one();
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Paths journaled since the last batch started.
    pub fn fresh(&self) -> usize {
        self.fresh.load(Ordering::Relaxed)
    }

    /// A batch starts: what was journaled before is in it, or not due.
    pub fn clear(&self) {
        self.fresh.store(0, Ordering::Relaxed);
    }
}
