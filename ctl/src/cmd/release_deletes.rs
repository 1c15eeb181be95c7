//! `syncctl release-deletes [TARGET]`: push the deletions `delete_guard` holds.

use std::process::ExitCode;

use syncd_proto::Request;

use crate::conn::Conn;

pub fn release_deletes(
    conn: &mut Conn,
    target: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    super::done(conn, Request::ReleaseDeletes { target }, as_json)
}
