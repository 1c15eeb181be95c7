//! `delete_guard`: a batch's deletions go to the target only while the deletions the target
//! took within the window, plus the batch's, stay within the guard. Otherwise they are held in
//! the journal ([`Journal::hold`](crate::journal::Journal::hold)), and so is every deletion after
//! them until `syncctl release-deletes`; the rest of the batch goes on.
//!
//! What a deletion costs the target is counted, not the paths the batch lists: a deletion is
//! pushed as its top-most missing ancestor (see [`plan_path`](crate::rsync::plan_path)), which
//! removes everything below it at the target. That is what the journal has pending below it and
//! what the index still holds there (deletions not journaled yet); a directory counted within
//! the window is not counted again for the paths below it that follow.
//!
//! A share is of the root's entries before the deletions: what the index counts (less what it
//! still holds below the deleted directories) plus the deletions taken within the window and
//! the batch's. Until the index has walked the whole root it cannot count them, and a share
//! holds nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::Worker;
use crate::config::{DeleteGuard, GuardLimit};
use crate::fs::parents;
use crate::journal::{now_ms, Item, JournalError};

/// A planned push of one path: what rsync is told, and whether that is a deletion.
pub type Plan = (Vec<u8>, bool);

/// Deletions a target took at one time: how many entries, of which directories.
#[derive(Debug)]
struct Taken {
    at: Instant,
    entries: u64,
    tops: Vec<Vec<u8>>,
}

/// The deletions one target took within the guard's window.
#[derive(Debug)]
pub struct DeleteWindow {
    guard: DeleteGuard,
    taken: VecDeque<Taken>,
    /// The tops of `taken`, and when they were last taken: looked up by path and ancestors.
    counted: HashMap<Vec<u8>, Instant>,
    /// The target's held deletions as last counted, while it holds some (for the report).
    held: Option<u64>,
}

impl DeleteWindow {
    pub fn new(guard: DeleteGuard) -> DeleteWindow {
        DeleteWindow {
            guard,
            taken: VecDeque::new(),
            counted: HashMap::new(),
            held: None,
        }
    }

    /// What the target took within the window before a restart, as the journal kept it:
    /// (Unix ms, entries), `now_ms` being `now`. Their directories are not known: what follows
    /// below them is counted again (erring toward holding).
    pub fn restore(&mut self, taken: &[(u64, u64)], now_ms: u64, now: Instant) {
        for &(at, entries) in taken {
            let age = Duration::from_millis(now_ms.saturating_sub(at));
            self.taken.push_back(Taken {
                at: now.checked_sub(age).unwrap_or(now),
                entries,
                tops: Vec::new(),
            });
        }
    }

    pub fn is_off(&self) -> bool {
        self.guard.limit == GuardLimit::Off
    }

    /// Forget what was taken before the window ending `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(t) = self.taken.front() {
            if now.saturating_duration_since(t.at) < self.guard.window {
                break;
            }
            let t = self.taken.pop_front().expect("a front");
            for top in &t.tops {
                if self.counted.get(top) == Some(&t.at) {
                    self.counted.remove(top);
                }
            }
        }
    }

    /// The outermost of the deleted `tops` not counted within the window already.
    pub fn uncounted(&mut self, tops: &[Vec<u8>], now: Instant) -> Vec<Vec<u8>> {
        self.expire(now);
        let all: HashSet<&[u8]> = tops.iter().map(Vec::as_slice).collect();
        let mut out: Vec<Vec<u8>> = tops
            .iter()
            .filter(|t| !parents(t).any(|a| all.contains(a)))
            .filter(|t| {
                !std::iter::once(t.as_slice())
                    .chain(parents(t))
                    .any(|a| self.counted.contains_key(a))
            })
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether `n` more deleted entries may go now; `entries`: the root's other entries as the
    /// index counts them, if it can.
    pub fn allows(&mut self, n: u64, entries: Option<u64>, now: Instant) -> bool {
        self.expire(now);
        let taken: u64 = self.taken.iter().map(|t| t.entries).sum();
        let limit = match self.guard.limit {
            GuardLimit::Off => return true,
            GuardLimit::Paths(p) => p,
            GuardLimit::Share(s) => match entries {
                Some(e) => (s * (e + taken + n) as f64).floor() as u64,
                None => return true,
            },
        };
        taken + n <= limit
    }

    /// How many more entries may be deleted now (None: no limit); `entries` as for
    /// [`DeleteWindow::allows`].
    pub fn remaining(&mut self, entries: Option<u64>, now: Instant) -> Option<u64> {
        self.expire(now);
        let taken: u64 = self.taken.iter().map(|t| t.entries).sum();
        let limit = match self.guard.limit {
            GuardLimit::Off => return None,
            GuardLimit::Paths(p) => p,
            GuardLimit::Share(s) => (s * (entries? + taken) as f64).floor() as u64,
        };
        Some(limit.saturating_sub(taken))
    }

    /// Deletions of `entries` entries, at `tops`, went.
    pub fn took(&mut self, entries: u64, tops: Vec<Vec<u8>>, now: Instant) {
        for t in &tops {
            self.counted.insert(t.clone(), now);
        }
        self.taken.push_back(Taken {
            at: now,
            entries,
            tops,
        });
    }
}

