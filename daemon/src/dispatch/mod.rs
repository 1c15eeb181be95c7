//! One task per target: takes due paths from the journal, pushes them with rsync, confirms or
//! reschedules them, and keeps the target's backoff.
//!
//! Invariants:
//! - a path is in at most one rsync at a time, and neither is anything above or below it (the
//!   [`InFlight`] set): concurrent rsyncs never race over one part of the tree;
//! - a path leaves the journal only through [`Journal::confirm`] after rsync reported it
//!   delivered;
//! - a target-level failure (transport, auth, disk full, killed rsync) puts the target in
//!   backoff without spending the paths' attempts: a dead target costs one probe per step;
//! - exit 23 is narrowed by splitting the batch until the failing paths are single, and only
//!   those spend attempts; after `max_attempts` they are parked as failed with rsync's reason;
//! - owed full resyncs run alone, after at most two batches of journaled paths;
//! - a batch starts no sooner than [`PACE`] after the previous one: a quiet target pushes a
//!   change at once, a stream costs one rsync per pace, a backlog runs on `workers` rsyncs;
//! - refused at the server's `max connections` while other pushes run, the worker narrows its
//!   parallelism instead of backing off;
//! - timers are deadlines slept on with `sleep_until`, never a polling loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use syncd_proto::{LogKind, TargetState};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::RetryPolicy;
use crate::journal::{now_ms, Item, Journal};
use crate::progress::FullProgress;
use crate::push::{
    check_root, plan_list, plan_path, Outcome, RootIdentity, Runner, MAX_PATH_BYTES,
};

/// What a target worker publishes for `status` and `wait-idle`.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub state: TargetState,
    pub in_flight: u64,
    pub delivered: u64,
    pub last_error: Option<String>,
    pub next_retry: Option<Instant>,
    /// Progress of a running full sync.
    pub full_sync: Option<Arc<FullProgress>>,
}

/// Handle kept by the engine and the control socket.
#[derive(Clone)]
pub struct TargetHandle {
    /// `root/target`, the journal's key prefix.
    pub id: String,
    pub root: usize,
    pub name: String,
    pub dest: String,
    pub wake: Arc<Notify>,
    pub paused: Arc<watch::Sender<bool>>,
    /// Set to leave backoff at once (explicit resync or retry-failed).
    pub kick: Arc<std::sync::atomic::AtomicBool>,
    pub view: watch::Receiver<WorkerView>,
}

enum JobResult {
    Batch {
        claim: Claim,
        delivered: u64,
        target_error: Option<(String, bool)>,
        path_error: Option<String>,
    },
    Full {
        ok: bool,
        target_error: Option<(String, bool)>,
        warning: Option<String>,
    },
    /// Refused at the server's `max connections`: the rest of the batch was not tried.
    Busy {
        claim: Claim,
        delivered: u64,
        error: String,
    },
}

/// How long a connection limit learned from the server holds before more parallel rsyncs are
/// tried again.
const CONN_LIMIT_HOLD: Duration = Duration::from_secs(60);

/// A refusal at `max connections` right after our own push ended is usually that push's server
/// process still closing: retried after `BUSY_PAUSE` × n, `BUSY_RETRIES` times, before it counts
/// as a failure.
const BUSY_PAUSE: Duration = Duration::from_millis(100);
const BUSY_RETRIES: u32 = 3;

/// The worker task.
pub struct Worker {
    pub id: String,
    pub runner: Runner,
    pub journal: Journal,
    pub identity: RootIdentity,
    pub wake: Arc<Notify>,
    pub paused: watch::Receiver<bool>,
    pub kick: Arc<std::sync::atomic::AtomicBool>,
    pub view: watch::Sender<WorkerView>,
    /// Bumped on every state change; `wait-idle` waits on it.
    pub tick: Arc<watch::Sender<u64>>,
    pub grace: Duration,
}

/// When the worker may start what.
#[derive(Default)]
struct Schedule {
    /// The earliest retry time of a pending path, or the end of the pace.
    next_due: Option<Instant>,
    /// Batches run while a full resync is owed.
    deferred: u32,
    /// When the last batch started (see [`PACE`]).
    last_start: Option<Instant>,
}

