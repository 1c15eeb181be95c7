//! What the watcher tells the coalescer ([`Change`]), and what one inotify event means
//! ([`classify`]): pure, tested as a table of event masks.

use inotify::EventMask;
use tokio::sync::oneshot;

/// How soon a changed path should be journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Finished change (close_write, delete, move, attrib, mkdir): journal now.
    Now,
    /// Created, probably about to be written: wait `delay` for its close_write.
    Created,
    /// Written without being closed: journal a quiet `modify_delay` after the last write (at
    /// most `longest_write_wait` after the first).
    Modified,
}

/// What the watcher tells the coalescer.
#[derive(Debug)]
pub enum Change {
    /// `path` (relative to root `root`) changed.
    Path {
        root: usize,
        path: Vec<u8>,
        urgency: Urgency,
    },
    /// A directory moved away from `path`: it is journaled now with everything the index holds
    /// below it, because a directory that appears there again before the push is pushed as
    /// itself, which deletes nothing below it at the target.
    TreeGone { root: usize, path: Vec<u8> },
    /// A directory renamed inside root `root` (a `MOVED_FROM`/`MOVED_TO` pair in one read):
    /// `from` is gone as in [`Change::TreeGone`], and a target may move it to `to` instead of
    /// receiving its files again (the watcher's walk of `to` reports its entries).
    TreeMoved {
        root: usize,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// A file (anything but a directory) renamed inside root `root` (a `MOVED_FROM`/`MOVED_TO`
    /// pair in one read), told after both paths: a target may take the old name as the new
    /// one's basis.
    FileMoved {
        root: usize,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Events were lost for `root`: it catches up (a full sync where its index cannot vouch).
    Resync { root: usize, reason: String },
    /// `root` cannot be fully watched: keep it in sync by scheduled full resyncs.
    Degraded { root: usize, reason: String },
    /// `root` itself vanished, moved, was replaced or unmounted: stop pushing it.
    Lost { root: usize, reason: String },
    /// `root` is the directory it was again (moved back, remounted): watched anew (a
    /// [`Change::Resync`] follows, for whatever changed while it was away).
    Back { root: usize },
    /// Every event read before this one has been handed over.
    Barrier(oneshot::Sender<()>),
}

/// Requests to the watcher task.
#[derive(Debug)]
pub enum WatchCmd {
    /// Read every event already queued in the kernel, then pass a [`Change::Barrier`] on.
    Barrier(oneshot::Sender<()>),
}

/// What one inotify event on a watched directory means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `IN_Q_OVERFLOW`: events were lost.
    Overflow,
    /// `IN_IGNORED`: the kernel dropped the watch (its directory is gone).
    WatchGone,
    /// The watched directory itself was deleted or moved.
    DirGone,
    /// The watched directory's own attributes changed.
    DirChanged,
    /// A directory moved away from here: a delete, unless a `MOVED_TO` with the same cookie in
    /// the same read makes it a rename.
    DirMovedAway,
    /// A directory appeared (created, or moved in when `moved_in`): watch it, then scan it.
    DirAppeared { moved_in: bool },
    /// The named entry changed.
    Changed(Urgency),
    /// Nothing to do.
    Ignore,
}

/// Classify an event by its mask; `named`: the event names an entry of the directory (else it
/// is about the directory itself).
pub fn classify(mask: EventMask, named: bool) -> Action {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Action::Overflow;
    }
    if mask.contains(EventMask::IGNORED) {
        return Action::WatchGone;
    }
    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
        return Action::DirGone;
    }
    if !named {
        return if mask.contains(EventMask::ATTRIB) {
            Action::DirChanged
        } else {
            Action::Ignore
        };
    }
    let is_dir = mask.contains(EventMask::ISDIR);
    if is_dir && mask.contains(EventMask::MOVED_FROM) {
        return Action::DirMovedAway;
    }
    if is_dir && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        return Action::DirAppeared {
            moved_in: mask.contains(EventMask::MOVED_TO),
        };
    }
    Action::Changed(if mask.contains(EventMask::CREATE) {
        Urgency::Created
    } else if mask.contains(EventMask::MODIFY) {
        Urgency::Modified
    } else {
        Urgency::Now
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_classified() {
        use Action::*;
        let dir = EventMask::ISDIR;
        let cases: &[(EventMask, bool, Action)] = &[
            (EventMask::Q_OVERFLOW, false, Overflow),
            (EventMask::IGNORED, false, WatchGone),
            (EventMask::DELETE_SELF, false, DirGone),
            (EventMask::MOVE_SELF, false, DirGone),
            (EventMask::ATTRIB | dir, false, DirChanged),
            (EventMask::MODIFY, false, Ignore),
            (EventMask::MOVED_FROM | dir, true, DirMovedAway),
            (
                EventMask::CREATE | dir,
                true,
                DirAppeared { moved_in: false },
            ),
            (
                EventMask::MOVED_TO | dir,
                true,
                DirAppeared { moved_in: true },
            ),
            (EventMask::CREATE, true, Changed(Urgency::Created)),
            (EventMask::MODIFY, true, Changed(Urgency::Modified)),
            (EventMask::CLOSE_WRITE, true, Changed(Urgency::Now)),
            (EventMask::ATTRIB, true, Changed(Urgency::Now)),
            (EventMask::ATTRIB | dir, true, Changed(Urgency::Now)),
            (EventMask::DELETE, true, Changed(Urgency::Now)),
            (EventMask::DELETE | dir, true, Changed(Urgency::Now)),
            (EventMask::MOVED_FROM, true, Changed(Urgency::Now)),
            (EventMask::MOVED_TO, true, Changed(Urgency::Now)),
        ];
        for (mask, named, want) in cases {
            assert_eq!(classify(*mask, *named), *want, "{mask:?} named={named}");
        }
    }
}