impl Worker {
    /// Hold the deletions of a batch about to be taken if the guard says so (see the module),
    /// and return the rest of the batch with its plans. `plans[i]` is `items[i]`'s.
    pub(super) fn guard_deletions(
        &self,
        window: &mut DeleteWindow,
        items: Vec<Item>,
        plans: Vec<Option<Plan>>,
    ) -> Result<(Vec<Item>, Vec<Plan>), JournalError> {
        let flat = |plans: Vec<Option<Plan>>| plans.into_iter().flatten().collect();
        if window.is_off() || !plans.iter().flatten().any(|p| p.1) {
            return Ok((items, flat(plans)));
        }
        let released = self.journal.released_mark(&self.id)?;
        let guarded = |i: &Item, p: &Option<Plan>| {
            p.as_ref().is_some_and(|p| p.1) && i.entry.generation >= released
        };
        let tops: Vec<Vec<u8>> = items
            .iter()
            .zip(&plans)
            .filter(|(i, p)| guarded(i, p))
            .filter_map(|(_, p)| p.as_ref().map(|p| p.0.clone()))
            .collect();
        if tops.is_empty() {
            return Ok((items, flat(plans)));
        }
        let holding = self.journal.has_held(&self.id)?;
        if !holding {
            window.held = None;
            if self.deletions_allowed(window, &tops, released)? {
                return Ok((items, flat(plans)));
            }
        }
        let (mut hold, mut keep, mut kept_plans) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in items.into_iter().zip(plans) {
            if guarded(&i, &p) {
                hold.push(i);
            } else {
                keep.push(i);
                kept_plans.extend(p);
            }
        }
        let moved = self.journal.hold(&self.id, &hold)?;
        // Counted once (a scan), then kept up: a mass deletion comes in many batches.
        let total = match window.held {
            Some(n) => n + moved,
            None => self.journal.held_count(&self.id)?,
        };
        window.held = Some(total);
        self.reporter.deletes_held(&hold, total);
        Ok((keep, kept_plans))
    }

    /// Whether deleting `tops` keeps the target within the guard (then it counts as taken).
    /// Deletions pending below them that are older than the last release are not counted.
    fn deletions_allowed(
        &self,
        window: &mut DeleteWindow,
        tops: &[Vec<u8>],
        released: u64,
    ) -> Result<bool, JournalError> {
        let now = Instant::now();
        let outer = window.uncounted(tops, now);
        let root = &self.runner.root.name;
        let (mut pending, mut indexed) = (0, 0);
        for t in &outer {
            let below = self.journal.pending_below(&self.id, t)?;
            pending += below
                .iter()
                .filter(|i| i.entry.generation >= released)
                .count() as u64;
            indexed += self.journal.index_paths_below(root, t)?.len() as u64;
        }
        let entries = self.root_entries()?.map(|e| e.saturating_sub(indexed));
        let n = pending + indexed;
        let allowed = window.allows(n, entries, now);
        if allowed {
            self.took_deletions(window, n, outer);
        }
        Ok(allowed)
    }

    /// The window of deletions this target took, as the journal kept it across a restart.
    pub(super) fn delete_window(&self) -> DeleteWindow {
        let guard = self.runner.root.delete_guard;
        let mut window = DeleteWindow::new(guard);
        if window.is_off() {
            return window;
        }
        let now = now_ms();
        match self
            .journal
            .deletions_taken(&self.id, now, guard.window.as_millis() as u64)
        {
            Ok(taken) => window.restore(&taken, now, Instant::now()),
            // Counted from nothing: at worst one more guard's worth within the first window.
            Err(e) => {
                warn!(target = %self.id, error = %e, "the deletions taken before the start are unknown")
            }
        }
        window
    }

