//! One task per target: takes due paths from the journal, pushes them with rsync, confirms or
//! reschedules them, and keeps the target's backoff.
//!
//! - `mod.rs`: the worker's select loop and what it publishes;
//! - `inbox`: what the worker is told (its only input from outside), and the switches it sets;
//! - `schedule`: when what may start (backoff, pace, connection limit, parked retries);
//! - `inflight`: what the running rsyncs cover;
//! - `batch`, `full`, `rename`: the kinds of push job (paths, a whole root, a renamed
//!   directory); `job`: what they end in.
//!
//! Invariants:
//! - a path is in at most one rsync at a time, and neither is anything above or below it (the
//!   [`inflight::InFlight`] set): concurrent rsyncs never race over one part of the tree;
//! - a path leaves the journal only through [`Journal::confirm`] after rsync reported it
//!   delivered;
//! - a target-level failure (transport, auth, disk full, killed rsync) puts the target in
//!   backoff without spending the paths' attempts: a dead target costs one probe per step;
//! - exit 23 is narrowed by splitting the batch until the failing paths are single, and only
//!   those spend attempts; after `max_attempts` they are parked as failed with rsync's reason;
//! - owed full resyncs run alone, after at most two batches of journaled paths;
//! - a batch starts no sooner than [`schedule::PACE`] after a full one and
//!   [`schedule::STREAM_PACE`] after a small one: a quiet target pushes a change at once, a
//!   stream costs one rsync per stream pace, a backlog runs on `workers` rsyncs;
//! - refused at the server's `max connections` while other pushes run, the worker narrows its
//!   parallelism instead of backing off;
//! - timers are deadlines slept on with `sleep_until`, never a polling loop.

mod batch;
mod full;
mod guard;
pub mod inbox;
pub mod inflight;
pub mod job;
pub mod liveness;
pub mod planner;
pub mod prune;
mod rename;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use syncd_proto::TargetState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::fs::RootIdentity;
use crate::journal::{now_ms, Journal, ResyncToken};
use crate::observe::Reporter;
use crate::rsync::{FullProgress, Runner};
use batch::BatchJob;
use full::FullJob;
use guard::DeleteWindow;
use inbox::{Command, Switches};
use inflight::{Claim, InFlight};
use job::{flushed, JobKind, JobResult};
use liveness::{Liveness, StuckPath};
use rename::{MoveHolds, MoveJob};
use schedule::Schedule;

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
    /// What the rename probe found, once a rename probed the target.
    pub renames: Option<crate::rsync::LinkDest>,
    /// The rename probe is running (the target is not idle).
    pub probing: bool,
    /// Paths found stuck since the start (see `liveness`), and the latest of them.
    pub stuck: u64,
    pub stuck_recent: Arc<Vec<StuckPath>>,
}

impl Default for WorkerView {
    fn default() -> Self {
        WorkerView {
            state: TargetState::Running,
            in_flight: 0,
            delivered: 0,
            last_error: None,
            next_retry: None,
            full_sync: None,
            renames: None,
            probing: false,
            stuck: 0,
            stuck_recent: Arc::default(),
        }
    }
}

/// Handle kept by the engine and the control socket.
#[derive(Clone)]
pub struct TargetHandle {
    /// `root/target`, the journal's key prefix.
    pub id: String,
    pub root: usize,
    pub name: String,
    pub dest: String,
    /// What the worker is told (see `inbox`).
    pub inbox: inbox::Inbox,
    pub view: watch::Receiver<WorkerView>,
    /// What its rsyncs run against (`syncctl verify` runs one too).
    pub runner: Runner,
    /// Progress of a running `syncctl verify` of this target.
    pub verifying: Arc<std::sync::Mutex<Option<Arc<FullProgress>>>>,
}

/// The worker task.
pub struct Worker {
    pub id: String,
    pub runner: Runner,
    pub reporter: Reporter,
    pub journal: Journal,
    pub identity: RootIdentity,
    pub view: watch::Sender<WorkerView>,
    /// Bumped on every state change; `wait-idle` waits on it.
    pub tick: Arc<watch::Sender<u64>>,
    pub grace: Duration,
    /// Cancelled once the watcher stopped (at shutdown, before the workers are told to).
    pub watch_stopped: CancellationToken,
}

