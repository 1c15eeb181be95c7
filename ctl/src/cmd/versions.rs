//! `syncctl versions [--target T] PATH`: the versions each target keeps of PATH (its
//! `versions` directory), oldest first, and where they are at the target.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::VersionsView;
use syncd_proto::{Request, Response};

use super::print_json;
use crate::conn::{refused, Conn};

/// PATH is made absolute here (the daemon does not know the caller's working directory).
pub fn versions(
    conn: &mut Conn,
    target: Option<String>,
    path: PathBuf,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let path = super::absolute(Some(path))?.expect("a path was given");
    let list = match conn.call(&Request::Versions { target, path })? {
        Response::Versions(l) => l,
        Response::Error { kind, message } => return Err(refused(kind, message)),
        other => bail!("unexpected answer: {other:?}"),
    };
    let view = VersionsView::of(&list);
    if as_json {
        print_json(&view);
        return Ok(ExitCode::SUCCESS);
    }
    for t in &view.targets {
        match (t.dir, t.error) {
            (None, _) => println!(
                "{}\tkeeps no versions (set versions in its [[sync.target]])",
                t.target
            ),
            (Some(_), Some(e)) => println!("{}\tcannot be asked: {e}", t.target),
            (Some(_), None) if t.versions.is_empty() => {
                println!("{}\tno versions of {}", t.target, view.path)
            }
            (Some(_), None) => {
                for v in &t.versions {
                    // Names are escaped for humans only; never feed this output back as paths.
                    println!("{}\t{}\t{} B", t.target, v.at.escape_debug(), v.size);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
