//! One handler per `syncctl` command, one file each, mirroring the daemon's `control/` (one
//! file per request). Each takes the open connection and what the command line gave, prints the
//! answer (text, or one JSON document per line with `--json`) and returns the exit status.

mod completions;
mod failed;
mod log;
mod pause;
mod release_deletes;
mod reload;
mod resync;
mod retry_failed;
mod status;
mod stop;
mod verify;
mod versions;
mod wait_idle;

pub use completions::{completions, man};
pub use failed::failed;
pub use log::log;
pub use pause::{pause, resume};
pub use release_deletes::release_deletes;
pub use reload::reload;
pub use resync::resync;
pub use retry_failed::retry_failed;
pub use status::status;
pub use stop::stop;
pub use verify::verify;
pub use versions::versions;
pub use wait_idle::wait_idle;

use std::process::ExitCode;

use anyhow::bail;
use syncd_proto::json::Outcome;
use syncd_proto::{Request, Response};

use crate::conn::{refused, Conn};

/// A request answered by `Done { message }`: print the message (or `{"ok":true,…}`).
fn done(conn: &mut Conn, req: Request, as_json: bool) -> anyhow::Result<ExitCode> {
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

/// A PATH argument made absolute here (the daemon does not know the caller's working
/// directory), as the bytes the request carries.
fn absolute(path: Option<std::path::PathBuf>) -> anyhow::Result<Option<syncd_proto::ByteBuf>> {
    use anyhow::Context;
    use std::os::unix::ffi::OsStrExt;
    let Some(p) = path else {
        return Ok(None);
    };
    let abs = std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))?;
    Ok(Some(syncd_proto::ByteBuf::from(
        abs.as_os_str().as_bytes().to_vec(),
    )))
}

/// One JSON document on a line of its own.
fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(v).expect("a view of plain data serializes")
    );
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
