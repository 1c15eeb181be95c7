//! What a target's worker is told, and the switches those commands set.
//!
//! The worker is one task; everything from outside reaches it as a [`Command`] in its inbox
//! (the coalescer's wake-ups, `syncctl`'s pause, resume, resync, retry-failed and
//! release-deletes, the root coming back, the engine's stop). Only the worker changes its
//! [`Switches`], and what they let it do is decided by [`Switches::gate`]: a pure function of
//! the switches, the schedule and the clock, tested here under a paused clock.

use std::time::Duration;

use syncd_proto::TargetState;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::schedule::Schedule;

/// A message to a target's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `fresh` paths were journaled for the target (0: something else changed, look again).
    Wake {
        fresh: usize,
    },
    /// Start nothing new; running rsyncs finish.
    Pause,
    Resume,
    /// A full sync was owed in the journal (`syncctl resync`): leave backoff at once.
    Resync,
    /// Parked paths were queued again (`retry-failed`), or the source is back: leave backoff
    /// at once.
    Retry,
    /// Deletions `delete_guard` held were released in the journal: look again.
    Release,
    /// Start nothing more; running rsyncs get the grace period, then are killed.
    Stop,
}

/// The sending side of a worker's inbox, kept by the engine, the coalescer and the control
/// socket.
#[derive(Debug, Clone)]
pub struct Inbox(mpsc::UnboundedSender<Command>);

impl Inbox {
    /// An inbox and the receiver its worker reads.
    pub fn channel() -> (Inbox, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Inbox(tx), rx)
    }

    /// Tell the worker; a worker that has stopped has nothing left to do with it.
    pub fn send(&self, c: Command) {
        let _ = self.0.send(c);
    }
}

/// The worker's switches: set by its commands only.
#[derive(Debug, Default)]
pub struct Switches {
    pub paused: bool,
    /// When the shutdown grace period ends, once a stop was told.
    pub stopping: Option<Instant>,
    /// Leave backoff at the next step.
    kicked: bool,
    /// Paths journaled since the last batch started (a paced stream that gathered a full
    /// batch goes at once).
    pub fresh: usize,
}

/// What the switches let the worker do at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Pushes may start.
    pub can_start: bool,
    /// What `status` shows.
    pub state: TargetState,
}

impl Switches {
    /// Take one command, at `now`; `grace` is how long running rsyncs get after a stop.
    pub fn apply(&mut self, c: Command, now: Instant, grace: Duration) {
        match c {
            Command::Wake { fresh } => self.fresh = self.fresh.saturating_add(fresh),
            Command::Pause => self.paused = true,
            Command::Resume => self.paused = false,
            Command::Resync | Command::Retry => self.kicked = true,
            Command::Release => {}
            // The first stop sets the deadline; another does not extend it.
            Command::Stop => {
                self.stopping.get_or_insert(now + grace);
            }
        }
    }

    /// A batch starts: what was journaled before is in it, or not due.
    pub fn batch_started(&mut self) {
        self.fresh = 0;
    }

    /// Bring the schedule up to `now` (a kick ends its backoff first) and say what may happen.
    /// Returns the gate and whether parked paths are due for their scheduled retry.
    pub fn gate(&mut self, sched: &mut Schedule, full_running: bool, now: Instant) -> (Gate, bool) {
        if std::mem::take(&mut self.kicked) {
            sched.kick();
        }
        let retry_parked = sched.advance(now);
        let backoff = sched.backoff_until().is_some();
        let can_start = self.stopping.is_none() && !self.paused && !backoff && !full_running;
        let state = self.state(sched, full_running);
        (Gate { can_start, state }, retry_parked)
    }

    /// What `status` shows, with a full sync running or not.
    pub fn state(&self, sched: &Schedule, full_running: bool) -> TargetState {
        if self.paused {
            TargetState::Paused
        } else if sched.backoff_until().is_some() {
            TargetState::Backoff
        } else if full_running {
            TargetState::InitialSync
        } else {
            TargetState::Running
        }
    }

    /// Whether the grace period after a stop is over at `now`.
    pub fn grace_over(&self, now: Instant) -> bool {
        self.stopping.is_some_and(|s| s <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;
    use crate::dispatch::inflight::Claim;
    use crate::dispatch::job::{Ending, JobKind, JobResult, TargetFailure};
    use crate::dispatch::schedule::Schedule;

    const GRACE: Duration = Duration::from_secs(10);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            failed_interval: Duration::from_secs(60),
        }
    }

    fn schedule() -> Schedule {
        Schedule::new("r/t".into(), policy(), 2, Instant::now())
    }