/// What the worker's loop keeps between wake-ups.
struct Running {
    sched: Schedule,
    inflight: InFlight,
    jobs: JoinSet<JobResult>,
    /// The progress of the full sync running, if one is.
    full: Option<Arc<FullProgress>>,
    /// What the worker was told (see `inbox`).
    switches: Switches,
    /// Whether the target links from a relative `--link-dest` (probed beside the first move).
    link_dest: Arc<std::sync::OnceLock<crate::rsync::LinkDest>>,
    /// The probe is running.
    probing: bool,
    /// The deletions taken within `delete_guard`'s window.
    deletes: DeleteWindow,
    /// Paths passed over with nothing running to deliver them (see `liveness`).
    liveness: Liveness,
    /// The latest stuck paths, as published.
    stuck_recent: Arc<Vec<StuckPath>>,
}

/// The due paths a pass over the journal took, the plan of each (`plans[i]` is `items[i]`'s),
/// and the paths it passed over because a pending move holds them while no running push
/// covers them.
struct Due {
    items: Vec<crate::journal::Item>,
    plans: Vec<Option<guard::Plan>>,
    passed_over: Vec<Vec<u8>>,
}

/// What woke the worker.
enum Wake {
    Job(JobResult),
    Told(Command),
    Nothing,
    GraceOver,
}

