//! The log of delivered and failed batches behind `syncctl log [--follow]`: the recent ones in a
//! ring, new ones broadcast to followers. Publishing never waits: a follower that reads too
//! slowly is told how many events it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use syncd_proto::{ByteBuf, LogEvent, LogKind};
use tokio::sync::broadcast;

use crate::journal::now_ms;

/// Events kept for `syncctl log`.
const RECENT: usize = 200;
/// Paths named in one event.
const SAMPLE: usize = 5;

#[derive(Clone)]
pub struct Events {
    recent: Arc<Mutex<VecDeque<LogEvent>>>,
    tx: broadcast::Sender<LogEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            recent: Arc::default(),
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    /// Record an event about `paths` of target `id`.
    pub fn publish<'a>(
        &self,
        id: &str,
        kind: LogKind,
        paths: impl IntoIterator<Item = &'a [u8]>,
        error: Option<&str>,
    ) {
        let mut n = 0u64;
        let mut sample = Vec::new();
        for p in paths {
            n += 1;
            if sample.len() < SAMPLE {
                sample.push(ByteBuf::from(p.to_vec()));
            }
        }
        let ev = LogEvent {
            time_ms: now_ms(),
            target: id.to_string(),
            kind,
            paths: n,
            sample,
            error: error.map(str::to_string),
        };
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(ev.clone());
        // Under the lock, like `follow`: a follower gets each event once. (No follower: nobody
        // to tell.)
        let _ = self.tx.send(ev);
    }

    /// A full sync of `sub` (empty: the whole root) is owed to target `id` for `why`: logged,
    /// and told to `syncctl log`.
    pub fn full_sync_owed(&self, id: &str, sub: &[u8], why: &str) {
        let dir = if sub.is_empty() {
            ".".into()
        } else {
            String::from_utf8_lossy(sub)
        };
        tracing::info!(target = %id, dir = %dir, why, "full sync owed");
        self.publish(id, LogKind::FullSyncOwed, [sub], Some(why));
    }

    /// The recent events, and a receiver for what comes after them.
    pub fn follow(&self) -> (Vec<LogEvent>, broadcast::Receiver<LogEvent>) {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribed under the lock: nothing published falls between the two.
        let rx = self.tx.subscribe();
        (r.iter().cloned().collect(), rx)
    }
}
