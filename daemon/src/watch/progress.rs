//! How far the watcher's first walk of a root has come, so that the catch-up can walk the same
//! tree at the same time: it reads a directory only once that directory carries its watch (a
//! change after the read is then an event; one before it, the catch-up sees).
//!
//! The watcher walks depth first with each directory's subdirectories in byte order, which is
//! [`walk_order`]: when it has watched `d`, every directory before `d` in that order is watched
//! (or was gone, or excluded).

use std::sync::{Condvar, Mutex};

use crate::fs::walk_order;

/// One root's progress, shared by the watcher (which publishes) and the catch-up (which waits).
#[derive(Debug, Default)]
pub struct WatchProgress {
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The last directory watched, in walk order; None before the root itself.
    upto: Option<Vec<u8>>,
    /// The walk ended (done, stopped at the watch limit, or never started): nothing to wait for.
    done: bool,
    /// Someone waits: the next step wakes them.
    waiting: bool,
}

impl WatchProgress {
    /// The watcher: `dir` and every directory before it in walk order are watched.
    pub fn watched(&self, dir: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let upto = s.upto.get_or_insert_with(Vec::new);
        debug_assert!(
            upto.is_empty() && dir.is_empty() || walk_order(upto, dir).is_lt(),
            "the watcher walks out of order: {:?} after {:?}",
            String::from_utf8_lossy(dir),
            String::from_utf8_lossy(upto)
        );
        upto.clear();
        upto.extend_from_slice(dir);
        if std::mem::take(&mut s.waiting) {
            self.moved.notify_all();
        }
    }

    /// The watcher: the walk is over, whatever its end.
    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done = true;
        self.moved.notify_all();
    }

    /// The catch-up: block until `dir` is watched, or the walk is over.
    pub fn wait_for(&self, dir: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let reached = s
                .upto
                .as_deref()
                .is_some_and(|u| walk_order(dir, u).is_le());
            if s.done || reached {
                return;
            }
            s.waiting = true;
            s = self.moved.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_wait_ends_once_the_directory_or_one_after_it_is_watched() {
        let p = Arc::new(WatchProgress::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                p.wait_for(b"a/b");
                tx.send(()).unwrap();
            })
        };
        p.watched(b"");
        p.watched(b"a");
        // `a/a` and `a/a/z` come before `a/b`: still waiting.
        p.watched(b"a/a/z");
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        // `a-c` comes after everything below `a`.
        p.watched(b"a-c");
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("woken once past a/b");
        waiter.join().unwrap();
    }

    #[test]
    fn a_finished_walk_lets_every_wait_through() {
        let p = WatchProgress::default();
        p.finish();
        p.wait_for(b"anything/at/all");
        let q = WatchProgress::default();
        q.watched(b"z");
        q.wait_for(b"a/b/c");
    }
}
