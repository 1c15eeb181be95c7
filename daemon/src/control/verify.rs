//! `syncctl verify [--target NAME] [--checksum] [PATH]`: each chosen target compared with the
//! source by a dry-run rsync, one target after another; nothing changes at either side.

use std::sync::Arc;

use syncd_proto::{ByteBuf, Response, RootState, TargetDrift, VerifyReport};

use crate::dispatch::TargetHandle;
use crate::engine::EngineView;
use crate::rsync::{FullProgress, Outcome};

type Slot = std::sync::Mutex<Option<Arc<FullProgress>>>;

fn lock(m: &Slot) -> std::sync::MutexGuard<'_, Option<Arc<FullProgress>>> {
    // Nothing panics while holding it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A verify's progress, shown by `status` until it is dropped (also when the client goes away
/// and the request with it).
struct Shown<'a> {
    slot: &'a Slot,
    progress: Arc<FullProgress>,
}

impl<'a> Shown<'a> {
    fn new(t: &'a TargetHandle, sub: &[u8]) -> Shown<'a> {
        let progress = Arc::new(FullProgress::new(t.runner.root.clone()));
        progress.begin(sub, 0);
        *lock(&t.verifying) = Some(progress.clone());
        Shown {
            slot: &t.verifying,
            progress,
        }
    }
}

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        self.progress.end();
        let mut slot = lock(self.slot);
        // Not another verify's, started meanwhile.
        if slot
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &self.progress))
        {
            *slot = None;
        }
    }
}

pub(super) async fn verify(
    engine: &EngineView,
    target: Option<&str>,
    path: Option<ByteBuf>,
    checksum: bool,
) -> Response {
    let chosen = match super::chosen(engine, target, path, super::Names::Dir) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut targets = Vec::new();
    for (t, sub) in chosen {
        targets.push(one(engine, t, &sub, checksum).await);
    }
    Response::Verify(VerifyReport { targets })
}

/// Compare one target; a root that is not there is not compared (every path would look extra).
async fn one(engine: &EngineView, t: &TargetHandle, sub: &[u8], checksum: bool) -> TargetDrift {
    let began = std::time::Instant::now();
    let mut drift = TargetDrift {
        target: t.id.clone(),
        dir: ByteBuf::from(sub.to_vec()),
        error: None,
        paths: Vec::new(),
        more: 0,
        elapsed_ms: 0,
    };
    let state = engine.roots[t.root].state.borrow().clone();
    if let RootState::Unavailable { reason } = state {
        drift.error = Some(format!("the source root is unavailable: {reason}"));
        return drift;
    }
    let shown = Shown::new(t, sub);
    let v = t.runner.verify(sub, checksum, &shown.progress).await;
    drop(shown);
    match v.outcome {
        Outcome::Delivered => {
            drift.paths = v.paths;
            drift.more = v.more;
        }
        Outcome::Partial(e) => {
            drift.paths = v.paths;
            drift.more = v.more;
            drift.error = Some(format!("some paths could not be compared: {e}"));
        }
        Outcome::TargetDown(e)
        | Outcome::Interrupted(e)
        | Outcome::Permanent(e)
        | Outcome::Busy(e) => drift.error = Some(format!("not compared: {e}")),
    }
    drift.elapsed_ms = began.elapsed().as_millis() as u64;
    drift
}
