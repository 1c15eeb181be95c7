//! `syncctl pause [TARGET]` and `resume [TARGET]`: the switch each worker watches.

use syncd_proto::Response;

use crate::engine::EngineView;

pub(super) fn set_paused(engine: &EngineView, target: Option<&str>, paused: bool) -> Response {
    let ts = match engine.select(target) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let names: Vec<String> = ts.iter().map(|t| t.id.clone()).collect();
    for t in ts {
        t.paused.send_replace(paused);
        t.wake.notify_one();
    }
    Response::Done {
        message: format!(
            "{} {}",
            if paused { "paused" } else { "resumed" },
            names.join(", ")
        ),
    }
}