/// Batches that may run while a full resync is owed, before it runs.
const MAX_DEFERRED_BATCHES: u32 = 2;

/// Pacing: a batch starts no sooner than this after the previous one started. A change to a
/// quiet target goes at once; a stream of changes costs at most one rsync per interval instead
/// of one per file, and the batches of a backlog run in parallel on up to `workers` rsyncs.
const PACE: Duration = Duration::from_millis(50);

/// What the running rsyncs cover, so that no two of them race over one part of the tree.
///
/// Each rsync reads the source when it runs, and of two concurrent ones the one that read first
/// may write last. The case seen: a push of `d/f` read the source, `d` was renamed away, a push of
/// `d` deleted it at the target, then the first push created `d/f` again; both were confirmed.
/// A deletion removes a whole subtree at the target, so a path is held back while a deletion at
/// or above it runs, and a deletion waits for everything at, above or below it. Other pushes of
/// the same directory's entries run side by side: rsync writes only the paths listed
/// (`--no-implied-dirs`: a directory above a listed path is created if missing, never updated).
/// A path held back keeps its journal entry and goes once the conflicting push is over, reading
/// the source as it is then.
#[derive(Default)]
struct InFlight {
    /// Journal paths in running pushes.
    paths: HashSet<Vec<u8>>,
    /// What those rsyncs were told (see [`plan_path`]), with counts.
    listed: HashMap<Vec<u8>, usize>,
    /// Every directory strictly above a listed path (the root excepted), with counts.
    above: HashMap<Vec<u8>, usize>,
    /// The listed paths that are deletions, with counts.
    deleting: HashMap<Vec<u8>, usize>,
}

/// What a batch holds in [`InFlight`] while it runs: its journal paths and what each stood for
/// when the batch started (listed path, whether a deletion).
#[derive(Default)]
struct Claim {
    paths: Vec<Vec<u8>>,
    plans: Vec<(Vec<u8>, bool)>,
}

/// The directories strictly above `p`, the root excepted.
fn parents(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &p[..i])
}

fn count_up(m: &mut HashMap<Vec<u8>, usize>, k: &[u8]) {
    *m.entry(k.to_vec()).or_default() += 1;
}

fn count_down(m: &mut HashMap<Vec<u8>, usize>, k: &[u8]) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl InFlight {
    /// Whether journal path `p` must wait whatever it stands for now: it is in flight itself, or
    /// a deletion at or above it is (whatever `p` is planned as, that deletion's subtree
    /// includes it). Cheap, without a stat: a deleted tree's many paths are held back by this.
    fn held_as_is(&self, p: &[u8]) -> bool {
        self.paths.contains(p)
            || self.deleting.contains_key(p)
            || parents(p).any(|d| self.deleting.contains_key(d))
    }

    /// Whether journal path `p`, planned as `plan`, must wait for a running push.
    fn conflicts(&self, p: &[u8], plan: Option<&(Vec<u8>, bool)>) -> bool {
        if self.paths.contains(p) {
            return true;
        }
        let Some((listed, deletion)) = plan else {
            return false;
        };
        let deleted_above = parents(listed).any(|d| self.deleting.contains_key(d));
        if *deletion {
            deleted_above
                || self.listed.contains_key(listed.as_slice())
                || self.above.contains_key(listed.as_slice())
        } else {
            deleted_above || self.deleting.contains_key(listed.as_slice())
        }
    }

    fn claim(&mut self, claim: &Claim) {
        for p in &claim.paths {
            self.paths.insert(p.clone());
        }
        for (listed, deletion) in &claim.plans {
            count_up(&mut self.listed, listed);
            parents(listed).for_each(|d| count_up(&mut self.above, d));
            if *deletion {
                count_up(&mut self.deleting, listed);
            }
        }
    }

    fn release(&mut self, claim: &Claim) {
        for p in &claim.paths {
            self.paths.remove(p);
        }
        for (listed, deletion) in &claim.plans {
            count_down(&mut self.listed, listed);
            parents(listed).for_each(|d| count_down(&mut self.above, d));
            if *deletion {
                count_down(&mut self.deleting, listed);
            }
        }
    }

    fn len(&self) -> usize {
        self.paths.len()
    }
}

