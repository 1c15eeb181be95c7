//! `syncctl failed [--target T] [--limit N]`: the parked paths and why, then the paths failing
//! but still retried.

use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::FailedView;
use syncd_proto::{Request, Response};

use super::{lossy, print_json};
use crate::conn::{refused, Conn};

pub fn failed(
    conn: &mut Conn,
    target: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let list = match conn.call(&Request::ListFailed { target, limit })? {
        Response::Failed(l) => l,
        Response::Error { kind, message } => return Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    };
    if as_json {
        print_json(&FailedView::of(&list));
    } else {
        if list.entries.is_empty() && list.retrying.is_empty() {
            println!("no failed paths");
        }
        for e in &list.entries {
            // Names are escaped for humans only; never feed this output back as paths.
            println!(
                "{}\t{}\t{} attempt(s)\t{}",
                e.target,
                lossy(&e.path).escape_debug(),
                e.attempts,
                e.last_error
            );
        }
        if list.more > 0 {
            println!("… and {} more (use --limit)", list.more);
        }
        // Not parked yet: told apart by "retrying" where a parked path has its attempts.
        for e in &list.retrying {
            println!(
                "{}	{}	retrying: {} attempt(s), next in {:.1} s	{}",
                e.target,
                lossy(&e.path).escape_debug(),
                e.attempts,
                e.next_retry_ms as f64 / 1000.0,
                e.last_error
            );
        }
        if list.retrying_more > 0 {
            println!("… and {} more retrying (use --limit)", list.retrying_more);
        }
    }
    Ok(ExitCode::SUCCESS)
}
