//! `syncctl stop`: stop the daemon (as SIGTERM does).

use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

pub fn stop(conn: &mut Conn, as_json: bool) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::Shutdown, as_json)
}
