//! Liveness, checked while running: a path pending at a running target must be in flight,
//! waiting for a retry, or waiting for a push that is running. One that waits for nothing (a
//! rename's hold that no running job will ever lift, a claim left in flight by no job) is a bug
//! of syncd's own, and must not stay silent: the worker finds it here, logs it with its journal
//! entry, counts it (`status`, `failed`, `syncd_stuck_paths_total`), and pushes it again.
//!
//! The worker hands over, at every pass that found nothing to start, the due paths it passed
//! over because a pending move holds them while no running push covers them
//! ([`Liveness::observe`]); a path passed over like that for [`STUCK_AFTER`] is stuck. The
//! worker wakes for the check on its own ([`Liveness::next_check`]), so a target with nothing
//! else to do still finds it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How long a due path may be passed over with nothing running that covers it, the target
/// otherwise idle.
pub const STUCK_AFTER: Duration = Duration::from_secs(5);

/// The same while other pushes run: a move held back by one of them (a conflict) starts when it
/// ends, so a path is given longer before it counts as stuck (still within `failed`'s 30 s).
pub const STUCK_AFTER_BUSY: Duration = Duration::from_secs(20);

/// How long a path may be passed over before it is stuck (`idle`: no push of the target runs).
pub fn stuck_after(idle: bool) -> Duration {
    if idle {
        STUCK_AFTER
    } else {
        STUCK_AFTER_BUSY
    }
}

/// Most stuck paths remembered for `syncctl failed`.
const RECENT: usize = 100;

/// Most paths followed at once (the rest are found at a later pass).
const FOLLOWED: usize = 10_000;

/// A path found stuck, for `syncctl failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckPath {
    pub path: Vec<u8>,
    /// When it was found stuck.
    pub at: std::time::SystemTime,
    /// What was done about it.
    pub what: String,
}

/// The paths passed over, since when, and what was found stuck.
#[derive(Default)]
pub struct Liveness {
    passed_over: HashMap<Vec<u8>, Instant>,
    /// Paths found stuck since the start, all of them.
    pub total: u64,
    /// The latest ones, newest last.
    pub recent: VecDeque<StuckPath>,
}

impl Liveness {
    /// A pass over the due paths found nothing to start and passed over `paths` (each held
    /// with nothing running that covers it): those passed over for [`STUCK_AFTER`] (the
    /// target `idle`: no push running) or [`STUCK_AFTER_BUSY`] are returned, and forgotten
    /// (they are dealt with). A path not passed over this time starts again from zero.
    pub fn observe(&mut self, paths: Vec<Vec<u8>>, now: Instant, idle: bool) -> Vec<Vec<u8>> {
        let after = stuck_after(idle);
        let mut kept = HashMap::with_capacity(paths.len().min(FOLLOWED));
        for p in paths.into_iter().take(FOLLOWED) {
            let since = self.passed_over.get(&p).copied().unwrap_or(now);
            kept.insert(p, since);
        }
        self.passed_over = kept;
        let stuck: Vec<Vec<u8>> = self
            .passed_over
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &stuck {
            self.passed_over.remove(p);
        }
        stuck
    }

    /// Something started or nothing was passed over: every path starts again from zero.
    pub fn clear(&mut self) {
        self.passed_over.clear();
    }

    /// When the worker must look again, if a path is being followed (`idle`: no push runs).
    pub fn next_check(&self, idle: bool) -> Option<Instant> {
        let after = stuck_after(idle);
        self.passed_over.values().min().map(|s| *s + after)
    }

    /// Remember that `path` was found stuck and what was done.
    pub fn found(&mut self, path: Vec<u8>, what: String) {
        self.total += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(StuckPath {
            path,
            at: std::time::SystemTime::now(),
            what,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<Vec<u8>> {
        ps.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_path_passed_over_for_the_whole_delay_is_stuck_once() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        assert!(l.observe(paths(&["a", "b"]), t0, true).is_empty());
        assert_eq!(l.next_check(true), Some(t0 + STUCK_AFTER));
        assert_eq!(l.next_check(false), Some(t0 + STUCK_AFTER_BUSY));
        // `b` went meanwhile: its clock starts again when it is passed over again.
        let t1 = t0 + Duration::from_secs(3);
        assert!(l.observe(paths(&["a"]), t1, true).is_empty());
        let t2 = t1 + Duration::from_secs(1);
        assert!(l.observe(paths(&["a", "b"]), t2, true).is_empty());
        let t3 = t0 + STUCK_AFTER;
        // While other pushes run, the longer delay.
        assert!(l.observe(paths(&["a", "b"]), t3, false).is_empty());
        assert_eq!(l.observe(paths(&["a", "b"]), t3, true), paths(&["a"]));
        assert_eq!(l.next_check(true), Some(t2 + STUCK_AFTER));
        assert_eq!(
            l.observe(paths(&["b"]), t2 + STUCK_AFTER, true),
            paths(&["b"])
        );
        assert_eq!(l.next_check(true), None);
        l.observe(paths(&["c"]), t3, true);
        assert_eq!(
            l.observe(paths(&["c"]), t3 + STUCK_AFTER_BUSY, false),
            paths(&["c"])
        );
        l.observe(paths(&["d"]), t3, true);
        l.clear();
        assert_eq!(l.next_check(true), None);
    }

    #[test]
    fn what_was_found_is_counted_and_the_latest_kept() {
        let mut l = Liveness::default();
        for i in 0..(RECENT + 5) {
            l.found(format!("p{i}").into_bytes(), "pushed again".into());
        }
        assert_eq!(l.total, (RECENT + 5) as u64);
        assert_eq!(l.recent.len(), RECENT);
        assert_eq!(l.recent.back().unwrap().path, b"p104");
    }
}
