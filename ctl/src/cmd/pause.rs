//! `syncctl pause [TARGET]`, `syncctl resume [TARGET]`.

use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

pub fn pause(conn: &mut Conn, target: Option<String>, as_json: bool) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::Pause { target }, as_json)
}

pub fn resume(conn: &mut Conn, target: Option<String>, as_json: bool) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::Resume { target }, as_json)
}
