//! When a target's worker may start what: the target's backoff (exponential with jitter, the
//! slowest pace for permanent errors), the pace between batches, the connection limit learned
//! from the server, short pauses for a server still closing our last connection, the scheduled
//! retry of parked paths, and the earliest retry time of a pending path.
//!
//! Pure state over [`Instant`]s handed in by the worker: no I/O, no clock of its own, so it is
//! tested under `tokio::time::pause()`.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::job::{Ending, JobKind, JobResult};
use crate::config::RetryPolicy;

/// How long a connection limit learned from the server holds before more parallel rsyncs are
/// tried again.
pub const CONN_LIMIT_HOLD: Duration = Duration::from_secs(60);

/// A refusal at `max connections` right after our own push ended is usually that push's server
/// process still closing: retried after `BUSY_PAUSE` × n, `BUSY_RETRIES` times, before it counts
/// as a failure.
pub const BUSY_PAUSE: Duration = Duration::from_millis(100);
pub const BUSY_RETRIES: u32 = 3;

/// Batches that may run while a full resync is owed, before it runs.
pub const MAX_DEFERRED_BATCHES: u32 = 2;

/// Pacing: a batch starts no sooner than this after the previous one started, if that one was
/// full (at least [`SMALL_BATCH`] paths). A change to a quiet target goes at once; the batches
/// of a backlog run in parallel on up to `workers` rsyncs.
pub const PACE: Duration = Duration::from_millis(50);

/// After a small batch, the next starts no sooner than this: a stream of changes is sized by
/// the lag budget (0.3 s from a file's close to the target: this wait, the journal's
/// [`COMMIT_GAP`](crate::coalesce::COMMIT_GAP), the run itself) rather than costing one rsync per
/// [`PACE`], whose fixed cost (start, connection, file list) would dominate.
pub const STREAM_PACE: Duration = Duration::from_millis(150);

/// Fewer paths than this make a batch small (see [`STREAM_PACE`]).
pub const SMALL_BATCH: usize = 100;

/// Backoff after `n` consecutive failures: exponential, capped, with jitter in the upper half.
pub fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let exp = policy.initial.saturating_mul(1u32 << n.min(20));
    let d = exp.min(policy.max);
    let half = d / 2;
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis() as u64))
}

/// One target's schedule.
pub struct Schedule {
    /// `root/target`, for the log.
    id: String,
    policy: RetryPolicy,
    /// Configured parallel rsyncs.
    workers: usize,
    /// Consecutive target failures.
    failures: u32,
    backoff_until: Option<Instant>,
    next_failed_retry: Instant,
    /// Most rsyncs the server accepted at once, until when that holds.
    conn_limit: Option<(usize, Instant)>,
    /// Consecutive refusals at `max connections` with none of our rsyncs running.
    busy_streak: u32,
    /// The earliest retry time of a pending path, or the end of the pace.
    next_due: Option<Instant>,
    /// Batches run while a full resync is owed.
    deferred: u32,
    /// When the last batch started, and the pace that follows it (see [`PACE`]).
    last_start: Option<(Instant, Duration)>,
    /// Paths delivered so far.
    pub delivered: u64,
    /// Shown in `status`.
    pub last_error: Option<String>,
}

impl Schedule {
    pub fn new(id: String, policy: RetryPolicy, workers: usize, now: Instant) -> Schedule {
        Schedule {
            id,
            next_failed_retry: now + policy.failed_interval,
            policy,
            workers,
            failures: 0,
            backoff_until: None,
            conn_limit: None,
            busy_streak: 0,
            next_due: None,
            deferred: 0,
            last_start: None,
            delivered: 0,
            last_error: None,
        }
    }

    /// Leave backoff at once (an explicit resync or retry-failed, or the root is back).
    pub fn kick(&mut self) {
        self.backoff_until = None;
    }

    /// Paths that waited for a rename's move may go now: the next batch does not wait for the
    /// pace.
    pub fn unpace(&mut self) {
        self.last_start = None;
    }

    /// Move on to `now`: a backoff or a connection limit that ran out is over. Returns whether
    /// the parked paths are due for their scheduled retry (the next one is then scheduled).
    pub fn advance(&mut self, now: Instant) -> bool {
        if self.backoff_until.is_some_and(|b| b <= now) {
            self.backoff_until = None;
        }
        if self.conn_limit.is_some_and(|(_, until)| until <= now) {
            self.conn_limit = None;
        }
        if now >= self.next_failed_retry {
            self.next_failed_retry = now + self.policy.failed_interval;
            return true;
        }
        false
    }

    /// How many rsyncs may run at once: the configured number, narrowed by the server's limit.
    pub fn workers(&self) -> usize {
        self.conn_limit
            .map_or(self.workers, |(l, _)| l.min(self.workers))
    }

