//! Coalescing: turns the watcher's [`Change`]s into journal entries for every target of the root,
//! and wakes the targets.
//!
//! Invariants:
//! - a finished change (close_write, delete, move, attrib, mkdir) is journaled and flushed at
//!   once, batched with whatever else is already queued: under load batches grow by themselves;
//! - a create waits in memory for `delay` (fixed from its first event); a file written without
//!   being closed until a quiet `modify_delay` after its last write, so a file being written
//!   is pushed once, at its close, not half-written — but never longer than
//!   `longest_write_wait` from its first event, so a file written forever is still pushed; a
//!   close_write ends the wait at once;
//! - at shutdown every waiting path is journaled before the task ends;
//! - at start, and when events were lost (an overflow, a root back after it was away), each
//!   root catches up (`catchup`): a local walk diffed against the index, whose findings are
//!   journaled like events; a full sync only where the index or the journal cannot vouch;
//! - an unwatchable root becomes a persisted resync request, rescheduled;
//! - the index (`journal::index`) gets a path's `lstat` only after the path is journaled for
//!   every target: an index behind the journal costs a push too many, never a change missed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use syncd_proto::LogKind;
use syncd_proto::RootState;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::catchup;
use crate::config::RootConfig;
use crate::dispatch::inbox::{Command, Inbox};
use crate::fs::{abs_path, Stat};
use crate::journal::{Journal, JournalError, Rename};
use crate::links::Links;
use crate::observe::log::Events;
use crate::watch::{Change, Urgency};

/// What a root does first, before any event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootStart {
    /// Nothing (no catch-up asked for, or the root is away: it catches up when it is back).
    Nothing,
    /// Catch up with what changed while nobody watched; `whole`: why every target is owed a
    /// full sync whatever the index says (its source replaced, the last process killed).
    CatchUp { whole: Option<catchup::FullSyncWhy> },
}

/// What a catch-up of a root is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    /// At start: also owe a full sync to each target that never finished one.
    Start { whole: Option<catchup::FullSyncWhy> },
    /// Events were lost: find what changed.
    Diff,
    /// A full sync of every target, for this reason; the index still follows the source.
    Full(String),
}

/// Per root: what the coalescer needs to know.
pub struct RootSink {
    /// Its paths are `lstat`ed for the index from `config.source`.
    pub config: Arc<RootConfig>,
    pub start: RootStart,
    pub target_ids: Vec<String>,
    /// Its targets' workers: told what was journaled, and that the root is back.
    pub inboxes: Vec<Inbox>,
    pub state: Arc<watch::Sender<RootState>>,
    /// The start's catch-up walk, begun beside the watcher's (taken by the first catch-up).
    pub early: std::sync::Mutex<Option<catchup::Early>>,
}

impl RootSink {
    fn name(&self) -> &str {
        &self.config.name
    }
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
    /// Where owed full syncs and catch-ups are told (`syncctl log`).
    pub events: Events,
    /// The names of hard-linked files (used on the blocking pool).
    pub links: Arc<std::sync::Mutex<Links>>,
}

type Key = (usize, Vec<u8>);

/// A waiting path's window: when it ends, and the latest writes that keep coming may move it.
#[derive(Debug, Clone, Copy)]
struct Window {
    at: Instant,
    cap: Instant,
}

/// Why a root is owed a full sync after a failed journal write.
const WRITE_FAILED: &str =
    "a journal write failed: changes held in memory would be lost if syncd stopped now";

/// Journal writes start no sooner than this after the previous one: a lone change is written at
/// once, a stream of them costs one journal write (flush, index commit) per gap instead of one
/// per file.
pub const COMMIT_GAP: Duration = Duration::from_millis(25);

/// Most changes taken from the channel before one journal write: a huge backlog still streams.
const TAKE_AT_ONCE: usize = 16_384;

