//! The check of every root's identity, once a second, on a thread of its own: a thread asleep
//! between checks wakes once a second, where a tokio interval wakes the runtime three times
//! (its timer wheel wakes early, then on time, then the task). The watcher is nudged only when a
//! look is worth it: a root is not the directory syncd started on, or one is lost (it may be
//! back).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::fs::RootIdentity;

/// The running check; it ends when this is dropped.
pub struct RootCheck {
    nudge: Arc<Notify>,
    _stop: mpsc::Sender<()>,
}

impl RootCheck {
    /// Check each of `sources` against its `identity` every `every`; `lost` is the watcher's
    /// per-root flag (set while a root is unwatched).
    pub fn start(
        sources: Vec<PathBuf>,
        identity: Vec<RootIdentity>,
        lost: Arc<Vec<AtomicBool>>,
        every: Duration,
    ) -> std::io::Result<RootCheck> {
        let nudge = Arc::new(Notify::new());
        let (stop, stopped) = mpsc::channel::<()>();
        let n = nudge.clone();
        std::thread::Builder::new()
            .name("root-check".into())
            .spawn(move || {
                // Asleep until the next check; the watcher dropping its end stops the thread.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let look = sources
                        .iter()
                        .zip(&identity)
                        .enumerate()
                        .any(|(r, (s, id))| {
                            lost[r].load(Ordering::Relaxed) || RootIdentity::of(s).ok() != Some(*id)
                        });
                    if look {
                        n.notify_one();
                    }
                }
            })?;
        Ok(RootCheck { nudge, _stop: stop })
    }

    /// Wait until the roots are worth a look.
    pub async fn wanted(&self) {
        self.nudge.notified().await
    }
}
