//! Coalescing: turns the watcher's [`Change`]s into journal entries for every target of the root,
//! and wakes the targets.
//!
//! Invariants:
//! - a finished change (close_write, delete, move, attrib, mkdir) is journaled and flushed at
//!   once, batched with whatever else is already queued: under load batches grow by themselves;
//! - a create or an unclosed write waits in memory for at most `delay` / `modify_delay` (fixed
//!   from the first event, never extended, so a file written forever is still pushed) — a
//!   close_write ends the wait early;
//! - at shutdown every waiting path is journaled before the task ends;
//! - a lost event stream (overflow) or an unwatchable root becomes a persisted resync request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use syncd_proto::RootState;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use crate::journal::Journal;
use crate::watch::{Change, Urgency};

/// Per root: what the coalescer needs to know.
pub struct RootSink {
    pub name: String,
    pub target_ids: Vec<String>,
    pub wakes: Vec<Arc<Notify>>,
    /// Set to cut a target's backoff short (the root is back).
    pub kicks: Vec<Arc<std::sync::atomic::AtomicBool>>,
    pub delay: Duration,
    pub modify_delay: Duration,
    pub full_resync_interval: Duration,
    pub state: Arc<watch::Sender<RootState>>,
}

/// The coalescer task.
pub struct Coalescer {
    pub journal: Journal,
    pub roots: Vec<RootSink>,
    /// Paths waiting in memory; `wait-idle` is not idle while this is above zero.
    pub waiting: Arc<watch::Sender<usize>>,
    pub tick: Arc<watch::Sender<u64>>,
    /// Journal write failures, shown by `status`.
    pub journal_error: Arc<watch::Sender<Option<String>>>,
}

type Key = (usize, Vec<u8>);

