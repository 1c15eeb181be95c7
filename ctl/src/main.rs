//! `syncctl`: talk to a running syncd over its control socket.
//!
//! One handler per command, named after it. Exit status: 0 success; 1 error (daemon unreachable,
//! request refused); `wait-idle` 3 = idle with failed paths, 4 = timed out.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use syncd_proto::json::{FailedView, IdleView, LogEventView, Outcome};
use syncd_proto::{
    decode_payload, encode_frame, frame_len, ByteBuf, ErrorKind, IdleOutcome, LogKind, Request,
    Response, RootState, StatusReport, SyncProgress, TargetStatus, HEADER_LEN, MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME, PROTOCOL_VERSION,
};

/// Control a running syncd.
#[derive(Parser, Debug)]
#[command(name = "syncctl", version, about)]
struct Cli {
    /// Control socket [default: /run/syncd/syncd.sock for root]
    #[arg(long, short = 's', env = "SYNCD_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// State and counters of every root and target, and the progress of running full syncs.
    Status {
        /// Show it again every SECONDS (default 1) until interrupted; on a terminal the screen
        /// is redrawn.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1",
              value_parser = interval)]
        watch: Option<f64>,
    },
    /// Stop pushing to TARGET (or to all); changes keep being journaled.
    Pause { target: Option<String> },
    /// Resume pushing to TARGET (or to all).
    Resume { target: Option<String> },
    /// Full rsync of every root, or of the directory PATH, to one target or all.
    Resync {
        #[arg(long)]
        target: Option<String>,
        path: Option<PathBuf>,
    },
    /// Queue parked (failed) paths again.
    RetryFailed {
        #[arg(long)]
        target: Option<String>,
    },
    /// List parked (failed) paths and why.
    Failed {
        #[arg(long)]
        target: Option<String>,
        /// Most paths to list (at most 10,000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Wait until nothing is pending: exit 0 idle, 3 idle with failed paths, 4 timed out.
    WaitIdle {
        /// Wait for this target only.
        #[arg(long)]
        target: Option<String>,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Re-read the configuration file.
    Reload,
    /// Stop the daemon.
    Stop,
    /// The recent delivered and failed batches; with --follow, then new ones as they happen.
    Log {
        /// Keep printing new events until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

struct Conn {
    stream: UnixStream,
}

impl Conn {
    fn open(path: &Path) -> anyhow::Result<Conn> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => "permission denied: run as root, as syncd's user, or as a member of its socket_group",
                _ => "is it running?",
            };
            anyhow::anyhow!("cannot reach syncd at {}: {hint} ({e})", path.display())
        })?;
        let mut c = Conn { stream };
        match c.call(&Request::Hello {
            protocol: PROTOCOL_VERSION,
        })? {
            Response::Hello { .. } => Ok(c),
            Response::Error { message, .. } => bail!("{message}"),
            other => bail!("unexpected answer to hello: {other:?}"),
        }
    }

    fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        let frame = encode_frame(req, MAX_REQUEST_FRAME)?;
        if let Err(e) = self.stream.write_all(&frame) {
            // The daemon may have answered and closed first (a refusal): read that answer.
            if let Ok(resp) = self.read_response() {
                return Ok(resp);
            }
            return Err(e).context("sending the request");
        }
        self.read_response()
    }

    fn read_response(&mut self) -> anyhow::Result<Response> {
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .context("syncd closed the connection")?;
        let len = frame_len(header, MAX_RESPONSE_FRAME)?;
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .context("reading the answer")?;
        Ok(decode_payload(&payload, MAX_RESPONSE_FRAME)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("syncctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "syncctl",
                &mut std::io::stdout(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(syncd_proto::default_socket_path);
    let mut conn = Conn::open(&socket)?;
    match cli.command {
        Command::Status { watch } => status(&mut conn, &socket, cli.json, watch),
        Command::Pause { target } => simple(&mut conn, Request::Pause { target }, cli.json),
        Command::Resume { target } => simple(&mut conn, Request::Resume { target }, cli.json),
        Command::Resync { target, path } => resync(&mut conn, target, path, cli.json),
        Command::RetryFailed { target } => {
            simple(&mut conn, Request::RetryFailed { target }, cli.json)
        }
        Command::Failed { target, limit } => failed(&mut conn, target, limit, cli.json),
        Command::WaitIdle { target, timeout } => wait_idle(&mut conn, target, timeout, cli.json),
        Command::Reload => simple(&mut conn, Request::Reload, cli.json),
        Command::Stop => simple(&mut conn, Request::Shutdown, cli.json),
        Command::Log { follow } => log(&mut conn, follow, cli.json),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

/// One line per event: text, or a JSON object with `--json`.
fn log(conn: &mut Conn, follow: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let frame = encode_frame(&Request::Log { follow }, MAX_REQUEST_FRAME)?;
    conn.stream
        .write_all(&frame)
        .context("sending the request")?;
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
        let paths: Vec<String> = ev.sample.iter().map(|p| lossy(p)).collect();
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

/// One JSON document on a line of its own.
fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(v).expect("a view of plain data serializes")
    );
}

fn refused(kind: ErrorKind, message: String) -> anyhow::Error {
    match kind {
        ErrorKind::Denied | ErrorKind::ProtocolMismatch => anyhow::anyhow!("{message}"),
        _ => anyhow::anyhow!("syncd refused: {message}"),
    }
}

fn simple(conn: &mut Conn, req: Request, as_json: bool) -> anyhow::Result<ExitCode> {
    match conn.call(&req)? {
        Response::Done { message } => {
            if as_json {
                print_json(&Outcome::done(&message));
            } else {
                println!("{message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { kind, message } => Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

fn resync(
    conn: &mut Conn,
    target: Option<String>,
    path: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let path = match path {
        Some(p) => {
            let abs =
                std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))?;
            Some(ByteBuf::from(abs.as_os_str().as_bytes().to_vec()))
        }
        None => None,
    };
    simple(conn, Request::Resync { target, path }, as_json)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `--watch` interval: seconds, at least 0.05.
fn interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.05 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds of 0.05 or more")),
    }
}

fn fetch_status(conn: &mut Conn) -> anyhow::Result<StatusReport> {
    match conn.call(&Request::Status)? {
        Response::Status(s) => Ok(s),
        Response::Error { kind, message } => Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Once, or with `watch` every that many seconds until interrupted: on a terminal the screen
/// is redrawn, otherwise each snapshot follows the last (one JSON object per line with --json).
fn status(
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

/// What a target is doing beyond its row: a running full sync, the last error.
fn target_details(t: &TargetStatus, bar: bool) -> String {
    let mut lines = Vec::new();
    if let Some(p) = &t.full_sync {
        lines.push(progress_lines(p, bar));
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

/// Two lines on a running full sync: how much is checked (of the total, once the daemon has
/// counted it), on a terminal with a bar; then what was sent and deleted.
fn progress_lines(p: &SyncProgress, bar: bool) -> String {
    let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
    let what = if p.path.is_empty() {
        "the root".to_string()
    } else {
        lossy(&p.path).escape_debug().to_string()
    };
    let mut line = format!("full sync of {what}: ");
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

fn failed(
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
        if list.entries.is_empty() {
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
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_idle(
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
        Response::Error { kind, message } => Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncd_proto::TreeSize;

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
            progress_lines(&p, true),
            "full sync of photos/2026: [#########...........] 45%, 450 of 1000 entries \
             (3.0 MiB of 10.0 MiB) checked\n  10 sent (1.5 KiB), 2 deleted, 3.2s, \
             2 more directories queued"
        );
        assert_eq!(
            progress_lines(&p, false),
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
            progress_lines(&p, true),
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
        let line = progress_lines(&p, true);
        assert!(line.contains("[###################.] 99%"), "{line}");
    }
}