    fn transport_failure() -> JobResult {
        JobResult {
            kind: JobKind::Batch(Claim::default()),
            ending: Ending::Failed(TargetFailure::Down(
                "rsync exit 10: connection failed".into(),
            )),
            delivered: 0,
            path_error: None,
            released_moves: false,
        }
    }

    fn told(sw: &mut Switches, cmds: &[Command]) {
        for c in cmds {
            sw.apply(*c, Instant::now(), GRACE);
        }
    }

    fn gate(sw: &mut Switches, sched: &mut Schedule) -> Gate {
        sw.gate(sched, false, Instant::now()).0
    }

    #[tokio::test(start_paused = true)]
    async fn pause_and_resume_gate_new_pushes_and_show_in_status() {
        let (mut sw, mut sched) = (Switches::default(), schedule());
        let running = Gate {
            can_start: true,
            state: TargetState::Running,
        };
        assert_eq!(gate(&mut sw, &mut sched), running);
        told(&mut sw, &[Command::Pause, Command::Wake { fresh: 3 }]);
        let paused = Gate {
            can_start: false,
            state: TargetState::Paused,
        };
        assert_eq!(gate(&mut sw, &mut sched), paused);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(gate(&mut sw, &mut sched), paused, "a pause has no end");
        told(&mut sw, &[Command::Pause, Command::Resume]);
        assert_eq!(gate(&mut sw, &mut sched), running, "the last command wins");
        assert_eq!(sw.fresh, 3, "paths journaled while paused still count");
        sw.batch_started();
        assert_eq!(sw.fresh, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_ends_on_its_own_or_at_once_on_resync_or_retry_but_not_on_release() {
        for (cmd, ends) in [
            (Command::Resync, true),
            (Command::Retry, true),
            (Command::Release, false),
            (Command::Wake { fresh: 1 }, false),
            (Command::Resume, false),
        ] {
            let (mut sw, mut sched) = (Switches::default(), schedule());
            sched.on_result(&transport_failure(), 0, Instant::now());
            let g = gate(&mut sw, &mut sched);
            assert_eq!(g.state, TargetState::Backoff);
            assert!(!g.can_start);
            told(&mut sw, &[cmd]);
            let g = gate(&mut sw, &mut sched);
            assert_eq!(g.can_start, ends, "{cmd:?}");
            // A kick is spent by the step that takes it: the next failure backs off again.
            sched.on_result(&transport_failure(), 0, Instant::now());
            assert_eq!(
                gate(&mut sw, &mut sched).state,
                TargetState::Backoff,
                "{cmd:?}"
            );
            let until = sched.backoff_until().unwrap();
            tokio::time::advance(until - Instant::now()).await;
            assert!(
                gate(&mut sw, &mut sched).can_start,
                "{cmd:?}: ends on its own"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paused_in_backoff_shows_paused_and_a_full_sync_runs_alone() {
        let (mut sw, mut sched) = (Switches::default(), schedule());
        sched.on_result(&transport_failure(), 0, Instant::now());
        told(&mut sw, &[Command::Pause]);
        assert_eq!(gate(&mut sw, &mut sched).state, TargetState::Paused);
        told(&mut sw, &[Command::Resume, Command::Retry]);
        let (g, _) = sw.gate(&mut sched, true, Instant::now());
        assert_eq!(
            g,
            Gate {
                can_start: false,
                state: TargetState::InitialSync
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_starts_nothing_more_and_its_grace_period_is_not_extended() {
        let (mut sw, mut sched) = (Switches::default(), schedule());
        let t0 = Instant::now();
        told(&mut sw, &[Command::Stop]);
        assert_eq!(sw.stopping, Some(t0 + GRACE));
        assert!(!gate(&mut sw, &mut sched).can_start);
        tokio::time::advance(Duration::from_secs(5)).await;
        told(&mut sw, &[Command::Stop, Command::Resume, Command::Retry]);
        assert_eq!(
            sw.stopping,
            Some(t0 + GRACE),
            "a second stop does not extend it"
        );
        assert!(!gate(&mut sw, &mut sched).can_start, "nothing restarts it");
        assert!(!sw.grace_over(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(sw.grace_over(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn parked_paths_come_due_through_the_gate_every_failed_interval() {
        let (mut sw, mut sched) = (Switches::default(), schedule());
        assert!(!sw.gate(&mut sched, false, Instant::now()).1);
        tokio::time::advance(policy().failed_interval).await;
        told(&mut sw, &[Command::Pause]);
        assert!(
            sw.gate(&mut sched, false, Instant::now()).1,
            "due even while paused (they go back to pending and wait there)"
        );
        assert!(!sw.gate(&mut sched, false, Instant::now()).1, "once");
    }
}
