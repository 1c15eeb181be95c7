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
//! - a lost event stream (overflow) or an unwatchable root becomes a persisted resync request;
//! - the index (`journal::index`) gets a path's `lstat` only after the path is journaled for
//!   every target: an index behind the journal costs a push too many, never a change missed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use syncd_proto::RootState;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use crate::fs::{abs_path, Stat};
use crate::journal::Journal;
use crate::watch::{Change, Urgency};

/// Per root: what the coalescer needs to know.
pub struct RootSink {
    pub name: String,
    /// The root's source directory (its paths are `lstat`ed for the index).
    pub source: PathBuf,
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

/// Most changes taken from the channel before one journal write: a huge backlog still streams.
const TAKE_AT_ONCE: usize = 16_384;

/// What the coalescer holds between journal writes, per root where it says so.
struct Held {
    /// When each waiting path's window ends.
    deadlines: HashMap<Key, Instant>,
    /// The same, sorted by deadline.
    timers: BTreeSet<(Instant, usize, Vec<u8>)>,
    /// The next scheduled full resync of a root that cannot be fully watched.
    degraded_next: Vec<Option<Instant>>,
    /// Paths to journal now.
    ready: Vec<Vec<Vec<u8>>>,
    /// A full resync to journal now.
    resync: Vec<bool>,
    /// `wait-idle` barriers, answered after the next commit.
    barriers: Vec<oneshot::Sender<()>>,
}

impl Held {
    fn new(roots: usize) -> Held {
        Held {
            deadlines: HashMap::new(),
            timers: BTreeSet::new(),
            degraded_next: vec![None; roots],
            ready: vec![Vec::new(); roots],
            resync: vec![false; roots],
            barriers: Vec::new(),
        }
    }

    /// Whether a journal write is owed (a failed one is retried on its own, not only when the
    /// next event comes).
    fn owes_write(&self) -> bool {
        self.ready.iter().any(|r| !r.is_empty()) || self.resync.iter().any(|r| *r)
    }

    /// When to look again without an event: the first window's end, the next scheduled
    /// resync, or a second from `now` to retry an owed write.
    fn next_wake(&self, now: Instant) -> Instant {
        let far = now + Duration::from_secs(86_400);
        let retry = self.owes_write().then(|| now + Duration::from_secs(1));
        [
            self.timers.first().map(|t| t.0),
            self.degraded_next.iter().flatten().min().copied(),
            retry,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }

    /// Take one change from the watcher.
    fn take(&mut self, c: Change, roots: &[RootSink], now: Instant) {
        match c {
            Change::Path {
                root,
                path,
                urgency,
            } => self.path(root, path, urgency, &roots[root], now),
            Change::Resync { root, reason } => {
                warn!(root = %roots[root].name, %reason, "full resync requested");
                self.resync[root] = true;
            }
            Change::Degraded { root, reason } => {
                roots[root]
                    .state
                    .send_replace(RootState::ScheduledResync { reason });
                self.resync[root] = true;
                self.degraded_next[root] = Some(now + roots[root].full_resync_interval);
            }
            Change::Lost { root, reason } => {
                roots[root]
                    .state
                    .send_replace(RootState::Unavailable { reason });
            }
            Change::Back { root } => {
                roots[root].state.send_replace(RootState::Watching);
                for k in &roots[root].kicks {
                    k.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.resync[root] = true;
            }
            Change::Barrier(reply) => self.barriers.push(reply),
        }
    }

    /// A path changed: ready now, or waiting for its window (fixed from the first event, never
    /// extended).
    fn path(
        &mut self,
        root: usize,
        path: Vec<u8>,
        urgency: Urgency,
        sink: &RootSink,
        now: Instant,
    ) {
        let wait = match urgency {
            Urgency::Now => None,
            Urgency::Created => Some(sink.delay),
            Urgency::Modified => Some(sink.modify_delay),
        };
        let key = (root, path);
        match wait {
            None => {
                if let Some(at) = self.deadlines.remove(&key) {
                    self.timers.remove(&(at, key.0, key.1.clone()));
                }
                self.ready[key.0].push(key.1);
            }
            Some(_) if self.deadlines.contains_key(&key) => {}
            Some(w) => {
                let at = now + w;
                self.timers.insert((at, key.0, key.1.clone()));
                self.deadlines.insert(key, at);
            }
        }
    }

    /// Windows over and scheduled resyncs due at `now` become ready.
    fn expire(&mut self, now: Instant, roots: &[RootSink]) {
        while self.timers.first().is_some_and(|t| t.0 <= now) {
            let (_, root, path) = self.timers.pop_first().expect("checked non-empty");
            self.deadlines.remove(&(root, path.clone()));
            debug!(root = %roots[root].name, path = %String::from_utf8_lossy(&path), "coalescing window over");
            self.ready[root].push(path);
        }
        for (r, next) in self.degraded_next.iter_mut().enumerate() {
            if next.is_some_and(|n| n <= now) {
                self.resync[r] = true;
                *next = Some(now + roots[r].full_resync_interval);
            }
        }
    }

    /// At shutdown nothing waits in memory: every window ends now.
    fn end_all_windows(&mut self) {
        for (_, root, path) in std::mem::take(&mut self.timers) {
            self.ready[root].push(path);
        }
        self.deadlines.clear();
    }

    /// Paths only in memory: waiting windows, or changes a failed journal write kept back.
    fn waiting(&self) -> usize {
        self.deadlines.len()
            + self.ready.iter().map(Vec::len).sum::<usize>()
            + self.resync.iter().filter(|r| **r).count()
    }
}

impl Coalescer {
    /// Run until the watcher closes the channel, then journal everything still waiting.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Change>>) {
        let mut held = Held::new(self.roots.len());
        loop {
            let wake = held.next_wake(Instant::now());
            let mut closing = false;
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(m) => self.take_queued(m, &mut rx, &mut held),
                    None => closing = true,
                },
                _ = sleep_until(wake) => {}
            }
            // Expired windows are handled on every pass, not only when their timer branch wins:
            // under a steady stream of events the biased select would otherwise starve them.
            held.expire(Instant::now(), &self.roots);
            if closing {
                while let Ok(batch) = rx.try_recv() {
                    for c in batch {
                        held.take(c, &self.roots, Instant::now());
                    }
                }
                held.end_all_windows();
            }
            self.commit(&mut held.ready, &mut held.resync).await;
            self.waiting.send_replace(held.waiting());
            for b in held.barriers.drain(..) {
                let _ = b.send(());
            }
            if closing {
                return;
            }
        }
    }

