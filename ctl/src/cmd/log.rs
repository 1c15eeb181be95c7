//! `syncctl log [--follow]`: the recent delivered and failed batches, then new ones.

use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::LogEventView;
use syncd_proto::{LogKind, Request, Response};

use super::{lossy, print_json};
use crate::conn::{refused, Conn};

/// One line per event: text, or a JSON object with `--json`.
pub fn log(conn: &mut Conn, follow: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    conn.send(&Request::Log { follow })?;
    loop {
        let ev = match conn.read_response() {
            Ok(Response::Event(ev)) => ev,
            Ok(Response::Done { .. }) => return Ok(ExitCode::SUCCESS),
            Ok(Response::Error { kind, message }) => return Err(refused(kind, message)),
            Ok(other) => bail!("unexpected answer: {other:?}"),
            Err(_) if follow => bail!("syncd closed the connection (it stopped?)"),
            Err(e) => return Err(e),
        };
        if as_json {
            print_json(&LogEventView::of(&ev));
            continue;
        }
        // The root itself (a full sync of the whole root) is `.`, as rsync names it.
        let paths: Vec<String> = ev
            .sample
            .iter()
            .map(|p| match p.is_empty() {
                true => ".".to_string(),
                false => lossy(p),
            })
            .collect();
        let when = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ev.time_ms),
        );
        if ev.kind == LogKind::Skipped {
            println!("{when} ({} events skipped: read too slowly)", ev.paths);
            continue;
        }
        let more = ev.paths.saturating_sub(paths.len() as u64);
        let more = if more > 0 {
            format!(", … (+{more})")
        } else {
            String::new()
        };
        let why = ev.error.map(|e| format!(": {e}")).unwrap_or_default();
        println!(
            "{when} {} {} {} path(s): {}{more}{why}",
            ev.target,
            ev.kind.as_str(),
            ev.paths,
            paths.join(", ")
        );
    }
}
