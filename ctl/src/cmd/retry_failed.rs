//! `syncctl retry-failed [--target T]`: queue parked paths again.

use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

pub fn retry_failed(
    conn: &mut Conn,
    target: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::RetryFailed { target }, as_json)
}