/// Backoff after `n` consecutive failures: exponential, capped, with jitter in the upper half.
pub fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let exp = policy.initial.saturating_mul(1u32 << n.min(20));
    let d = exp.min(policy.max);
    let half = d / 2;
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis() as u64))
}

impl Worker {
    /// Run until `shutdown`, then let running rsyncs finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        let t = self.runner.target.clone();
        let workers = t.workers;
        let mut inflight = InFlight::default();
        let mut jobs: JoinSet<JobResult> = JoinSet::new();
        let mut full_running: Option<Arc<FullProgress>> = None;
        let mut failures: u32 = 0;
        let mut backoff_until: Option<Instant> = None;
        let mut next_failed_retry = Instant::now() + t.retry.failed_interval;
        let mut sched = Schedule::default();
        // (most rsyncs the server accepted at once, until when that holds)
        let mut conn_limit: Option<(usize, Instant)> = None;
        // Consecutive refusals at `max connections` with none of our rsyncs running.
        let mut busy_streak: u32 = 0;
        let mut delivered: u64 = 0;
        let mut last_error: Option<String> = None;
        let mut stopping: Option<Instant> = None;
        let mut paused = self.paused.clone();
        // The pause switch lives in the engine view; once it is gone, stop listening to it.
        let mut pause_alive = true;
        loop {
            if self.kick.swap(false, Ordering::Relaxed) {
                backoff_until = None;
            }
            let now = Instant::now();
            if backoff_until.is_some_and(|b| b <= now) {
                backoff_until = None;
            }
            if now >= next_failed_retry {
                match self.journal.retry_failed(&self.id) {
                    Ok(n) if n > 0 => {
                        info!(target = %self.id, paths = n, "scheduled retry of failed paths")
                    }
                    Ok(_) => {}
                    Err(e) => warn!(target = %self.id, error = %e, "journal read failed"),
                }
                next_failed_retry = now + t.retry.failed_interval;
            }
            if conn_limit.is_some_and(|(_, until)| until <= now) {
                conn_limit = None;
            }
            let workers = conn_limit.map_or(workers, |(l, _)| l.min(workers));
            let is_paused = *paused.borrow();
            let can_start = stopping.is_none()
                && !is_paused
                && backoff_until.is_none()
                && full_running.is_none();
            if can_start {
                self.start_jobs(
                    &mut jobs,
                    &mut inflight,
                    &mut full_running,
                    &mut sched,
                    workers,
                );
            }
            let state = if is_paused {
                TargetState::Paused
            } else if backoff_until.is_some() {
                TargetState::Backoff
            } else if full_running.is_some() {
                TargetState::InitialSync
            } else {
                TargetState::Running
            };
            self.view.send_replace(WorkerView {
                state,
                in_flight: inflight.len() as u64,
                delivered,
                last_error: last_error.clone(),
                next_retry: backoff_until,
                full_sync: full_running.clone(),
            });
            self.tick.send_modify(|n| *n += 1);
            if stopping.is_some() && jobs.is_empty() {
                return;
            }
            let far = now + Duration::from_secs(86_400);
            // A path's retry time only matters when a push could start: otherwise a passed retry
            // time would wake this loop over and over while paused, backing off or resyncing.
            let due_wake = sched.next_due.filter(|_| can_start && jobs.len() < workers);
            let wake_at = [backoff_until, due_wake, Some(next_failed_retry)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(far);
            tokio::select! {
                Some(res) = jobs.join_next(), if !jobs.is_empty() => {
                    let res = match res {
                        Ok(r) => r,
                        Err(e) => { warn!(target = %self.id, error = %e, "push task failed"); continue; }
                    };
                    match res {
                        JobResult::Batch { claim, delivered: n, target_error, path_error } => {
                            busy_streak = 0;
                            inflight.release(&claim);
                            delivered += n;
                            // A batch that delivered something proves the target works.
                            let progressed = n > 0;
                            match (target_error, path_error) {
                                (Some((e, permanent)), _) => {
                                    failures += 1;
                                    backoff_until = Some(self.back_off(&e, permanent, failures));
                                    last_error = Some(e);
                                }
                                (None, path_error) => {
                                    if progressed { failures = 0; }
                                    // A path's failure stays visible; a clean batch clears the last error.
                                    if path_error.is_some() || progressed { last_error = path_error; }
                                }
                            }
                        }
                        JobResult::Busy { claim, delivered: n, error } => {
                            inflight.release(&claim);
                            delivered += n;
                            if !jobs.is_empty() {
                                // Our own other rsyncs fill the server's `max connections`:
                                // run no more than those at once for a while; no backoff.
                                let limit = jobs.len();
                                if conn_limit.is_none_or(|(l, _)| l != limit) {
                                    info!(target = %self.id, limit, "the server limits connections; running at most that many rsyncs at once");
                                }
                                conn_limit = Some((limit, Instant::now() + CONN_LIMIT_HOLD));
                            } else if busy_streak < BUSY_RETRIES {
                                // The server side of our last push may still be closing: a
                                // short pause, not an outage.
                                busy_streak += 1;
                                debug!(target = %self.id, error = %error, "server busy; retrying shortly");
                                backoff_until = Some(Instant::now() + BUSY_PAUSE * busy_streak);
                            } else {
                                // Busy with other clients: an outage as far as we can tell.
                                failures += 1;
                                backoff_until = Some(self.back_off(&error, false, failures));
                                last_error = Some(error);
                            }
                        }
                        JobResult::Full { ok, target_error, warning } => {
                            full_running = None;
                            match (target_error, warning) {
                                (Some((e, permanent)), _) => {
                                    failures += 1;
                                    backoff_until = Some(self.back_off(&e, permanent, failures));
                                    last_error = Some(e);
                                }
                                (None, Some(w)) => last_error = Some(w),
                                (None, None) if ok => { failures = 0; last_error = None; }
                                (None, None) => {}
                            }
                        }
                    }
                }
                _ = self.wake.notified() => {}
                r = paused.changed(), if pause_alive => pause_alive = r.is_ok(),
                _ = sleep_until(wake_at) => {}
                _ = shutdown.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.grace);
                }
                _ = sleep_until(stopping.unwrap_or(far)), if stopping.is_some() => {
                    warn!(target = %self.id, running = jobs.len(), "grace period over; killing rsync (its paths stay pending)");
                    jobs.abort_all();
                    while jobs.join_next().await.is_some() {}
                    return;
                }
            }
        }
    }

    /// Log a target-level failure and return when to try again: the slowest pace for a
    /// permanent error (configuration, authentication), exponential backoff otherwise.
    fn back_off(&self, error: &str, permanent: bool, failures: u32) -> Instant {
        let policy = &self.runner.target.retry;
        let d = if permanent {
            policy.max
        } else {
            backoff(policy, failures.saturating_sub(1))
        };
        warn!(target = %self.id, error = %error, retry_in_ms = d.as_millis() as u64, "target failed; backing off");
        Instant::now() + d
    }

    /// Start what can start now. Journaled paths go first (at startup that is the journal
    /// replay: pushing exact paths before the full sync means their content crosses once); an
    /// owed full resync waits at most [`MAX_DEFERRED_BATCHES`] batches, then runs alone.
    fn start_jobs(
        &self,
        jobs: &mut JoinSet<JobResult>,
        inflight: &mut InFlight,
        full_running: &mut Option<Arc<FullProgress>>,
        sched: &mut Schedule,
        workers: usize,
    ) {
        sched.next_due = None;
        let owed = match self.journal.resyncs(&self.id) {
            Ok(rs) => rs,
            Err(e) => {
                warn!(target = %self.id, error = %e, "journal read failed");
                // Try again on our own: nothing else may wake this worker.
                sched.next_due = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        while jobs.len() < workers {
            // Paced: not even a look at the journal (a scan per wake-up costs more than the
            // batch it finds under a steady stream of changes).
            if let Some(at) = sched
                .last_start
                .map(|s| s + PACE)
                .filter(|at| *at > Instant::now())
            {
                sched.next_due = Some(sched.next_due.map_or(at, |n| n.min(at)));
                return;
            }
            let now = now_ms();
            // Each due path is planned (a stat or a few: see `plan_path`) to know what it would
            // touch; the plans of the paths taken go with the batch.
            let mut plans = Vec::new();
            let root = &self.runner.root.source;
            let mut skip = |p: &[u8]| {
                if inflight.held_as_is(p) {
                    return true;
                }
                let plan = plan_path(root, p);
                let held = inflight.conflicts(p, plan.as_ref());
                if !held {
                    plans.extend(plan);
                }
                held
            };
            let (items, next) =
                match self
                    .journal
                    .due(&self.id, now, self.runner.target.max_batch, &mut skip)
                {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(target = %self.id, error = %e, "journal read failed");
                        sched.next_due = Some(Instant::now() + Duration::from_secs(1));
                        return;
                    }
                };
            if let Some(next) = next {
                sched.next_due =
                    Some(Instant::now() + Duration::from_millis(next.saturating_sub(now)));
            }
            if !owed.is_empty() && (items.is_empty() || sched.deferred >= MAX_DEFERRED_BATCHES) {
                if jobs.is_empty() {
                    sched.deferred = 0;
                    let progress = Arc::new(FullProgress::new(self.runner.root.clone()));
                    *full_running = Some(progress.clone());
                    let (runner, journal, id, identity) = (
                        self.runner.clone(),
                        self.journal.clone(),
                        self.id.clone(),
                        self.identity,
                    );
                    jobs.spawn(flushed(
                        journal.clone(),
                        full_job(runner, journal, id, identity, owed, progress),
                    ));
                }
                return;
            }
            if items.is_empty() {
                return;
            }
            sched.last_start = Some(Instant::now());
            let claim = Claim {
                paths: items.iter().map(|i| i.path.clone()).collect(),
                plans,
            };
            inflight.claim(&claim);
            debug!(target = %self.id, paths = items.len(), "push batch");
            let (runner, journal, id, identity) = (
                self.runner.clone(),
                self.journal.clone(),
                self.id.clone(),
                self.identity,
            );
            jobs.spawn(flushed(
                journal.clone(),
                batch_job(runner, journal, id, identity, items, claim),
            ));
            if !owed.is_empty() {
                sched.deferred += 1;
                return;
            }
        }
    }
}