impl Worker {
    /// Run until told [`Command::Stop`] (or until nobody can tell it anything: every
    /// [`inbox::Inbox`] dropped), then let running rsyncs finish within the grace period.
    pub async fn run(self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let t = self.runner.target.clone();
        let mut r = Running {
            sched: Schedule::new(self.id.clone(), t.retry.clone(), t.workers, Instant::now()),
            inflight: InFlight::default(),
            jobs: JoinSet::new(),
            full: None,
            switches: Switches::default(),
            link_dest: Arc::default(),
            probing: false,
            deletes: self.delete_window(),
            liveness: Liveness::default(),
            stuck_recent: Arc::default(),
        };
        loop {
            let can_start = self.step(&mut r);
            if r.switches.stopping.is_some() && r.jobs.is_empty() {
                return;
            }
            let mut wake_at = r.sched.next_wake(can_start, r.jobs.len());
            if let Some(check) = r
                .liveness
                .next_check(r.jobs.is_empty())
                .filter(|_| can_start)
            {
                wake_at = wake_at.min(check);
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            let woke = tokio::select! {
                Some(res) = r.jobs.join_next(), if !r.jobs.is_empty() => match res {
                    Ok(res) => Wake::Job(res),
                    Err(e) => { warn!(target = %self.id, error = %e, "push task failed"); Wake::Nothing }
                },
                // Closed: every sender is gone, nobody can tell it anything any more.
                c = inbox.recv(), if r.switches.stopping.is_none() => Wake::Told(c.unwrap_or(Command::Stop)),
                _ = sleep_until(wake_at) => Wake::Nothing,
                _ = sleep_until(r.switches.stopping.unwrap_or(far)), if r.switches.stopping.is_some() => Wake::GraceOver,
            };
            match woke {
                Wake::Job(res) => self.finished(&mut r, res),
                Wake::Told(c) => {
                    // Everything told so far, at once: one step for a burst of wake-ups.
                    let now = Instant::now();
                    r.switches.apply(c, now, self.grace);
                    while let Ok(c) = inbox.try_recv() {
                        r.switches.apply(c, now, self.grace);
                    }
                }
                Wake::Nothing => {}
                Wake::GraceOver => {
                    warn!(target = %self.id, running = r.jobs.len(), "grace period over; killing rsync (its paths stay pending)");
                    r.jobs.abort_all();
                    while r.jobs.join_next().await.is_some() {}
                    return;
                }
            }
        }
    }

    /// One pass: bring the schedule up to now, start what may start, publish the state.
    /// Returns whether pushes could start.
    fn step(&self, r: &mut Running) -> bool {
        let (gate, retry_parked) = r
            .switches
            .gate(&mut r.sched, r.full.is_some(), Instant::now());
        if retry_parked {
            match self.journal.retry_failed(&self.id) {
                Ok(n) if n > 0 => {
                    info!(target = %self.id, paths = n, "scheduled retry of failed paths")
                }
                Ok(_) => {}
                Err(e) => warn!(target = %self.id, error = %e, "journal read failed"),
            }
        }
        if gate.can_start {
            self.start_jobs(r);
        }
        self.view.send_replace(WorkerView {
            // After the start: a full sync started by this step shows at once.
            state: r.switches.state(&r.sched, r.full.is_some()),
            in_flight: r.inflight.len() as u64,
            delivered: r.sched.delivered,
            last_error: r.sched.last_error.clone(),
            next_retry: r.sched.backoff_until(),
            full_sync: r.full.clone(),
            renames: r.link_dest.get().cloned(),
            probing: r.probing,
            stuck: r.liveness.total,
            stuck_recent: r.stuck_recent.clone(),
        });
        self.tick.send_modify(|n| *n += 1);
        gate.can_start
    }

    /// A job ended: release what it held and let the schedule learn from it.
    fn finished(&self, r: &mut Running, res: JobResult) {
        match &res.kind {
            JobKind::Batch(claim) => r.inflight.release(claim),
            JobKind::Full { deleted } => {
                r.full = None;
                self.took_deletions(&mut r.deletes, *deleted, Vec::new());
            }
            JobKind::Probe => r.probing = false,
        }
        if res.released_moves {
            r.sched.unpace();
        }
        r.sched.on_result(&res, r.jobs.len(), Instant::now());
        if r.jobs.is_empty() && !r.inflight.is_clear() {
            // Every job released what it claimed, or this is a bug: what is left would hold
            // its paths back for ever.
            error!(target = %self.id, "claims left in flight with no push running (a bug of syncd's); cleared");
            r.inflight = InFlight::default();
        }
    }

    /// Start what can start now. Journaled paths go first (at startup that is the journal
    /// replay: pushing exact paths before the full sync means their content crosses once); an
    /// owed full resync waits at most [`schedule::MAX_DEFERRED_BATCHES`] batches, then runs
    /// alone.
    fn start_jobs(&self, r: &mut Running) {
        r.sched.clear_due();
        let owed = match self.journal.resyncs(&self.id) {
            Ok(rs) => rs,
            Err(e) => return self.read_failed(r, e),
        };
        let holds = match self.start_moves(r) {
            Ok(h) => h,
            Err(e) => return self.read_failed(r, e),
        };
        while r.jobs.len() < r.sched.workers() {
            // Paced: not even a look at the journal (a scan per wake-up costs more than the
            // batch it finds under a steady stream of changes).
            if let Some(at) = r.sched.paced_until(Instant::now(), r.switches.fresh) {
                r.sched.due_at(at);
                return;
            }
            r.switches.batch_started();
            let (items, claim, passed_over) = match self.take_due(r, &holds) {
                Ok(taken) => taken,
                Err(e) => return self.read_failed(r, e),
            };
            if items.is_empty() {
                // The whole journal was looked at: what it passed over is followed.
                if let Err(e) = self.check_liveness(r, passed_over) {
                    return self.read_failed(r, e);
                }
            }
            if !owed.is_empty() && (items.is_empty() || r.sched.full_sync_overdue()) {
                if r.jobs.is_empty() {
                    self.start_full(r, owed);
                }
                return;
            }
            if items.is_empty() {
                return;
            }
            r.sched
                .batch_started(Instant::now(), items.len(), !owed.is_empty());
            let renamed = items
                .iter()
                .filter_map(|i| holds.renamed_file(&i.path).cloned())
                .collect();
            r.inflight.claim(&claim);
            debug!(target = %self.id, paths = items.len(), "push batch");
            let job = BatchJob {
                runner: self.runner.clone(),
                reporter: self.reporter.clone(),
                journal: self.journal.clone(),
                identity: self.identity,
                watch_stopped: self.watch_stopped.clone(),
                renamed,
            };
            r.jobs
                .spawn(flushed(self.journal.clone(), job.run(items, claim)));
            if !owed.is_empty() {
                return;
            }
        }
    }

    /// A journal read failed: try again on our own, since nothing else may wake this worker.
    fn read_failed(&self, r: &mut Running, e: crate::journal::JournalError) {
        warn!(target = %self.id, error = %e, "journal read failed");
        r.sched.due_at(Instant::now() + Duration::from_secs(1));
    }

    /// Up to `max_batch` due paths that no running push conflicts with, each planned (a stat or
    /// a few: see [`plan_path`]) to know what it would touch; the plans go with the batch.
    /// Deletions `delete_guard` holds leave the batch (see `guard`); a batch they emptied is
    /// taken again (more may be due behind it).
    #[allow(clippy::type_complexity)]
    fn take_due(
        &self,
        r: &mut Running,
        holds: &MoveHolds,
    ) -> Result<(Vec<crate::journal::Item>, Claim, Vec<Vec<u8>>), crate::journal::JournalError>
    {
        loop {
            let due = self.due_planned(r, holds)?;
            let taken = due.items.len();
            let (items, plans) = self.guard_deletions(&mut r.deletes, due.items, due.plans)?;
            if items.is_empty() && taken > 0 {
                continue;
            }
            let claim = Claim {
                paths: items.iter().map(|i| i.path.clone()).collect(),
                plans,
            };
            return Ok((items, claim, due.passed_over));
        }
    }

    /// The due paths [`Worker::take_due`] may take, with their plans and what was passed over.
    fn due_planned(
        &self,
        r: &mut Running,
        holds: &MoveHolds,
    ) -> Result<Due, crate::journal::JournalError> {
        let now = now_ms();
        let mut plans = Vec::new();
        let mut passed_over = Vec::new();
        let root = &self.runner.root.source;
        let inflight = &r.inflight;
        let view = crate::rsync::Fs(root);
        let mut skip = |p: &[u8]| match planner::consider(p, inflight, holds, &view) {
            planner::Consider::Take(plan) => {
                // Every path let through is taken: `plans` stays aligned with the items.
                plans.push(plan);
                false
            }
            planner::Consider::Waits => true,
            planner::Consider::PassedOver => {
                passed_over.push(p.to_vec());
                true
            }
        };
        let (items, next) =
            self.journal
                .due(&self.id, now, self.runner.target.max_batch, &mut skip)?;
        if let Some(next) = next {
            r.sched
                .due_at(Instant::now() + Duration::from_millis(next.saturating_sub(now)));
        }
        Ok(Due {
            items,
            plans,
            passed_over,
        })
    }

    /// A pass took nothing and passed over `passed_over`: what has waited for nothing for
    /// [`liveness::stuck_after`] is stuck. It is logged as the bug it is, with its journal
    /// entry and the moves that held it; those moves are forgotten (their paths go as plain
    /// pushes) and its directory is owed a full sync, which pushes whatever it holds.
    fn check_liveness(
        &self,
        r: &mut Running,
        passed_over: Vec<Vec<u8>>,
    ) -> Result<(), crate::journal::JournalError> {
        let idle = r.jobs.is_empty();
        let stuck = r.liveness.observe(passed_over, Instant::now(), idle);
        if stuck.is_empty() {
            return Ok(());
        }
        let moves = self.journal.moves(&self.id)?;
        let mut dirs = std::collections::BTreeSet::new();
        for p in stuck {
            let entry = self.journal.pending_entry(&self.id, &p)?;
            let holding: Vec<_> = moves
                .iter()
                .filter(|m| MoveHolds::new(std::slice::from_ref(*m)).holds(&p))
                .collect();
            for m in &holding {
                self.journal.move_done(&self.id, m)?;
            }
            let dir = crate::fs::dir_of(&p).to_vec();
            let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let held_by: Vec<String> = holding
                .iter()
                .map(|m| format!("{} -> {}", shown(&m.from), shown(&m.to)))
                .collect();
            error!(target = %self.id, path = %shown(&p), entry = ?entry, moves = ?held_by,
                "path stuck: pending with nothing running to deliver it (a bug of syncd's); \
                 the moves holding it are forgotten and its directory is pushed again by a full sync");
            let what = format!(
                "stuck for {} s with nothing running to deliver it (a bug of syncd's; held by {}): pushed again by a full sync of {}",
                liveness::stuck_after(idle).as_secs(),
                if held_by.is_empty() { "nothing known".to_string() } else { held_by.join(", ") },
                if dir.is_empty() { ".".to_string() } else { shown(&dir) }
            );
            self.reporter.stuck(&p, &what);
            r.liveness.found(p, what);
            dirs.insert(dir);
        }
        for d in dirs {
            self.journal.request_resync(&self.id, &d)?;
        }
        r.stuck_recent = Arc::new(r.liveness.recent.iter().cloned().collect());
        // Look again at once: the full syncs are owed now, the paths free to go.
        r.sched.due_at(Instant::now());
        Ok(())
    }

    /// Start the pending moves nothing in flight conflicts with, ahead of any batch (the paths
    /// they hold wait for them), and return what they hold; what is decided is
    /// [`planner::plan_moves`]'s. Where an exclude pattern would mean something else in a
    /// subdirectory's transfer, moves are given up for plain pushes.
    fn start_moves(&self, r: &mut Running) -> Result<MoveHolds, crate::journal::JournalError> {
        let moves = self.journal.moves(&self.id)?;
        if moves.is_empty() {
            return Ok(MoveHolds::default());
        }
        let caps = planner::MoveCaps {
            excludes_same_in_subtrees: self.runner.root.excludes.same_in_every_subtree(),
            probe_known_or_running: r.link_dest.get().is_some() || r.probing,
        };
        if !caps.excludes_same_in_subtrees {
            debug!(target = %self.id, moves = moves.len(), "exclude patterns name whole paths; renamed directories go as plain pushes");
        }
        let mut read_error = None;
        let mut attempts_of = |to: &[u8]| match self.journal.pending_entry(&self.id, to) {
            Ok(e) => e.map(|e| e.attempts),
            Err(e) => {
                read_error = Some(e);
                // Unknown: kept, looked at again at the next pass.
                Some(0)
            }
        };
        let running = r.jobs.len();
        let workers = r.sched.workers();
        let pass = planner::plan_moves(
            moves,
            caps,
            &mut r.inflight,
            running,
            workers,
            &mut attempts_of,
        );
        if let Some(e) = read_error {
            return Err(e);
        }
        for m in &pass.forget {
            self.journal.move_done(&self.id, m)?;
        }
        if pass.probe {
            r.probing = true;
            let probe = rename::probe(self.runner.clone(), self.id.clone(), r.link_dest.clone());
            r.jobs.spawn(probe);
        }
        for (dir, group, claim) in pass.file_groups {
            let job = self.move_job(r).run_files(dir, group, claim);
            r.jobs.spawn(flushed(self.journal.clone(), job));
        }
        for (m, claim) in pass.dir_moves {
            debug!(target = %self.id, to = %String::from_utf8_lossy(&m.to), "push move");
            let job = self.move_job(r).run(m, claim);
            r.jobs.spawn(flushed(self.journal.clone(), job));
        }
        Ok(pass.holds)
    }

    fn move_job(&self, r: &Running) -> MoveJob {
        MoveJob {
            runner: self.runner.clone(),
            link_dest: r.link_dest.clone(),
            reporter: self.reporter.clone(),
            journal: self.journal.clone(),
            identity: self.identity,
            watch_stopped: self.watch_stopped.clone(),
        }
    }

    fn start_full(&self, r: &mut Running, owed: Vec<(Vec<u8>, ResyncToken)>) {
        let delete_budget = match self.full_sync_budget(&mut r.deletes) {
            Ok(b) => b,
            Err(e) => return self.read_failed(r, e),
        };
        r.sched.full_sync_started();
        let progress = Arc::new(FullProgress::new(self.runner.root.clone()));
        r.full = Some(progress.clone());
        let job = FullJob {
            runner: self.runner.clone(),
            reporter: self.reporter.clone(),
            journal: self.journal.clone(),
            identity: self.identity,
            resyncs: owed,
            progress,
            delete_budget,
        };
        r.jobs.spawn(flushed(self.journal.clone(), job.run()));
    }
}

#[cfg(test)]
mod tests;
