//! `syncctl status [--watch [SECONDS]]`: every root and target, as a table (or the JSON of
//! `/status`), once or redrawn until interrupted.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::{
    RenameMode, Request, Response, RootState, StatusReport, SyncProgress, TargetStatus,
};

use super::lossy;
use crate::conn::{refused, Conn};

fn fetch_status(conn: &mut Conn) -> anyhow::Result<StatusReport> {
    match conn.call(&Request::Status)? {
        Response::Status(s) => Ok(s),
        Response::Error { kind, message } => Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Once, or with `watch` every that many seconds until interrupted: on a terminal the screen
/// is redrawn, otherwise each snapshot follows the last (one JSON object per line with --json).
pub fn status(
    conn: &mut Conn,
    socket: &Path,
    as_json: bool,
    watch: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let show = |s: &StatusReport| {
        if as_json {
            syncd_proto::status_json(s) + "\n"
        } else {
            render_status(s, tty)
        }
    };
    let Some(every) = watch else {
        print!("{}", show(&fetch_status(conn)?));
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = std::io::stdout().lock();
    loop {
        // A connection the daemon dropped (one silent for 30 s is) is opened again once.
        let s = match fetch_status(conn) {
            Ok(s) => s,
            Err(_) => {
                *conn = Conn::open(socket)?;
                fetch_status(conn)?
            }
        };
        let text = show(&s);
        let written = if tty && !as_json {
            // Home, clear the screen, draw.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else if as_json {
            write!(out, "{text}")
        } else {
            writeln!(out, "{text}")
        };
        // A closed pipe (`| head`) ends the watch.
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(every));
    }
}

/// The human status: a table of targets per root, then under the table what a target is doing
/// or why it fails: a running full sync's progress (with a bar when `bar`), the last error.
fn render_status(s: &StatusReport, bar: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        o,
        "syncd {} (pid {}), up {}s",
        s.version,
        s.pid,
        s.uptime_ms / 1000
    );
    for r in &s.roots {
        let state = match &r.state {
            RootState::Watching => format!("watching ({} directories)", count(r.watches)),
            RootState::ScheduledResync { reason } => format!("scheduled resyncs: {reason}"),
            RootState::Unavailable { reason } => format!("UNAVAILABLE: {reason}"),
        };
        let _ = writeln!(o, "\n{}  {}  {}", r.name, lossy(&r.source), state);
        for line in target_table(&r.targets).lines() {
            let _ = writeln!(o, " {}", line.trim_end());
        }
        for t in &r.targets {
            let details = target_details(t, bar);
            if !details.is_empty() {
                let _ = writeln!(o, "  {}:", t.name);
                for line in details.lines() {
                    let _ = writeln!(o, "    {line}");
                }
            }
        }
    }
    o
}

/// A count with thousands separators.
fn count(n: u64) -> String {
    use num_format::{Locale, ToFormattedString};
    n.to_formatted_string(&Locale::en)
}

/// One row per target: names of any length, counts right-aligned with thousands separators.
fn target_table(targets: &[TargetStatus]) -> String {
    use comfy_table::{presets::NOTHING, CellAlignment, Table};
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header([
        "target",
        "state",
        "pending",
        "in-flight",
        "failed",
        "delivered",
        "oldest",
        "dest",
    ]);
    for t in targets {
        let oldest = t
            .oldest_pending_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        table.add_row([
            t.name.clone(),
            t.state.as_str().to_string(),
            count(t.pending),
            count(t.in_flight),
            count(t.failed),
            count(t.delivered),
            oldest,
            t.dest.clone(),
        ]);
    }
    for c in 2..=6 {
        if let Some(col) = table.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

/// What a target is doing beyond its row: deletions held, a running full sync or verify, the
/// last error.
fn target_details(t: &TargetStatus, bar: bool) -> String {
    let mut lines = Vec::new();
    if t.deletes_held > 0 {
        lines.push(format!(
            "deletes held: {} (delete_guard); check the source, then syncctl release-deletes {}",
            count(t.deletes_held),
            t.name
        ));
    }
    if t.stuck > 0 {
        lines.push(format!(
            "stuck: {} path(s) found with nothing running to deliver them, a bug of syncd's, each pushed again (see syncctl failed)",
            count(t.stuck)
        ));
    }
    if let Some(p) = &t.full_sync {
        lines.push(progress_lines(p, bar, Run::FullSync));
    }
    if let Some(p) = &t.verify {
        lines.push(progress_lines(p, bar, Run::Verify));
    }
    match &t.renames {
        RenameMode::Moves => lines.push("renames: moved (--link-dest links here)".into()),
        RenameMode::Plain(why) => lines.push(format!("renames: plain pushes ({why})")),
        RenameMode::Unprobed => {}
    }
    if let Some(e) = &t.last_error {
        let retry = t
            .next_retry_ms
            .map(|ms| format!(" (next try in {:.1}s)", ms as f64 / 1000.0))
            .unwrap_or_default();
        lines.push(format!("last error: {e}{retry}"));
    }
    lines.join("\n")
}

/// What a progress is of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    FullSync,
    Verify,
}

/// Two lines on a running full sync (or verify): how much is checked (of the total, once the
/// daemon has counted it), on a terminal with a bar; then what was sent and deleted (or found to
/// differ).
fn progress_lines(p: &SyncProgress, bar: bool, run: Run) -> String {
    let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
    let what = if p.path.is_empty() {
        "the root".to_string()
    } else {
        lossy(&p.path).escape_debug().to_string()
    };
    let mut line = match run {
        Run::FullSync => format!("full sync of {what}: "),
        Run::Verify => format!("verify of {what}: "),
    };
    let checked = match (p.total, p.fraction()) {
        (Some(total), Some(f)) => {
            let pct = (f * 100.0).floor();
            if bar {
                const WIDTH: usize = 20;
                let done = (f * WIDTH as f64) as usize;
                line += &format!("[{}{}] ", "#".repeat(done), ".".repeat(WIDTH - done));
            }
            line += &format!("{pct:.0}%, ");
            format!(
                "{} of {} entries ({} of {}) checked",
                p.checked,
                total.entries,
                size(p.checked_bytes),
                size(total.bytes)
            )
        }
        _ => format!(
            "{} entries ({}) checked, still counting the total",
            p.checked,
            size(p.checked_bytes)
        ),
    };
    if run == Run::Verify {
        let secs = p.elapsed_ms as f64 / 1000.0;
        return line + &format!("{checked}\n  {} differ so far, {secs:.1}s", p.files);
    }
    line += &format!(
        "{checked}\n  {} sent ({}), {} deleted, {:.1}s",
        p.files.saturating_sub(p.deleted),
        size(p.bytes_sent),
        p.deleted,
        p.elapsed_ms as f64 / 1000.0
    );
    if p.queued > 0 {
        line += &format!(
            ", {} more director{} queued",
            p.queued,
            if p.queued == 1 { "y" } else { "ies" }
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncd_proto::{ByteBuf, TreeSize};

    fn progress(total: Option<TreeSize>) -> SyncProgress {
        SyncProgress {
            elapsed_ms: 3_250,
            files: 12,
            path: ByteBuf::from(b"photos/2026".to_vec()),
            queued: 2,
            checked: 450,
            checked_bytes: 3 << 20,
            deleted: 2,
            bytes_sent: 1536,
            total,
        }
    }

    fn target(name: &str, pending: u64) -> TargetStatus {
        TargetStatus {
            name: name.into(),
            dest: "u@127.0.0.1::m".into(),
            state: syncd_proto::TargetState::Running,
            pending,
            in_flight: 0,
            failed: 0,
            delivered: 1_234_567,
            oldest_pending_ms: Some(1500),
            last_error: None,
            next_retry_ms: None,
            full_sync: None,
            verify: None,
            renames: RenameMode::Unprobed,
            deletes_held: 0,
            stuck: 0,
        }
    }

    #[test]
    fn the_status_table_fits_long_names_and_separates_thousands() {
        // 64 characters, the longest name allowed.
        let long = &format!("a-very-long-target-name-{}", "x".repeat(40));
        assert_eq!(long.len(), 64);
        let table = target_table(&[target("b1", 7), target(long, 12_345)]);
        let lines: Vec<&str> = table.lines().map(str::trim_end).collect();
        assert_eq!(lines.len(), 3, "{table}");
        // Every column starts at the same place on every line, however long the name.
        let col = |l: &str, what: &str| l.find(what).unwrap_or_else(|| panic!("{what} in {l}"));
        let dest = col(lines[0], " dest") + 1;
        assert_eq!(col(lines[1], "u@127.0.0.1::m"), dest, "{table}");
        assert_eq!(col(lines[2], "u@127.0.0.1::m"), dest, "{table}");
        assert!(col(lines[2], long) < col(lines[2], "running"), "{table}");
        // Counts are right-aligned, with thousands separators.
        assert!(lines[2].contains("12,345"), "{table}");
        assert!(lines[1].contains("1,234,567"), "{table}");
        // Right-aligned: the pending counts end where their header ends.
        let state = col(lines[0], "state");
        let end = |l: &str, what: &str| state + l[state..].find(what).unwrap() + what.len();
        let pending = end(lines[0], "pending");
        assert_eq!(end(lines[1], "7"), pending, "{table}");
        assert_eq!(end(lines[2], "12,345"), pending, "{table}");
    }

    #[test]
    fn what_a_target_is_doing_goes_under_the_table() {
        let mut t = target("b1", 1);
        assert_eq!(target_details(&t, false), "");
        t.last_error = Some("rsync exit 10: connection failed".into());
        t.next_retry_ms = Some(2500);
        assert_eq!(
            target_details(&t, false),
            "last error: rsync exit 10: connection failed (next try in 2.5s)"
        );
        t.deletes_held = 12_000;
        assert!(target_details(&t, false).starts_with(
            "deletes held: 12,000 (delete_guard); check the source, then syncctl release-deletes b1\n"
        ));
        t.deletes_held = 0;
        let s = StatusReport {
            version: "0".into(),
            pid: 1,
            uptime_ms: 0,
            roots: vec![syncd_proto::RootStatus {
                name: "data".into(),
                source: ByteBuf::from(b"/data".to_vec()),
                state: RootState::Watching,
                watches: 12_000,
                targets: vec![t],
            }],
        };
        let text = render_status(&s, false);
        assert!(text.contains("watching (12,000 directories)"), "{text}");
        assert!(
            text.contains("\n  b1:\n    last error: rsync exit 10"),
            "{text}"
        );
    }

    #[test]
    fn a_counted_full_sync_shows_a_bar_on_a_terminal_and_the_percentage_everywhere() {
        let p = progress(Some(TreeSize {
            entries: 1000,
            bytes: 10 << 20,
        }));
        assert_eq!(
            progress_lines(&p, true, Run::FullSync),
            "full sync of photos/2026: [#########...........] 45%, 450 of 1000 entries \
             (3.0 MiB of 10.0 MiB) checked\n  10 sent (1.5 KiB), 2 deleted, 3.2s, \
             2 more directories queued"
        );
        assert_eq!(
            progress_lines(&p, false, Run::FullSync),
            "full sync of photos/2026: 45%, 450 of 1000 entries (3.0 MiB of 10.0 MiB) checked\n  \
             10 sent (1.5 KiB), 2 deleted, 3.2s, 2 more directories queued"
        );
    }

    #[test]
    fn a_full_sync_not_yet_counted_shows_what_was_checked_and_no_bar() {
        let mut p = progress(None);
        p.path = ByteBuf::new();
        p.queued = 0;
        assert_eq!(
            progress_lines(&p, true, Run::FullSync),
            "full sync of the root: 450 entries (3.0 MiB) checked, still counting the total\n  \
             10 sent (1.5 KiB), 2 deleted, 3.2s"
        );
    }

    #[test]
    fn the_bar_never_shows_done_while_the_sync_runs() {
        let mut p = progress(Some(TreeSize {
            entries: 100,
            bytes: 0,
        }));
        p.checked = 150;
        let line = progress_lines(&p, true, Run::FullSync);
        assert!(line.contains("[###################.] 99%"), "{line}");
    }
}