/// What the coalescer holds between journal writes, per root where it says so.
struct Held {
    /// When each waiting path's window ends.
    deadlines: HashMap<Key, Window>,
    /// The same, sorted by deadline.
    timers: BTreeSet<(Instant, usize, Vec<u8>)>,
    /// The next scheduled full resync of a root that cannot be fully watched.
    degraded_next: Vec<Option<Instant>>,
    /// Paths to journal now.
    ready: Vec<Vec<Vec<u8>>>,
    /// Of those, directories moved away: what the index holds below them is journaled too.
    trees: Vec<Vec<Vec<u8>>>,
    /// Renames inside the root: journaled as moves with the paths.
    moves: Vec<Vec<Rename>>,
    /// A full resync to journal now, and why.
    resync: Vec<Option<String>>,
    /// A catch-up to run now (events were lost, or a scheduled full sync).
    catch_up: Vec<Option<Ask>>,
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
            trees: vec![Vec::new(); roots],
            moves: vec![Vec::new(); roots],
            resync: vec![None; roots],
            catch_up: vec![None; roots],
            barriers: Vec::new(),
        }
    }

    /// Whether a journal write is owed (a failed one is retried on its own, not only when the
    /// next event comes).
    fn owes_write(&self) -> bool {
        self.ready.iter().any(|r| !r.is_empty()) || self.resync.iter().any(Option::is_some)
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

    /// Ask root `root` for a catch-up; a full sync asked for stays asked.
    fn ask(&mut self, root: usize, ask: Ask) {
        if !matches!(self.catch_up[root], Some(Ask::Full(_))) {
            self.catch_up[root] = Some(ask);
        }
    }

    /// Take one change from the watcher.
    fn take(&mut self, c: Change, roots: &[RootSink], now: Instant) {
        match c {
            Change::Path {
                root,
                path,
                urgency,
            } => self.path(root, path, urgency, &roots[root], now),
            Change::TreeGone { root, path } => {
                self.path(root, path.clone(), Urgency::Now, &roots[root], now);
                self.trees[root].push(path);
            }
            Change::TreeMoved { root, from, to } => {
                self.take(
                    Change::TreeGone {
                        root,
                        path: from.clone(),
                    },
                    roots,
                    now,
                );
                self.moves[root].push(Rename {
                    from,
                    to,
                    dir: true,
                });
            }
            Change::FileMoved { root, from, to } => {
                self.moves[root].push(Rename {
                    from,
                    to,
                    dir: false,
                });
            }
            Change::Resync { root, reason } => {
                warn!(root = %roots[root].name(), %reason, "events were lost; catching up");
                self.ask(root, Ask::Diff);
            }
            Change::Degraded { root, reason } => {
                roots[root].state.send_replace(RootState::ScheduledResync {
                    reason: reason.clone(),
                });
                self.ask(root, Ask::Full(reason));
                self.degraded_next[root] = Some(now + roots[root].config.full_resync_interval);
            }
            Change::Lost { root, reason } => {
                roots[root]
                    .state
                    .send_replace(RootState::Unavailable { reason });
            }
            Change::Back { root } => {
                roots[root].state.send_replace(RootState::Watching);
                for t in &roots[root].inboxes {
                    t.send(Command::Retry);
                }
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
            Urgency::Created => Some(sink.config.delay),
            Urgency::Modified => Some(sink.config.modify_delay),
        };
        let key = (root, path);
        match (wait, self.deadlines.get_mut(&key)) {
            (None, _) => {
                if let Some(w) = self.deadlines.remove(&key) {
                    self.timers.remove(&(w.at, key.0, key.1.clone()));
                }
                self.ready[key.0].push(key.1);
            }
            // Still being written: a quiet modify_delay after this write, by the cap.
            (Some(quiet), Some(w)) if urgency == Urgency::Modified => {
                let at = (now + quiet).min(w.cap).max(w.at);
                if at != w.at {
                    self.timers.remove(&(w.at, key.0, key.1.clone()));
                    self.timers.insert((at, key.0, key.1.clone()));
                    w.at = at;
                }
            }
            (Some(_), Some(_)) => {}
            (Some(wait), None) => {
                let at = now + wait;
                let cap = now + sink.config.longest_write_wait();
                self.timers.insert((at, key.0, key.1.clone()));
                self.deadlines.insert(key, Window { at, cap });
            }
        }
    }

    /// Windows over and scheduled resyncs due at `now` become ready.
    fn expire(&mut self, now: Instant, roots: &[RootSink]) {
        while self.timers.first().is_some_and(|t| t.0 <= now) {
            let (_, root, path) = self.timers.pop_first().expect("checked non-empty");
            self.deadlines.remove(&(root, path.clone()));
            debug!(root = %roots[root].name(), path = %String::from_utf8_lossy(&path), "coalescing window over");
            self.ready[root].push(path);
        }
        for (r, next) in self.degraded_next.iter_mut().enumerate() {
            if next.is_some_and(|n| n <= now) {
                let why = format!(
                    "scheduled every {} s while the root cannot be fully watched",
                    roots[r].config.full_resync_interval.as_secs()
                );
                self.catch_up[r] = Some(Ask::Full(why));
                *next = Some(now + roots[r].config.full_resync_interval);
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
            + self.resync.iter().filter(|r| r.is_some()).count()
            + self.catch_up.iter().filter(|c| c.is_some()).count()
    }
}

impl Coalescer {
    /// Run until the watcher closes the channel, then journal everything still waiting.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Change>>) {
        let mut held = Held::new(self.roots.len());
        for r in 0..self.roots.len() {
            if let RootStart::CatchUp { whole } = self.roots[r].start.clone() {
                self.catch_up(r, Ask::Start { whole }, &mut held).await;
            }
        }
        self.waiting.send_replace(held.waiting());
        // When the last journal write began, and until when ready paths gather for the next.
        let mut last_commit: Option<Instant> = None;
        let mut gather: Option<Instant> = None;
        loop {
            let wake = held.next_wake(Instant::now());
            let wake = gather.map_or(wake, |g| g.min(wake));
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
            let now = Instant::now();
            let urgent =
                closing || !held.barriers.is_empty() || held.catch_up.iter().any(Option::is_some);
            gather = last_commit
                .map(|t| t + COMMIT_GAP)
                .filter(|g| *g > now && !urgent && held.owes_write());
            if gather.is_none() {
                if held.owes_write() {
                    last_commit = Some(now);
                }
                self.commit_held(&mut held).await;
            }
            for r in 0..self.roots.len() {
                if let Some(ask) = held.catch_up[r].take() {
                    self.catch_up(r, ask, &mut held).await;
                }
            }
            if closing {
                // What a failed catch-up owes, journaled before the end.
                self.commit_held(&mut held).await;
            }
            self.waiting.send_replace(held.waiting());
            for b in held.barriers.drain(..) {
                let _ = b.send(());
            }
            if closing {
                return;
            }
        }
    }

    /// Catch root `r` up with what changed unseen (see [`catchup::plan`]), as `ask` says. A
    /// failure owes every target a full sync instead.
    async fn catch_up(&self, r: usize, ask: Ask, held: &mut Held) {
        let began = std::time::Instant::now();
        let sink = &self.roots[r];
        let (journal, root, ids) = (
            self.journal.clone(),
            sink.config.clone(),
            sink.target_ids.clone(),
        );
        let (at_start, whole) = match &ask {
            Ask::Start { whole } => (true, whole.clone()),
            Ask::Diff | Ask::Full(_) => (false, None),
        };
        let early = match at_start {
            true => sink.early.lock().unwrap_or_else(|e| e.into_inner()).take(),
            false => None,
        };
        let plan =
            blocking(move || catchup::plan(&journal, &root, &ids, at_start, whole, early)).await;
        let mut plan = match plan {
            Ok(p) => p,
            Err(e) => {
                warn!(root = %sink.name(), error = %e, "catch-up failed; a full sync instead");
                held.resync[r] = Some(format!("the catch-up failed: {e}"));
                return;
            }
        };
        if let Ask::Full(why) = ask {
            for f in plan.full.iter_mut().filter(|f| f.is_none()) {
                *f = Some(catchup::FullSyncWhy::Asked(why.clone()));
            }
        }
        if let Err(e) = self.journal_plan(r, &plan).await {
            warn!(root = %sink.name(), error = %e, "journaling the catch-up failed; a full sync instead");
            self.journal_error
                .send_replace(Some(format!("journal write failed: {e}")));
            held.resync[r] = Some(WRITE_FAILED.to_string());
            return;
        }
        let (found, walked) = (plan.found.len(), plan.walked);
        if !plan.rebuild {
            // After the journal and before the push, like every index write (see `commit`).
            let (journal, name) = (self.journal.clone(), sink.name().to_string());
            let found = std::mem::take(&mut plan.found);
            // A failure is recorded by the journal: the next catch-up is a full sync.
            let done = blocking(move || Ok((catchup::index_found(&journal, &name, &found), found)));
            if let Ok((_, found)) = done.await {
                plan.found = found;
            }
        }
        self.tell_plan(r, &plan);
        let ms = began.elapsed().as_millis() as u64;
        if !plan.rebuild {
            info!(root = %sink.name(), walked, found, ms, "caught up");
            return;
        }
        // Every target is owed a full sync: the index is built while they run.
        let (journal, root) = (self.journal.clone(), sink.config.clone());
        match blocking(move || catchup::rebuild(&journal, &root)).await {
            Ok(n) => {
                info!(root = %sink.name(), entries = n, ms = began.elapsed().as_millis() as u64, "index built")
            }
            Err(e) => {
                warn!(root = %sink.name(), error = %e, "index not built; the next catch-up is a full sync")
            }
        }
    }

    /// Journal what a catch-up decided (full syncs owed, paths found) and flush.
    async fn journal_plan(&self, r: usize, plan: &catchup::Plan) -> Result<(), JournalError> {
        let sink = &self.roots[r];
        if let Some(Some(catchup::FullSyncWhy::Untrusted(u))) = plan.full.first() {
            if u.is_damage() {
                warn!(root = %sink.name(), why = %u, "the index cannot be trusted; every target gets a full sync and the index is rebuilt");
            }
        }
        let mut catching = Vec::new();
        for (id, why) in sink.target_ids.iter().zip(&plan.full) {
            match why {
                Some(_) => self.journal.request_resync(id, b"")?,
                None => catching.push(id.clone()),
            }
        }
        let paths: Vec<Vec<u8>> = plan.found.iter().map(|f| f.path.clone()).collect();
        if !paths.is_empty() && !catching.is_empty() {
            self.journal.record(&catching, &paths)?;
        }
        self.journal.flush().await
    }

    /// Wake the root's targets and tell `syncctl log` what the catch-up decided and found.
    fn tell_plan(&self, r: usize, plan: &catchup::Plan) {
        let sink = &self.roots[r];
        for t in &sink.inboxes {
            t.send(Command::Wake {
                fresh: plan.found.len(),
            });
        }
        for (id, why) in sink.target_ids.iter().zip(&plan.full) {
            match why {
                Some(why) => self.events.full_sync_owed(id, b"", &why.to_string()),
                None => self.events.publish(
                    id,
                    LogKind::CaughtUp,
                    plan.found.iter().map(|f| f.path.as_slice()),
                    None,
                ),
            }
        }
        self.tick.send_modify(|n| *n += 1);
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

    /// Journal what is ready (with what the index holds below each directory moved away).
    async fn commit_held(&self, held: &mut Held) {
        for r in 0..self.roots.len() {
            if held.trees[r].is_empty() {
                continue;
            }
            let (journal, name) = (self.journal.clone(), self.roots[r].name().to_string());
            let trees = std::mem::take(&mut held.trees[r]);
            let below = blocking(move || {
                let mut out = Vec::new();
                for t in &trees {
                    out.extend(journal.index_paths_below(&name, t)?);
                }
                Ok(out)
            });
            match below.await {
                Ok(paths) => held.ready[r].extend(paths),
                Err(e) => {
                    // The target may keep what was below: a full sync removes it.
                    warn!(root = %self.roots[r].name(), error = %e, "what was below a directory moved away is unknown; a full sync instead");
                    held.resync[r].get_or_insert_with(|| {
                        format!(
                            "the index could not tell what was below a directory moved away: {e}"
                        )
                    });
                }
            }
        }
        self.commit(&mut held.ready, &mut held.moves, &mut held.resync)
            .await;
    }

    /// Journal root `r`'s share of a commit for each of its targets: the full resync it is
    /// owed (`resync`), its renames, then its paths (sorted, without duplicates).
    fn write_root(
        &self,
        r: usize,
        paths: &mut Vec<Vec<u8>>,
        moves: &[Rename],
        resync: bool,
    ) -> Result<(), JournalError> {
        let targets = &self.roots[r].target_ids;
        if resync {
            for t in targets {
                self.journal.request_resync(t, b"")?;
            }
        }
        if !paths.is_empty() {
            paths.sort_unstable();
            paths.dedup();
            self.journal.record_moves(targets, moves)?;
            self.journal.record(targets, paths)?;
        }
        Ok(())
    }

    async fn commit(
        &self,
        ready: &mut [Vec<Vec<u8>>],
        moves: &mut [Vec<Rename>],
        resync: &mut [Option<String>],
    ) {
        // What this commit wrote, per root: given back if the flush fails, because a failed
        // flush closes the journal and the unflushed writes are gone with it.
        let mut written: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
        // Full syncs requested, and why: told once they are flushed.
        let mut owed: Vec<(usize, String)> = Vec::new();
        let mut error = None;
        for (r, paths) in ready.iter_mut().enumerate() {
            if paths.is_empty() && resync[r].is_none() {
                continue;
            }
            match self.write_root(r, paths, &moves[r], resync[r].is_some()) {
                Ok(()) => {
                    moves[r].clear();
                    written.push((r, std::mem::take(paths)));
                    owed.extend(resync[r].take().map(|why| (r, why)));
                }
                Err(e) => {
                    // Keep the paths in memory and retry; the root is owed a full resync in
                    // case the process dies before that.
                    warn!(error = %e, "journal write failed; keeping changes in memory");
                    error = Some(format!("journal write failed: {e}"));
                    resync[r].get_or_insert_with(|| WRITE_FAILED.to_string());
                }
            }
        }
        if written.is_empty() && error.is_none() {
            return;
        }
        if !written.is_empty() {
            if let Err(e) = self.journal.flush_changes().await {
                warn!(error = %e, "journal flush failed; keeping changes in memory");
                error = Some(format!("journal flush failed: {e}"));
                for (r, paths) in written.drain(..) {
                    ready[r].extend(paths);
                    resync[r].get_or_insert_with(|| WRITE_FAILED.to_string());
                }
                for (r, why) in owed.drain(..) {
                    resync[r] = Some(why);
                }
            }
        }
        self.journal_error.send_replace(error);
        for (r, why) in &owed {
            for t in &self.roots[*r].target_ids {
                self.events.full_sync_owed(t, b"", why);
            }
        }
        // Only the targets of roots that got new work; `written` is empty if the flush failed.
        let woken: Vec<(usize, usize)> = written.iter().map(|(r, p)| (*r, p.len())).collect();
        for (r, paths) in &written {
            debug!(root = %self.roots[*r].name(), paths = paths.len(), "changes journaled");
        }
        // Strictly after the flush: the index never records a change the journal could lose.
        // And before the push: a path that reaches a target is in the index before its entry
        // can leave the journal (else a delete made while syncd is down goes unseen).
        self.index(written).await;
        for (r, paths) in woken {
            for t in &self.roots[r].inboxes {
                t.send(Command::Wake { fresh: paths });
            }
        }
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
                    self.roots[r].config.name.clone(),
                    self.roots[r].config.source.clone(),
                    paths,
                )
            })
            .collect();
        if work.is_empty() {
            return;
        }
        let (journal, links) = (self.journal.clone(), self.links.clone());
        let done = blocking(move || {
            let mut siblings = Vec::new();
            for (name, source, paths) in work {
                let changes = index_paths(&journal, &name, &source, &paths);
                let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
                match links.siblings(&journal, &name, &changes) {
                    Ok(s) if !s.is_empty() => siblings.push((name, source, s)),
                    Ok(_) => {}
                    Err(e) => warn!(root = %name, error = %e, "hard-link siblings not found"),
                }
            }
            Ok(siblings)
        });
        match done.await {
            Ok(s) if !s.is_empty() => self.push_siblings(s).await,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "index write failed; the next catch-up is a full sync"),
        }
    }

    /// The other names of hard-linked files just journaled: journaled too (before the targets
    /// are woken), then indexed.
    async fn push_siblings(&self, siblings: Vec<(String, PathBuf, Vec<Vec<u8>>)>) {
        for (name, _, paths) in &siblings {
            let Some(sink) = self.roots.iter().find(|s| s.name() == name) else {
                continue;
            };
            debug!(root = %name, paths = paths.len(), "hard-link siblings journaled");
            if let Err(e) = self.journal.record(&sink.target_ids, paths) {
                warn!(root = %name, error = %e, "hard-link siblings not journaled");
            }
        }
        if let Err(e) = self.journal.flush_changes().await {
            warn!(error = %e, "hard-link siblings not journaled");
            return;
        }
        let journal = self.journal.clone();
        let _ = blocking(move || {
            for (name, source, paths) in siblings {
                index_paths(&journal, &name, &source, &paths);
            }
            Ok(())
        })
        .await;
    }
}

