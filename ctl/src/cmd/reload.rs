//! `syncctl reload`: re-read the configuration file.

use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

pub fn reload(conn: &mut Conn, as_json: bool) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::Reload, as_json)
}