    /// Take `first` and whatever else is queued: one journal write for all of it.
    fn take_queued(
        &self,
        first: Vec<Change>,
        rx: &mut mpsc::Receiver<Vec<Change>>,
        held: &mut Held,
    ) {
        let mut m = Some(first);
        let mut taken = 0;
        while let Some(batch) = m.take() {
            taken += batch.len();
            let now = Instant::now();
            for c in batch {
                held.take(c, &self.roots, now);
            }
            if taken < TAKE_AT_ONCE {
                m = rx.try_recv().ok();
            }
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
        // Strictly after the flush: the index never records a change the journal could lose.
        self.index(written).await;
        self.tick.send_modify(|n| *n += 1);
    }

    /// Record in the index what the journaled paths of each root are now (gone ones are
    /// removed, with what was below them), on the blocking pool: an `lstat` per path and a
    /// commit. A failure only leaves the index behind the journal.
    async fn index(&self, written: Vec<(usize, Vec<Vec<u8>>)>) {
        let work: Vec<(String, PathBuf, Vec<Vec<u8>>)> = written
            .into_iter()
            .filter(|(_, paths)| !paths.is_empty())
            .map(|(r, paths)| {
                (
                    self.roots[r].name.clone(),
                    self.roots[r].source.clone(),
                    paths,
                )
            })
            .collect();
        if work.is_empty() {
            return;
        }
        let journal = self.journal.clone();
        let done = tokio::task::spawn_blocking(move || {
            for (name, source, paths) in work {
                index_paths(&journal, &name, &source, &paths);
            }
        });
        if let Err(e) = done.await {
            warn!(error = %e, "index write failed; the next catch-up pushes these paths again");
        }
    }
}

fn index_paths(journal: &Journal, root: &str, source: &Path, paths: &[Vec<u8>]) {
    // The root itself is not an entry of its walk.
    let changes: Vec<(Vec<u8>, Option<Stat>)> = paths
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| (p.clone(), Stat::lstat(&abs_path(source, p)).ok()))
        .collect();
    if let Err(e) = journal.index_update(root, &changes) {
        warn!(root, error = %e, "index write failed; the next catch-up pushes these paths again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> RootSink {
        RootSink {
            name: "r".into(),
            source: "/nonexistent".into(),
            target_ids: vec!["r/t".into()],
            wakes: vec![Arc::new(Notify::new())],
            kicks: vec![Arc::default()],
            delay: Duration::from_millis(100),
            modify_delay: Duration::from_millis(1000),
            full_resync_interval: Duration::from_secs(300),
            state: Arc::new(watch::Sender::new(RootState::Watching)),
        }
    }

    fn path(p: &str, urgency: Urgency) -> Change {
        Change::Path {
            root: 0,
            path: p.as_bytes().to_vec(),
            urgency,
        }
    }

    /// Feed `events` (milliseconds from the start, change) and return, for each of `looks`
    /// (milliseconds), the paths that were ready to journal by then, in order.
    fn run(events: &[(u64, Change)], looks: &[u64]) -> Vec<Vec<String>> {
        let roots = [sink()];
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut held = Held::new(1);
        let mut events = events.iter().peekable();
        let mut out = Vec::new();
        for &look in looks {
            while let Some((ms, c)) = events.next_if(|(ms, _)| *ms <= look) {
                held.expire(at(*ms), &roots);
                let c = match c {
                    Change::Path {
                        root,
                        path,
                        urgency,
                    } => Change::Path {
                        root: *root,
                        path: path.clone(),
                        urgency: *urgency,
                    },
                    _ => unreachable!("paths only"),
                };
                held.take(c, &roots, at(*ms));
            }
            held.expire(at(look), &roots);
            out.push(
                held.ready[0]
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
            );
        }
        out
    }

    /// What happens, the changes at their times, when to look, and what is ready at each look.
    type Case = (&'static str, Vec<(u64, Change)>, Vec<u64>, Vec<Vec<String>>);

    #[test]
    fn coalescing_windows() {
        use Urgency::*;
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        // (events, looks, what is ready at each look)
        let cases: Vec<Case> = vec![
            (
                "a finished change is ready at once",
                vec![(0, path("f", Now))],
                vec![0],
                vec![s(&["f"])],
            ),
            (
                "a create waits delay_ms",
                vec![(0, path("f", Created))],
                vec![99, 100],
                vec![s(&[]), s(&["f"])],
            ),
            (
                "its close_write ends the wait early",
                vec![(0, path("f", Created)), (30, path("f", Now))],
                vec![29, 30, 200],
                vec![s(&[]), s(&["f"]), s(&["f"])],
            ),
            (
                "an unclosed write waits modify_delay_ms from the first event, never extended",
                vec![
                    (0, path("log", Modified)),
                    (500, path("log", Modified)),
                    (999, path("log", Modified)),
                ],
                vec![999, 1000, 1999],
                vec![s(&[]), s(&["log"]), s(&["log"])],
            ),
            (
                "paths wait side by side, each for its own window",
                vec![
                    (0, path("a", Created)),
                    (50, path("b", Created)),
                    (60, path("c", Now)),
                ],
                vec![60, 100, 150],
                vec![s(&["c"]), s(&["c", "a"]), s(&["c", "a", "b"])],
            ),
        ];
        for (what, events, looks, want) in cases {
            assert_eq!(run(&events, &looks), want, "{what}");
        }
    }

    #[test]
    fn at_shutdown_every_window_ends() {
        let roots = [sink()];
        let now = Instant::now();
        let mut held = Held::new(1);
        held.take(path("a", Urgency::Created), &roots, now);
        held.take(path("b", Urgency::Modified), &roots, now);
        assert_eq!(held.waiting(), 2);
        assert_eq!(held.next_wake(now), now + Duration::from_millis(100));
        held.end_all_windows();
        assert_eq!(held.ready[0].len(), 2);
        assert!(held.deadlines.is_empty() && held.timers.is_empty());
        // Ready but not yet journaled still counts as waiting, and owes a write within a second.
        assert_eq!(held.waiting(), 2);
        assert_eq!(held.next_wake(now), now + Duration::from_secs(1));
    }

    #[test]
    fn a_degraded_root_is_resynced_on_schedule() {
        let roots = [sink()];
        let now = Instant::now();
        let mut held = Held::new(1);
        let reason = "watch limit".to_string();
        held.take(Change::Degraded { root: 0, reason }, &roots, now);
        assert!(held.resync[0]);
        assert!(matches!(
            *roots[0].state.borrow(),
            RootState::ScheduledResync { .. }
        ));
        held.resync[0] = false;
        let next = now + Duration::from_secs(300);
        assert_eq!(held.next_wake(now), next);
        held.expire(next - Duration::from_millis(1), &roots);
        assert!(!held.resync[0]);
        held.expire(next, &roots);
        assert!(held.resync[0]);
    }

    #[tokio::test]
    async fn a_journaled_path_is_indexed_after_its_entries_and_a_gone_one_leaves_the_index() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("dir")).unwrap();
        std::fs::write(src.join("dir/f"), b"12345").unwrap();
        let journal = Journal::open(&d.path().join("state")).unwrap();
        let c = Coalescer {
            journal: journal.clone(),
            roots: vec![RootSink {
                source: src.clone(),
                ..sink()
            }],
            waiting: Arc::new(watch::Sender::new(0)),
            tick: Arc::new(watch::Sender::new(0)),
            journal_error: Arc::new(watch::Sender::new(None)),
        };
        let indexed = || -> Vec<(String, u64)> {
            journal
                .index_scan("r")
                .unwrap()
                .map(|e| {
                    let (p, e) = e.unwrap();
                    (String::from_utf8(p).unwrap(), e.stat.size)
                })
                .collect()
        };
        let paths = |v: &[&str]| vec![v.iter().map(|p| p.as_bytes().to_vec()).collect()];
        c.commit(&mut paths(&["", "dir", "dir/f"]), &mut [false])
            .await;
        assert!(journal.has_pending("r/t").unwrap());
        let dir_size = std::fs::symlink_metadata(src.join("dir")).unwrap().len();
        assert_eq!(
            indexed(),
            [("dir".to_string(), dir_size), ("dir/f".to_string(), 5)]
        );
        std::fs::remove_dir_all(src.join("dir")).unwrap();
        c.commit(&mut paths(&["dir"]), &mut [false]).await;
        assert_eq!(indexed(), []);
    }
}
