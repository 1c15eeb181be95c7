//! `syncctl pause [TARGET]` and `resume [TARGET]`: told to each worker, answered once each
//! shows it (so `status` right after says so).

use std::time::Duration;

use syncd_proto::{Response, TargetState};

use crate::dispatch::inbox::Command;
use crate::engine::EngineView;

/// How long a worker may take to show a pause or resume (its step is short; a worker that
/// stopped has nothing to show).
const SHOWN_WITHIN: Duration = Duration::from_secs(5);

pub(super) async fn set_paused(
    engine: &EngineView,
    target: Option<&str>,
    paused: bool,
) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let names: Vec<String> = ts.iter().map(|t| t.id.clone()).collect();
    for t in &ts {
        t.inbox.send(if paused {
            Command::Pause
        } else {
            Command::Resume
        });
    }
    for t in ts {
        let mut view = t.view.clone();
        let shown = view.wait_for(|v| (v.state == TargetState::Paused) == paused);
        // Timed out or stopped: told all the same; `status` shows where it stands.
        let _ = tokio::time::timeout(SHOWN_WITHIN, shown).await;
    }
    Response::Done {
        message: format!(
            "{} {}",
            if paused { "paused" } else { "resumed" },
            names.join(", ")
        ),
    }
}