    /// Until when the target backs off, if it does.
    pub fn backoff_until(&self) -> Option<Instant> {
        self.backoff_until
    }

    /// Before looking for due paths: forget the last due time (the look finds it anew).
    pub fn clear_due(&mut self) {
        self.next_due = None;
    }

    /// Something becomes due at `at`.
    pub fn due_at(&mut self, at: Instant) {
        self.next_due = Some(self.next_due.map_or(at, |n| n.min(at)));
    }

    /// When the next batch may start if the pace forbids it now, with `fresh` paths journaled
    /// since the last one started: a stream that gathered a full batch goes at the short pace.
    pub fn paced_until(&self, now: Instant, fresh: usize) -> Option<Instant> {
        self.last_start
            .map(|(s, pace)| s + if fresh >= SMALL_BATCH { PACE } else { pace })
            .filter(|at| *at > now)
    }

    /// A batch of `paths` started at `now`; `owed` whether a full resync waits behind it.
    pub fn batch_started(&mut self, now: Instant, paths: usize, owed: bool) {
        let pace = if paths < SMALL_BATCH {
            STREAM_PACE
        } else {
            PACE
        };
        self.last_start = Some((now, pace));
        if owed {
            self.deferred += 1;
        }
    }

    /// Whether an owed full resync must run now rather than after more batches.
    pub fn full_sync_overdue(&self) -> bool {
        self.deferred >= MAX_DEFERRED_BATCHES
    }

    /// A full resync started: the batches it waited for are forgotten.
    pub fn full_sync_started(&mut self) {
        self.deferred = 0;
    }

    /// When the worker must look again without being woken: the end of the backoff, the
    /// scheduled retry of parked paths and, if a push could start (`can_start`, and fewer than
    /// [`Schedule::workers`] `running`), the next due path. A path's retry time only matters
    /// when a push could start: otherwise a passed retry time would wake the worker over and
    /// over while paused, backing off or resyncing.
    pub fn next_wake(&self, can_start: bool, running: usize) -> Instant {
        let due = self
            .next_due
            .filter(|_| can_start && running < self.workers());
        [self.backoff_until, due, Some(self.next_failed_retry)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_failed_retry)
    }

    /// A job ended at `now` with `others` of the target's jobs still running.
    pub fn on_result(&mut self, res: &JobResult, others: usize, now: Instant) {
        self.delivered += res.delivered;
        match (&res.kind, &res.ending) {
            (JobKind::Batch(_), Ending::Busy(error)) => self.busy(error, others, now),
            (_, Ending::Failed(e)) => {
                if matches!(res.kind, JobKind::Batch(_)) {
                    self.busy_streak = 0;
                }
                self.fail(&e.to_string(), e.is_permanent(), now);
            }
            (JobKind::Batch(_), Ending::Done) => {
                self.busy_streak = 0;
                // A batch that delivered something proves the target works.
                let progressed = res.delivered > 0;
                if progressed {
                    self.failures = 0;
                }
                // A path's failure stays visible; a clean batch clears the last error.
                if res.path_error.is_some() || progressed {
                    self.last_error = res.path_error.clone();
                }
            }
            // What the probe found is the worker's; a target it could not reach shows in the
            // pushes.
            (JobKind::Probe, _) => {}
            (JobKind::Full { .. }, _) => match &res.path_error {
                Some(w) => self.last_error = Some(w.clone()),
                None => {
                    self.failures = 0;
                    self.last_error = None;
                }
            },
        }
    }

    /// Refused at the server's `max connections`.
    fn busy(&mut self, error: &str, others: usize, now: Instant) {
        if others > 0 {
            // Our own other rsyncs fill the server's `max connections`: run no more than those
            // at once for a while; no backoff.
            if self.conn_limit.is_none_or(|(l, _)| l != others) {
                info!(target = %self.id, limit = others, "the server limits connections; running at most that many rsyncs at once");
            }
            self.conn_limit = Some((others, now + CONN_LIMIT_HOLD));
        } else if self.busy_streak < BUSY_RETRIES {
            // The server side of our last push may still be closing: a short pause, not an
            // outage.
            self.busy_streak += 1;
            debug!(target = %self.id, error = %error, "server busy; retrying shortly");
            self.backoff_until = Some(now + BUSY_PAUSE * self.busy_streak);
        } else {
            // Busy with other clients: an outage as far as we can tell.
            self.fail(error, false, now);
        }
    }