/// Run `f` on the blocking pool; a task that panicked is a journal error.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, JournalError> + Send + 'static,
) -> Result<R, JournalError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(JournalError::Io(sled::Error::ReportableBug(format!(
            "catch-up task failed: {e}"
        ))))
    })
}

/// `lstat` the paths and write what they are now into the index; returns what was written.
fn index_paths(
    journal: &Journal,
    root: &str,
    source: &Path,
    paths: &[Vec<u8>],
) -> Vec<(Vec<u8>, Option<Stat>)> {
    // The root itself is not an entry of its walk.
    let changes: Vec<(Vec<u8>, Option<Stat>)> = paths
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| (p.clone(), Stat::lstat(&abs_path(source, p)).ok()))
        .collect();
    // A failure is recorded by the journal: the next catch-up is a full sync.
    let _ = journal.index_update(root, &changes);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_at(source: &Path) -> Arc<RootConfig> {
        Arc::new(RootConfig {
            name: "r".into(),
            source: source.to_path_buf(),
            excludes: Default::default(),
            delay: Duration::from_millis(100),
            modify_delay: Duration::from_millis(1000),
            full_resync_interval: Duration::from_secs(300),
            delete_guard: Default::default(),
            targets: Vec::new(),
        })
    }

    fn sink() -> RootSink {
        RootSink {
            config: root_at(Path::new("/nonexistent")),
            start: RootStart::Nothing,
            target_ids: vec!["r/t".into()],
            inboxes: vec![Inbox::channel().0],
            state: Arc::new(watch::Sender::new(RootState::Watching)),
            early: Default::default(),
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
                "an unclosed write waits a quiet modify_delay_ms after its last write",
                vec![
                    (0, path("log", Modified)),
                    (500, path("log", Modified)),
                    (999, path("log", Modified)),
                ],
                vec![1000, 1998, 1999],
                vec![s(&[]), s(&[]), s(&["log"])],
            ),
            (
                "a file created and then written waits for its writes, not only delay_ms",
                vec![
                    (0, path("dd", Created)),
                    (50, path("dd", Modified)),
                    (900, path("dd", Modified)),
                    (1700, path("dd", Now)),
                ],
                vec![100, 1699, 1700],
                vec![s(&[]), s(&[]), s(&["dd"])],
            ),
            (
                "writes that keep coming wait 10 modify_delay_ms from the first at most",
                (0..=24)
                    .map(|i| (i * 500, path("busy", Modified)))
                    .collect(),
                vec![9999, 10_000, 12_000],
                vec![s(&[]), s(&["busy"]), s(&["busy"])],
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
        assert_eq!(held.catch_up[0], Some(Ask::Full("watch limit".into())));
        assert!(matches!(
            *roots[0].state.borrow(),
            RootState::ScheduledResync { .. }
        ));
        held.catch_up[0] = None;
        let next = now + Duration::from_secs(300);
        assert_eq!(held.next_wake(now), next);
        held.expire(next - Duration::from_millis(1), &roots);
        assert!(held.catch_up[0].is_none());
        held.expire(next, &roots);
        assert!(matches!(&held.catch_up[0], Some(Ask::Full(why)) if why.contains("every 300 s")));
        // A catch-up asked meanwhile does not take the full sync's place.
        held.ask(0, Ask::Diff);
        assert!(matches!(held.catch_up[0], Some(Ask::Full(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_change_is_journaled_at_once_and_a_stream_once_per_commit_gap() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let journal = Journal::open(&d.path().join("state")).unwrap();
        let (waiting, tick) = (
            Arc::new(watch::Sender::new(0)),
            Arc::new(watch::Sender::new(0)),
        );
        let c = Coalescer {
            journal: journal.clone(),
            roots: vec![RootSink {
                config: root_at(&src),
                ..sink()
            }],
            waiting: waiting.clone(),
            tick: tick.clone(),
            journal_error: Arc::new(watch::Sender::new(None)),
            events: Events::default(),
            links: Arc::default(),
        };
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(c.run(rx));
        let mut ticks = tick.subscribe();
        let t0 = Instant::now();
        tx.send(vec![path("a", Urgency::Now)]).await.unwrap();
        ticks.wait_for(|n| *n >= 1).await.unwrap();
        assert_eq!(Instant::now(), t0, "a lone change waits for nothing");
        // The next one, right behind it, gathers until the gap is over: in memory meanwhile.
        tx.send(vec![path("b", Urgency::Now)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), ticks.wait_for(|n| *n >= 2))
            .await
            .expect("the second change is journaled")
            .unwrap();
        assert!(Instant::now() > t0, "journaled before the gap was over");
        assert_eq!(
            Instant::now(),
            t0 + COMMIT_GAP,
            "journaled when the gap is over"
        );
        assert_eq!(*waiting.borrow(), 0);
        drop(tx);
        task.await.unwrap();
        let (due, _) = journal.due("r/t", u64::MAX, 10, &mut |_| false).unwrap();
        let due: Vec<&[u8]> = due.iter().map(|i| i.path.as_slice()).collect();
        assert_eq!(due, [b"a".as_slice(), b"b"]);
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
                config: root_at(&src),
                ..sink()
            }],
            waiting: Arc::new(watch::Sender::new(0)),
            tick: Arc::new(watch::Sender::new(0)),
            journal_error: Arc::new(watch::Sender::new(None)),
            events: Events::default(),
            links: Arc::default(),
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
        c.commit(
            &mut paths(&["", "dir", "dir/f"]),
            &mut [Vec::new()],
            &mut [None],
        )
        .await;
        assert!(journal.has_pending("r/t").unwrap());
        let dir_size = std::fs::symlink_metadata(src.join("dir")).unwrap().len();
        assert_eq!(
            indexed(),
            [("dir".to_string(), dir_size), ("dir/f".to_string(), 5)]
        );
        std::fs::remove_dir_all(src.join("dir")).unwrap();
        c.commit(&mut paths(&["dir"]), &mut [Vec::new()], &mut [None])
            .await;
        assert_eq!(indexed(), []);
    }
}