    /// Deletions of `entries` entries, at `tops`, went: counted in the window, and kept in the
    /// journal for a restart (if that write fails, the window still counts them: only a restart
    /// within it would forget them).
    pub(super) fn took_deletions(
        &self,
        window: &mut DeleteWindow,
        entries: u64,
        tops: Vec<Vec<u8>>,
    ) {
        window.took(entries, tops, Instant::now());
        let window_ms = window.guard.window.as_millis() as u64;
        if let Err(e) = self
            .journal
            .took_deletions(&self.id, entries, now_ms(), window_ms)
        {
            warn!(target = %self.id, error = %e, "the journal did not keep the deletions taken");
        }
    }

    /// The most a full sync (`--delete`) may delete now: what the guard has left, nothing while
    /// deletions are held; None: no limit.
    pub(super) fn full_sync_budget(
        &self,
        window: &mut DeleteWindow,
    ) -> Result<Option<u64>, JournalError> {
        if window.is_off() {
            return Ok(None);
        }
        if self.journal.has_held(&self.id)? {
            return Ok(Some(0));
        }
        Ok(window.remaining(self.root_entries()?, Instant::now()))
    }

    /// The root's entries as its index counts them, once the index walked the whole root.
    fn root_entries(&self) -> Result<Option<u64>, JournalError> {
        let sum = self.journal.index_sum(&self.runner.root.name)?;
        Ok(sum.filter(|s| s.built.is_some()).map(|s| s.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: GuardLimit) -> DeleteWindow {
        DeleteWindow::new(DeleteGuard {
            limit,
            window: Duration::from_secs(60),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_number_of_paths_counts_what_the_window_took() {
        let mut w = window(GuardLimit::Paths(100));
        let t0 = Instant::now();
        assert!(w.allows(100, None, t0), "up to the guard goes");
        assert!(!w.allows(101, None, t0));
        w.took(60, vec![], t0);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(w.allows(40, None, Instant::now()));
        assert!(
            !w.allows(41, None, Instant::now()),
            "60 taken 59 s ago count"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(w.allows(100, None, Instant::now()), "out of the window");
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_taken_before_a_restart_counts_until_its_window_ends() {
        let mut w = window(GuardLimit::Paths(100));
        // Taken 50 s and 10 s before the restart (Unix ms), 30 and 40 entries.
        w.restore(
            &[(1_000_000, 30), (1_040_000, 40)],
            1_050_000,
            Instant::now(),
        );
        assert!(w.allows(30, None, Instant::now()));
        assert!(!w.allows(31, None, Instant::now()), "70 of 100 were taken");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            w.allows(60, None, Instant::now()),
            "the first 30 left the window"
        );
        assert!(!w.allows(61, None, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_is_of_the_entries_before_the_deletions() {
        let mut w = window(GuardLimit::Share(0.3));
        let now = Instant::now();
        // 1,000 entries, 300 of them deleted (the index counts 700): exactly 30 %.
        assert!(w.allows(300, Some(700), now));
        // 301 of 1,000 is over.
        assert!(!w.allows(301, Some(699), now));
        // 80 % of a tree in one batch.
        assert!(!w.allows(800, Some(200), now));
        w.took(200, vec![], now);
        // The window's 200 count as entries there were: 100 more of 1,000 is over 30 %.
        assert!(w.allows(100, Some(700), now));
        assert!(!w.allows(101, Some(699), now));
        assert!(
            w.allows(5_000, None, now),
            "no whole index: a share cannot judge"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_is_counted_once_with_what_is_below_it_within_the_window() {
        let mut w = window(GuardLimit::Paths(100));
        let p = |s: &str| s.as_bytes().to_vec();
        let now = Instant::now();
        let tops = [p("big/f1"), p("big"), p("big-2"), p("big/sub"), p("big")];
        assert_eq!(w.uncounted(&tops, now), vec![p("big"), p("big-2")]);
        w.took(30, vec![p("big")], now);
        assert_eq!(
            w.uncounted(&[p("big/f9"), p("other")], now),
            vec![p("other")]
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            w.uncounted(&[p("big/f9")], Instant::now()),
            vec![p("big/f9")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_left_for_a_full_sync_is_the_guard_less_the_window() {
        let now = Instant::now();
        let mut w = window(GuardLimit::Paths(100));
        w.took(30, vec![], now);
        assert_eq!(w.remaining(None, now), Some(70));
        let mut w = window(GuardLimit::Share(0.3));
        assert_eq!(w.remaining(Some(1_000), now), Some(300));
        assert_eq!(w.remaining(None, now), None, "no whole index: no limit");
        assert_eq!(window(GuardLimit::Off).remaining(Some(1), now), None);
    }

    #[test]
    fn off_allows_everything() {
        let mut w = window(GuardLimit::Off);
        assert!(w.is_off() && w.allows(u64::MAX / 2, Some(0), Instant::now()));
    }
}
