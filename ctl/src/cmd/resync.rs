//! `syncctl resync [--target T] [PATH]`: a full rsync of every root, or of one directory.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use syncd_proto::{ByteBuf, Request};

use crate::conn::Conn;

/// PATH is made absolute here (the daemon does not know the caller's working directory).
pub fn resync(
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
    super::done(conn, Request::Resync { target, path }, as_json)
}