/// Runs `job`, then flushes the journal: whatever the job wrote (confirmations, retry
/// schedules, owed resyncs), on every way out, is on disk before the worker acts on its result.
async fn flushed(journal: Journal, job: impl std::future::Future<Output = JobResult>) -> JobResult {
    let res = job.await;
    if let Err(e) = journal.flush().await {
        warn!(error = %e, "journal flush failed");
    }
    res
}

async fn full_job(
    runner: Runner,
    journal: Journal,
    id: String,
    identity: RootIdentity,
    resyncs: Vec<(Vec<u8>, sled::IVec)>,
    progress: Arc<FullProgress>,
) -> JobResult {
    // However the job ends (done, failed, aborted at shutdown), the count beside it stops.
    struct EndOnDrop(Arc<FullProgress>);
    impl Drop for EndOnDrop {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let _end = EndOnDrop(progress.clone());
    let mut warning = None;
    let mut queued = resyncs.len() as u64;
    for (sub, token) in resyncs {
        queued -= 1;
        progress.begin(&sub, queued);
        if let Err(e) = check_root(&runner.root.source, identity) {
            return JobResult::Full {
                ok: false,
                target_error: Some((e, false)),
                warning,
            };
        }
        let started = std::time::Instant::now();
        match runner.push_full(&sub, &progress).await {
            Outcome::Delivered => {}
            Outcome::Partial(e) => {
                // Narrow down: the directory's own files become pending paths (the batch path
                // splits them until the failing ones are parked with their reason), and each
                // subdirectory gets its own full sync, which narrows again if it fails.
                warn!(target = %id, sub = %String::from_utf8_lossy(&sub), error = %e, "full sync finished with errors; narrowing down");
                let root = runner.root.clone();
                let s = sub.clone();
                let (files, dirs) = tokio::task::spawn_blocking(move || list_children(&root, &s))
                    .await
                    .unwrap_or_default();
                let res = journal
                    .record(std::slice::from_ref(&id), &files)
                    .and_then(|_| dirs.iter().try_for_each(|d| journal.request_resync(&id, d)));
                if let Err(je) = res {
                    return JobResult::Full {
                        ok: false,
                        target_error: Some((je.to_string(), false)),
                        warning,
                    };
                }
                warning = Some(e);
            }
            // The owed full sync stays owed and cleans up after itself when it runs again.
            Outcome::TargetDown(e) | Outcome::Interrupted(e) | Outcome::Busy(e) => {
                return JobResult::Full {
                    ok: false,
                    target_error: Some((e, false)),
                    warning,
                }
            }
            Outcome::Permanent(e) => {
                return JobResult::Full {
                    ok: false,
                    target_error: Some((e, true)),
                    warning,
                }
            }
        }
        info!(target = %id, sub = %String::from_utf8_lossy(&sub), entries = progress.changed(), ms = started.elapsed().as_millis() as u64, "full sync done");
        runner.metrics.synced();
        // Which paths a full sync changed is not known exactly (rsync's names are escaped
        // ambiguously): the hook is told the directory it brought up to date, `.` for the root.
        if progress.changed() > 0 {
            let dir: &[u8] = if sub.is_empty() { b"." } else { &sub };
            runner.hooks.delivered([dir]);
        }
        runner
            .events
            .publish(&id, LogKind::FullSync, [sub.as_slice()], warning.as_deref());
        if let Err(e) = journal.resync_done(&id, &sub, &token) {
            return JobResult::Full {
                ok: false,
                target_error: Some((e.to_string(), false)),
                warning,
            };
        }
    }
    JobResult::Full {
        ok: true,
        target_error: None,
        warning,
    }
}

/// The deepest directory (relative to the root, empty for the root) containing every path.
fn common_dir<'a>(mut paths: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let parent =
        |p: &'a [u8]| -> &'a [u8] { p.iter().rposition(|b| *b == b'/').map_or(&[], |i| &p[..i]) };
    let Some(first) = paths.next() else {
        return Vec::new();
    };
    let mut common = parent(first);
    for p in paths {
        while !(common.is_empty() || p.starts_with(common) && p.get(common.len()) == Some(&b'/')) {
            common = parent(common);
        }
    }
    common.to_vec()
}

