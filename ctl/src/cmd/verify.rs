//! `syncctl verify [--target T] [--checksum] [PATH]`: how each target differs from the source;
//! changes nothing. Exit 0 in sync, 1 drift found, 2 a target could not be compared.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::VerifyView;
use syncd_proto::{Request, Response, TargetDrift, VerifyReport};

use super::{lossy, print_json};
use crate::conn::{refused, Conn};

/// PATH is made absolute here (the daemon does not know the caller's working directory).
pub fn verify(
    conn: &mut Conn,
    target: Option<String>,
    path: Option<PathBuf>,
    checksum: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let path = super::absolute(path)?;
    let report = match conn.call(&Request::Verify {
        target,
        path,
        checksum,
    })? {
        Response::Verify(r) => r,
        Response::Error { kind, message } => return Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    };
    if as_json {
        print_json(&VerifyView::of(&report));
    } else {
        report.targets.iter().for_each(print_target);
    }
    Ok(exit_code(&report))
}

fn exit_code(report: &VerifyReport) -> ExitCode {
    if report.drift() {
        ExitCode::from(1)
    } else if report.errors() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_target(t: &TargetDrift) {
    let dir = if t.dir.is_empty() {
        String::new()
    } else {
        format!(" ({})", lossy(&t.dir).escape_debug())
    };
    let secs = t.elapsed_ms as f64 / 1000.0;
    let n = t.paths.len() as u64 + t.more;
    match (&t.error, n) {
        (Some(e), 0) => println!("{}{dir}: {e}", t.target),
        (_, 0) => println!("{}{dir}: in sync ({secs:.2} s)", t.target),
        (_, n) => println!("{}{dir}: {n} path(s) differ ({secs:.2} s)", t.target),
    }
    for p in &t.paths {
        // As rsync names them (unprintable bytes as \#ooo); for humans only.
        println!("  {:<10} {}", p.kind.as_str(), lossy(&p.path));
    }
    if t.more > 0 {
        println!("  … and {} more", t.more);
    }
    if let (Some(e), 1..) = (&t.error, n) {
        println!("  {e}");
    }
}