    /// A target-level failure: log it and back off, at the slowest pace for a permanent error
    /// (configuration, authentication), exponentially otherwise.
    fn fail(&mut self, error: &str, permanent: bool, now: Instant) {
        self.failures += 1;
        let d = if permanent {
            self.policy.max
        } else {
            backoff(&self.policy, self.failures.saturating_sub(1))
        };
        warn!(target = %self.id, error = %error, retry_in_ms = d.as_millis() as u64, "target failed; backing off");
        self.backoff_until = Some(now + d);
        self.last_error = Some(error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::inflight::Claim;
    use crate::dispatch::job::TargetFailure;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            failed_interval: Duration::from_secs(60),
        }
    }

    fn schedule(workers: usize) -> Schedule {
        Schedule::new("r/t".into(), policy(), workers, Instant::now())
    }

    fn batch(ending: Ending, delivered: u64) -> JobResult {
        JobResult {
            kind: JobKind::Batch(Claim::default()),
            ending,
            delivered,
            path_error: None,
            released_moves: false,
        }
    }

    fn down() -> Ending {
        Ending::Failed(TargetFailure::Down(
            "rsync exit 10: connection failed".into(),
        ))
    }

    /// How long from `now` the target backs off.
    fn backing_off_for(s: &Schedule, now: Instant) -> Duration {
        s.backoff_until().expect("backing off") - now
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        for _ in 0..50 {
            let d0 = backoff(&p, 0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d9 = backoff(&p, 9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_with_jitter_and_a_delivery_resets_them() {
        let mut s = schedule(4);
        // The n-th failure in a row waits initial * 2^(n-1), capped, with jitter in the upper
        // half.
        for (n, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (6, 1000)] {
            let now = Instant::now();
            s.on_result(&batch(down(), 0), 0, now);
            let d = backing_off_for(&s, now);
            let full = Duration::from_millis(full_ms);
            assert!(
                d >= full / 2 && d <= full,
                "failure {n}: {d:?} not in the upper half of {full:?}"
            );
            assert_eq!(
                s.last_error.as_deref(),
                Some("rsync exit 10: connection failed")
            );
            // The backoff holds until its deadline, not a moment less.
            tokio::time::advance(d - Duration::from_millis(1)).await;
            s.advance(Instant::now());
            assert!(s.backoff_until().is_some(), "failure {n}: over too early");
            tokio::time::advance(Duration::from_millis(1)).await;
            s.advance(Instant::now());
            assert!(
                s.backoff_until().is_none(),
                "failure {n}: still backing off"
            );
        }
        // A batch that delivered something proves the target works: back to the first step.
        s.on_result(&batch(Ending::Done, 1), 0, Instant::now());
        assert_eq!(s.last_error, None);
        assert_eq!(s.delivered, 1);
        let now = Instant::now();
        s.on_result(&batch(down(), 0), 0, now);
        assert!(backing_off_for(&s, now) <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_waits_the_longest_and_a_kick_ends_any_backoff() {
        let mut s = schedule(4);
        let now = Instant::now();
        let auth = Ending::Failed(TargetFailure::Permanent("auth failed".into()));
        s.on_result(&batch(auth, 0), 0, now);
        assert_eq!(backing_off_for(&s, now), Duration::from_millis(1000));
        s.kick();
        assert!(s.backoff_until().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_paced() {
        let mut s = schedule(4);
        let t0 = Instant::now();
        assert_eq!(s.paced_until(t0, 0), None, "a quiet target pushes at once");
        // A full batch: a backlog, the next one follows after the short pace.
        s.batch_started(t0, SMALL_BATCH, false);
        assert_eq!(s.paced_until(t0, 0), Some(t0 + PACE));
        tokio::time::advance(PACE - Duration::from_millis(1)).await;
        assert_eq!(s.paced_until(Instant::now(), 0), Some(t0 + PACE));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.paced_until(Instant::now(), 0), None);
        // A small batch: a stream, the next one gathers for longer.
        let t1 = Instant::now();
        s.batch_started(t1, SMALL_BATCH - 1, false);
        tokio::time::advance(PACE).await;
        assert_eq!(s.paced_until(Instant::now(), 0), Some(t1 + STREAM_PACE));
        // Unless the stream gathered a full batch meanwhile.
        assert_eq!(s.paced_until(Instant::now(), SMALL_BATCH), None);
        tokio::time::advance(STREAM_PACE - PACE - Duration::from_millis(1)).await;
        assert_eq!(s.paced_until(Instant::now(), 0), Some(t1 + STREAM_PACE));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.paced_until(Instant::now(), 0), None);
        // A rename's move ended: the paths it held go at once.
        s.batch_started(Instant::now(), 1, false);
        assert!(s.paced_until(Instant::now(), 0).is_some());
        s.unpace();
        assert_eq!(s.paced_until(Instant::now(), 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_connection_limit_narrows_parallelism_for_a_while() {
        let mut s = schedule(4);
        let busy = || {
            batch(
                Ending::Busy("@ERROR: max connections (2) reached".into()),
                0,
            )
        };
        // Refused while two of our own rsyncs run: run at most two, and do not back off.
        s.on_result(&busy(), 2, Instant::now());
        assert_eq!(s.workers(), 2);
        assert!(s.backoff_until().is_none());
        assert_eq!(s.last_error, None);
        tokio::time::advance(CONN_LIMIT_HOLD - Duration::from_millis(1)).await;
        s.advance(Instant::now());
        assert_eq!(s.workers(), 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        s.advance(Instant::now());
        assert_eq!(s.workers(), 4, "the limit is tried again after the hold");
        // Never more than configured.
        s.on_result(&busy(), 9, Instant::now());
        assert_eq!(s.workers(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_with_nothing_of_ours_running_pauses_briefly_then_backs_off() {
        let mut s = schedule(4);
        let busy = || {
            batch(
                Ending::Busy("@ERROR: max connections (1) reached".into()),
                0,
            )
        };
        // Our last connection may still be closing: 100, 200, 300 ms.
        for n in 1..=BUSY_RETRIES {
            let now = Instant::now();
            s.on_result(&busy(), 0, now);
            assert_eq!(backing_off_for(&s, now), BUSY_PAUSE * n);
            assert_eq!(s.last_error, None, "a short pause is not an error");
            tokio::time::advance(BUSY_PAUSE * n).await;
            s.advance(Instant::now());
        }
        // Then it is an outage: the first step of the backoff, and the error shown.
        let now = Instant::now();
        s.on_result(&busy(), 0, now);
        assert!(backing_off_for(&s, now) <= Duration::from_millis(100));
        assert!(s.last_error.as_deref().unwrap().contains("max connections"));
        // A batch that ran (even without delivering) ends the streak.
        s.kick();
        s.on_result(&batch(Ending::Done, 0), 0, Instant::now());
        let now = Instant::now();
        s.on_result(&busy(), 0, now);
        assert_eq!(backing_off_for(&s, now), BUSY_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_paths_are_retried_every_failed_interval() {
        let mut s = schedule(4);
        assert!(!s.advance(Instant::now()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!s.advance(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.advance(Instant::now()), "due after failed_interval");
        assert!(!s.advance(Instant::now()), "once");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(s.advance(Instant::now()), "and again an interval later");
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_wakes_at_the_earliest_deadline_that_matters() {
        let mut s = schedule(2);
        let now = Instant::now();
        let retry = now + Duration::from_secs(60);
        assert_eq!(
            s.next_wake(true, 0),
            retry,
            "idle: only the parked-path retry"
        );
        s.due_at(now + Duration::from_secs(5));
        s.due_at(now + Duration::from_secs(3));
        assert_eq!(s.next_wake(true, 0), now + Duration::from_secs(3));
        // A due path cannot start while every worker is busy or nothing may start.
        assert_eq!(s.next_wake(true, 2), retry);
        assert_eq!(s.next_wake(false, 0), retry);
        s.on_result(&batch(down(), 0), 0, now);
        assert_eq!(s.next_wake(false, 0), s.backoff_until().unwrap());
        s.clear_due();
        s.kick();
        assert_eq!(s.next_wake(true, 0), retry);
    }

    #[tokio::test(start_paused = true)]
    async fn an_owed_full_sync_waits_for_at_most_two_batches() {
        let mut s = schedule(4);
        let now = Instant::now();
        assert!(!s.full_sync_overdue());
        s.batch_started(now, 1, true);
        assert!(!s.full_sync_overdue());
        s.batch_started(now, 1, true);
        assert!(s.full_sync_overdue());
        s.full_sync_started();
        assert!(!s.full_sync_overdue());
        // Batches with nothing owed do not count.
        s.batch_started(now, 1, false);
        s.batch_started(now, 1, false);
        assert!(!s.full_sync_overdue());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_sync_shows_what_it_could_not_transfer_and_a_clean_one_clears_it() {
        let mut s = schedule(4);
        let full = |path_error: Option<&str>| JobResult {
            kind: JobKind::Full { deleted: 0 },
            ending: Ending::Done,
            delivered: 0,
            path_error: path_error.map(str::to_string),
            released_moves: false,
        };
        s.on_result(
            &full(Some("rsync exit 23: some files were not transferred")),
            0,
            Instant::now(),
        );
        assert!(s.last_error.as_deref().unwrap().contains("exit 23"));
        assert!(s.backoff_until().is_none());
        s.on_result(&full(None), 0, Instant::now());
        assert_eq!(s.last_error, None);
    }
}