/// Entries directly inside `sub` (relative to the root), split into non-directories and
/// directories, excluded ones left out.
fn list_children(root: &crate::config::RootConfig, sub: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let Ok(rd) = std::fs::read_dir(crate::watch::abs_path(&root.source, sub)) else {
        return (files, dirs);
    };
    for e in rd.flatten() {
        let rel = crate::watch::join_rel(sub, e.file_name().as_bytes());
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if root.excludes.matches(&rel, is_dir) {
            continue;
        }
        if is_dir {
            dirs.push(rel);
        } else {
            files.push(rel);
        }
    }
    (files, dirs)
}

async fn batch_job(
    runner: Runner,
    journal: Journal,
    id: String,
    identity: RootIdentity,
    items: Vec<Item>,
    claim: Claim,
) -> JobResult {
    if let Err(e) = check_root(&runner.root.source, identity) {
        return JobResult::Batch {
            claim,
            delivered: 0,
            target_error: Some((e, false)),
            path_error: None,
        };
    }
    let mut delivered = 0;
    let mut path_error = None;
    // rsync's list reader would silently truncate these: park them at once, with the reason.
    let (items, too_long): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| i.path.len() <= MAX_PATH_BYTES);
    for it in &too_long {
        let e = format!(
            "path is {} bytes long; rsync cannot take paths over {MAX_PATH_BYTES} bytes",
            it.path.len()
        );
        if let Err(je) = journal.fail(&id, it, &e, 0, 1) {
            warn!(target = %id, error = %je, "journal write failed");
        }
        runner.hooks.parked(&it.path, &e);
        runner
            .events
            .publish(&id, LogKind::Failed, [it.path.as_slice()], Some(&e));
        warn!(target = %id, path = %String::from_utf8_lossy(&it.path), "path parked as failed: {e}");
        path_error = Some(e);
    }
    // Work list of slices still to push; exit 23 splits a slice in two.
    let mut todo: Vec<Vec<Item>> = vec![items];
    // The whole batch goes as planned when it was taken; its halves are planned again.
    let mut planned = {
        let mut l: Vec<Vec<u8>> = claim.plans.iter().map(|(p, _)| p.clone()).collect();
        l.sort();
        l.dedup();
        Some(l)
    };
    while let Some(chunk) = todo.pop() {
        let list = if let Some(l) = planned.take() {
            l
        } else {
            let root = runner.root.source.clone();
            let ps: Vec<Vec<u8>> = chunk.iter().map(|i| i.path.clone()).collect();
            tokio::task::spawn_blocking(move || plan_list(&root, &ps))
                .await
                .unwrap_or_default()
        };
        let outcome = if list.is_empty() {
            Outcome::Delivered
        } else {
            runner.push_batch(&list).await
        };
        match outcome {
            Outcome::Delivered => match journal.confirm(&id, &chunk) {
                Ok(n) => {
                    delivered += n;
                    runner.metrics.delivered(&chunk, n);
                    runner.events.publish(
                        &id,
                        LogKind::Delivered,
                        chunk.iter().map(|i| i.path.as_slice()),
                        None,
                    );
                    runner
                        .hooks
                        .delivered(chunk.iter().map(|i| i.path.as_slice()));
                }
                Err(e) => {
                    return JobResult::Batch {
                        claim,
                        delivered,
                        target_error: Some((e.to_string(), false)),
                        path_error,
                    }
                }
            },
            Outcome::Partial(e) if chunk.len() == 1 => {
                let it = &chunk[0];
                let policy = &runner.target.retry;
                let next =
                    now_ms() + crate::target::backoff(policy, it.entry.attempts).as_millis() as u64;
                let shown = String::from_utf8_lossy(&it.path).into_owned();
                match journal.fail(&id, it, &e, next, policy.max_attempts) {
                    Ok(true) => {
                        warn!(target = %id, path = %shown, error = %e, "path parked as failed");
                        runner.hooks.parked(&it.path, &e);
                        runner
                            .events
                            .publish(&id, LogKind::Failed, [it.path.as_slice()], Some(&e));
                    }
                    Ok(false) => {
                        info!(target = %id, path = %shown, error = %e, attempt = it.entry.attempts + 1, "path failed; will retry")
                    }
                    Err(je) => warn!(target = %id, error = %je, "journal write failed"),
                }
                path_error = Some(format!("{shown}: {e}"));
            }
            Outcome::Partial(_) => {
                let mut a = chunk;
                let b = a.split_off(a.len() / 2);
                todo.push(a);
                todo.push(b);
            }
            Outcome::Interrupted(e) => {
                // Leftover temporary files sit in the directories of this chunk: once the
                // target is back, a full sync of their closest common directory removes them.
                let dir = common_dir(chunk.iter().map(|i| i.path.as_slice()));
                let target_error = match journal.request_resync(&id, &dir) {
                    Ok(()) => Some((e, false)),
                    Err(je) => Some((format!("{e}; {je}"), false)),
                };
                return JobResult::Batch {
                    claim,
                    delivered,
                    target_error,
                    path_error,
                };
            }
            Outcome::TargetDown(e) => {
                return JobResult::Batch {
                    claim,
                    delivered,
                    target_error: Some((e, false)),
                    path_error,
                }
            }
            Outcome::Busy(error) => {
                return JobResult::Busy {
                    claim,
                    delivered,
                    error,
                }
            }
            Outcome::Permanent(e) => {
                return JobResult::Batch {
                    claim,
                    delivered,
                    target_error: Some((e, true)),
                    path_error,
                }
            }
        }
    }
    JobResult::Batch {
        claim,
        delivered,
        target_error: None,
        path_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: &str, deletion: bool) -> (Vec<u8>, bool) {
        (p.as_bytes().to_vec(), deletion)
    }

    fn claim(path: &str, listed: &str, deletion: bool) -> Claim {
        Claim {
            paths: vec![path.as_bytes().to_vec()],
            plans: vec![plan(listed, deletion)],
        }
    }

    #[test]
    fn a_deletion_in_flight_holds_back_its_subtree_and_waits_for_it() {
        let mut f = InFlight::default();
        // `d/sub/f` being created; `x/y/z` gone, with `x/y`: rsync is told to delete `x/y`.
        let (c1, c2) = (
            claim("d/sub/f", "d/sub/f", false),
            claim("x/y/z", "x/y", true),
        );
        f.claim(&c1);
        f.claim(&c2);
        let held = |f: &InFlight, p: &str, listed: &str, del: bool| {
            f.conflicts(p.as_bytes(), Some(&plan(listed, del)))
        };
        // The same journal path waits whatever it is now.
        assert!(held(&f, "d/sub/f", "d/sub/f", true));
        // Deletions at, above or below something in flight wait.
        for p in ["d", "d/sub", "x", "x/y", "x/y/w"] {
            assert!(held(&f, p, p, true), "deleting {p} waits");
        }
        // Anything at or below a running deletion waits.
        for p in ["x/y", "x/y/w", "x/y/w/v"] {
            assert!(held(&f, p, p, false), "creating {p} waits");
        }
        // Creations next to, above or below a running creation go; so do unrelated deletions.
        for p in ["d", "d/sub", "d/sub/g", "d/sub/f/g", "x", "x/z", "xy"] {
            assert!(!held(&f, p, p, false), "creating {p} goes");
        }
        // (Below a file being pushed: if it replaces a directory at the target, a creation
        // below it fails there and is retried; a deletion below it finds nothing.)
        for p in ["d/other", "d/sub/g", "d/sub/f/g", "x/z", "xy", "dd"] {
            assert!(!held(&f, p, p, true), "deleting {p} goes");
        }
        // Below a running deletion a path waits before it is even planned.
        for p in ["x/y", "x/y/w/v", "x/y/z"] {
            assert!(f.held_as_is(p.as_bytes()), "{p}");
        }
        for p in ["x", "x/z", "d/sub", "d/sub/f/g"] {
            assert!(!f.held_as_is(p.as_bytes()), "{p}");
        }
        assert!(f.held_as_is(b"d/sub/f"), "in flight itself");
        // The root and over-long paths are never listed: only their own journal path counts.
        assert!(!f.conflicts(b"", None));
        // Released, nothing is held.
        f.release(&c2);
        assert!(!held(&f, "x/y/w", "x/y/w", false) && !held(&f, "x", "x", true));
        assert!(held(&f, "d", "d", true));
        f.release(&c1);
        assert!(!held(&f, "d", "d", true));
        assert_eq!(
            (f.len(), f.listed.len(), f.above.len(), f.deleting.len()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn common_dir_is_the_deepest_shared_directory() {
        let c =
            |ps: &[&str]| String::from_utf8(common_dir(ps.iter().map(|p| p.as_bytes()))).unwrap();
        assert_eq!(c(&["a/b/c.txt", "a/b/d/e.txt"]), "a/b");
        assert_eq!(c(&["a/b/c.txt", "a/bc/d.txt"]), "a");
        assert_eq!(c(&["top.txt", "a/b.txt"]), "");
        assert_eq!(c(&["a/b"]), "a");
        assert_eq!(c(&[]), "");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            failed_interval: Duration::from_secs(60),
        };
        for _ in 0..50 {
            let d0 = backoff(&p, 0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d9 = backoff(&p, 9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
    }
}
