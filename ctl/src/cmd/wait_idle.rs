//! `syncctl wait-idle [--target T] [--timeout S]`: exit 0 idle, 3 idle with failed paths,
//! 4 timed out, 5 deletions held by `delete_guard` (nothing else pending).

use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::IdleView;
use syncd_proto::{IdleOutcome, Request, Response};

use super::print_json;
use crate::conn::{refused, Conn};

pub fn wait_idle(
    conn: &mut Conn,
    target: Option<String>,
    timeout: Option<f64>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if timeout.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
        bail!("--timeout must be a number of seconds, 0 or more");
    }
    let timeout_ms = timeout.map(|t| (t * 1000.0) as u64);
    match conn.call(&Request::WaitIdle { target, timeout_ms })? {
        Response::WaitIdle(IdleOutcome::Idle { failed: 0 }) => {
            if as_json {
                print_json(&IdleView::of(&IdleOutcome::Idle { failed: 0 }));
            } else {
                println!("idle");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::WaitIdle(IdleOutcome::Idle { failed }) => {
            if as_json {
                print_json(&IdleView::of(&IdleOutcome::Idle { failed }));
            } else {
                println!("idle, with {failed} failed path(s): see syncctl failed");
            }
            Ok(ExitCode::from(3))
        }
        Response::WaitIdle(IdleOutcome::TimedOut { pending }) => {
            if as_json {
                print_json(&IdleView::of(&IdleOutcome::TimedOut { pending }));
            } else {
                println!("timed out with {pending} path(s) pending");
            }
            Ok(ExitCode::from(4))
        }
        Response::WaitIdle(o @ IdleOutcome::DeletesHeld { held, .. }) => {
            if as_json {
                print_json(&IdleView::of(&o));
            } else {
                println!("not idle: {held} deletion(s) held by delete_guard; check the source, then syncctl release-deletes");
            }
            Ok(ExitCode::from(5))
        }
        Response::Error { kind, message } => Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}
