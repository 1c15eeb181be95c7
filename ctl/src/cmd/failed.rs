//! `syncctl failed [--target T] [--limit N]`: the parked paths and why, then the paths failing
//! but still retried, then the deletions `delete_guard` holds.

use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::FailedView;
use syncd_proto::{FailedList, Request, Response};

use super::{lossy, print_json};
use crate::conn::{refused, Conn};

pub fn failed(
    conn: &mut Conn,
    target: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let list = match conn.call(&Request::ListFailed { target, limit })? {
        Response::Failed(l) => *l,
        Response::Error { kind, message } => return Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    };
    if as_json {
        print_json(&FailedView::of(&list));
        return Ok(ExitCode::SUCCESS);
    }
    if list.entries.is_empty()
        && list.retrying.is_empty()
        && list.held.is_empty()
        && list.held_full.is_empty()
        && list.stuck.is_empty()
    {
        println!("no failed paths");
    }
    // Names are escaped for humans only; never feed this output back as paths.
    print_parked(&list);
    print_retrying(&list);
    print_held(&list);
    print_stuck(&list);
    Ok(ExitCode::SUCCESS)
}

/// Paths found stuck: a bug of syncd's, told with what was done about it.
fn print_stuck(list: &FailedList) {
    for e in &list.stuck {
        println!(
            "{}	{}	stuck {:.0} s ago	{}",
            e.target,
            lossy(&e.path).escape_debug(),
            e.ago_ms as f64 / 1000.0,
            e.what
        );
    }
}

fn print_parked(list: &FailedList) {
    for e in &list.entries {
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
}

/// Not parked yet: told apart by "retrying" where a parked path has its attempts.
fn print_retrying(list: &FailedList) {
    for e in &list.retrying {
        println!(
            "{}\t{}\tretrying: {} attempt(s), next in {:.1} s\t{}",
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

/// Deletions not failed but held back: "held" where the others have attempts, and the command
/// that pushes them.
fn print_held(list: &FailedList) {
    for e in &list.held {
        println!(
            "{}\t{}\theld: deletion over delete_guard\tcheck the source, then syncctl release-deletes {}",
            e.target,
            lossy(&e.path).escape_debug(),
            e.target
        );
    }
    if list.held_more > 0 {
        println!("… and {} more held (use --limit)", list.held_more);
    }
    for e in &list.held_full {
        let path = if e.path.is_empty() {
            ".".to_string()
        } else {
            lossy(&e.path)
        };
        println!(
            "{}\t{}\theld: {} deletion(s) a full sync skipped over delete_guard\tcheck the source, then syncctl release-deletes {}",
            e.target,
            path.escape_debug(),
            e.deletions,
            e.target
        );
    }
}