impl Coalescer {
    /// Run until the watcher closes the channel, then journal everything still waiting.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Change>>) {
        let mut deadlines: HashMap<Key, Instant> = HashMap::new();
        let mut timers: BTreeSet<(Instant, usize, Vec<u8>)> = BTreeSet::new();
        let mut degraded_next: Vec<Option<Instant>> = vec![None; self.roots.len()];
        let mut ready: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.roots.len()];
        let mut resync: Vec<bool> = vec![false; self.roots.len()];
        let mut barriers = Vec::new();
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            let next_timer = timers.first().map(|t| t.0).unwrap_or(far);
            let next_degraded = degraded_next.iter().flatten().min().copied().unwrap_or(far);
            // A failed journal write is retried on its own, not only when the next event comes.
            let next_retry = if ready.iter().any(|r| !r.is_empty()) || resync.iter().any(|r| *r) {
                Instant::now() + Duration::from_secs(1)
            } else {
                far
            };
            let mut closing = false;
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(m) => {
                        let mut m = Some(m);
                        // Take whatever else is queued: one journal write for all of it.
                        let mut taken = 0;
                        while let Some(batch) = m.take() {
                            taken += batch.len();
                            for c in batch {
                                self.take(c, &mut deadlines, &mut timers, &mut ready, &mut resync, &mut degraded_next, &mut barriers);
                            }
                            if taken < 16_384 {
                                m = rx.try_recv().ok();
                            }
                        }
                    }
                    None => closing = true,
                },
                _ = sleep_until(next_timer) => {}
                _ = sleep_until(next_degraded) => {}
                _ = sleep_until(next_retry) => {}
            }
            // Expired windows are handled on every pass, not only when their timer branch wins:
            // under a steady stream of events the biased select would otherwise starve them.
            let now = Instant::now();
            while timers.first().is_some_and(|t| t.0 <= now) {
                let (_, root, path) = timers.pop_first().expect("checked non-empty");
                deadlines.remove(&(root, path.clone()));
                debug!(root = %self.roots[root].name, path = %String::from_utf8_lossy(&path), "coalescing window over");
                ready[root].push(path);
            }
            for (r, next) in degraded_next.iter_mut().enumerate() {
                if next.is_some_and(|n| n <= now) {
                    resync[r] = true;
                    *next = Some(now + self.roots[r].full_resync_interval);
                }
            }
            if closing {
                // Nothing waits in memory past shutdown: it goes to the journal now.
                while let Ok(batch) = rx.try_recv() {
                    for c in batch {
                        self.take(
                            c,
                            &mut deadlines,
                            &mut timers,
                            &mut ready,
                            &mut resync,
                            &mut degraded_next,
                            &mut barriers,
                        );
                    }
                }
                for (_, root, path) in std::mem::take(&mut timers) {
                    ready[root].push(path);
                }
                deadlines.clear();
            }
            self.commit(&mut ready, &mut resync).await;
            // Not idle while anything is only in memory: waiting windows, or changes a failed
            // journal write kept back.
            let held =
                ready.iter().map(Vec::len).sum::<usize>() + resync.iter().filter(|r| **r).count();
            self.waiting.send_replace(deadlines.len() + held);
            for b in barriers.drain(..) {
                let _ = b.send(());
            }
            if closing {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        c: Change,
        deadlines: &mut HashMap<Key, Instant>,
        timers: &mut BTreeSet<(Instant, usize, Vec<u8>)>,
        ready: &mut [Vec<Vec<u8>>],
        resync: &mut [bool],
        degraded_next: &mut [Option<Instant>],
        barriers: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) {
        match c {
            Change::Path {
                root,
                path,
                urgency,
            } => {
                let wait = match urgency {
                    Urgency::Now => None,
                    Urgency::Created => Some(self.roots[root].delay),
                    Urgency::Modified => Some(self.roots[root].modify_delay),
                };
                let key = (root, path);
                match wait {
                    None => {
                        if let Some(at) = deadlines.remove(&key) {
                            timers.remove(&(at, key.0, key.1.clone()));
                        }
                        ready[key.0].push(key.1);
                    }
                    Some(_) if deadlines.contains_key(&key) => {}
                    Some(w) => {
                        let at = Instant::now() + w;
                        timers.insert((at, key.0, key.1.clone()));
                        deadlines.insert(key, at);
                    }
                }
            }
            Change::Resync { root, reason } => {
                warn!(root = %self.roots[root].name, %reason, "full resync requested");
                resync[root] = true;
            }
            Change::Degraded { root, reason } => {
                self.roots[root]
                    .state
                    .send_replace(RootState::ScheduledResync { reason });
                resync[root] = true;
                degraded_next[root] = Some(Instant::now() + self.roots[root].full_resync_interval);
            }
            Change::Lost { root, reason } => {
                self.roots[root]
                    .state
                    .send_replace(RootState::Unavailable { reason });
            }
            Change::Back { root } => {
                self.roots[root].state.send_replace(RootState::Watching);
                for k in &self.roots[root].kicks {
                    k.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                resync[root] = true;
            }
            Change::Barrier(reply) => barriers.push(reply),
        }
    }

    async fn commit(&self, ready: &mut [Vec<Vec<u8>>], resync: &mut [bool]) {
        // What this commit wrote, per root: given back if the flush fails, because a failed
        // flush closes the journal and the unflushed writes are gone with it.
        let mut written: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
        let mut error = None;
        for (r, paths) in ready.iter_mut().enumerate() {
            if paths.is_empty() && !resync[r] {
                continue;
            }
            let sink = &self.roots[r];
            let mut res = Ok(());
            if resync[r] {
                for t in &sink.target_ids {
                    res = res.and_then(|_| self.journal.request_resync(t, b""));
                }
            }
            if !paths.is_empty() {
                paths.sort_unstable();
                paths.dedup();
                res = res.and_then(|_| self.journal.record(&sink.target_ids, paths));
            }
            match res {
                Ok(()) => {
                    written.push((r, std::mem::take(paths)));
                    resync[r] = false;
                }
                Err(e) => {
                    // Keep the paths in memory and retry; the root is owed a full resync in
                    // case the process dies before that.
                    warn!(error = %e, "journal write failed; keeping changes in memory");
                    error = Some(format!("journal write failed: {e}"));
                    resync[r] = true;
                }
            }
        }
        if written.is_empty() && error.is_none() {
            return;
        }
        if !written.is_empty() {
            if let Err(e) = self.journal.flush().await {
                warn!(error = %e, "journal flush failed; keeping changes in memory");
                error = Some(format!("journal flush failed: {e}"));
                for (r, paths) in written.drain(..) {
                    ready[r].extend(paths);
                    resync[r] = true;
                }
            }
        }
        self.journal_error.send_replace(error);
        // Only the targets of roots that got new work; `written` is empty if the flush failed.
        for (r, _) in &written {
            for w in &self.roots[*r].wakes {
                w.notify_one();
            }
        }
        self.tick.send_modify(|n| *n += 1);
    }
}
