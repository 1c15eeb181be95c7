//! `syncctl resync [--target T] [PATH]`: a full rsync of every root, or of one directory.

use std::path::PathBuf;
use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

/// PATH is made absolute here (the daemon does not know the caller's working directory).
pub fn resync(
    conn: &mut Conn,
    target: Option<String>,
    path: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let path = super::absolute(path)?;
    super::done(conn, Request::Resync { target, path }, as_json)
}
