//! `syncctl`: talk to a running syncd over its control socket.
//!
//! `conn` opens the socket and frames requests; `cmd/` has one handler per command, named after
//! it (the daemon's `control/` has one file per request). Exit status: 0 success; 1 error
//! (daemon unreachable, request refused); `wait-idle` 3 = idle with failed paths, 4 = timed out;
//! `verify` 1 = drift found, 2 = a target could not be compared.

mod cmd;
mod conn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use conn::Conn;

/// Control a running syncd.
#[derive(Parser, Debug)]
#[command(name = "syncctl", version, about)]
pub struct Cli {
    /// Control socket [default: ./syncd-demo/syncd.sock when a demo answers there, else
    /// /run/syncd/syncd.sock for root]
    #[arg(long, short = 's', env = "SYNCD_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// State and counters of every root and target, and the progress of running full syncs.
    Status {
        /// Show it again every SECONDS (default 1) until interrupted; on a terminal the screen
        /// is redrawn.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1",
              value_parser = interval)]
        watch: Option<f64>,
    },
    /// Stop pushing to TARGET (or to all); changes keep being journaled.
    Pause { target: Option<String> },
    /// Resume pushing to TARGET (or to all).
    Resume { target: Option<String> },
    /// Full rsync of every root, or of the directory PATH, to one target or all.
    Resync {
        #[arg(long)]
        target: Option<String>,
        path: Option<PathBuf>,
    },
    /// Queue parked (failed) paths again.
    RetryFailed {
        #[arg(long)]
        target: Option<String>,
    },
    /// Push the deletions delete_guard holds for TARGET (or for all): check the source first; a
    /// path deleted by mistake can be restored from the target before this.
    ReleaseDeletes { target: Option<String> },
    /// List parked (failed) paths and why, then paths failing but still retried, then the
    /// deletions delete_guard holds, then the paths found stuck (a bug of syncd's; each was
    /// pushed again).
    Failed {
        #[arg(long)]
        target: Option<String>,
        /// Most paths to list (at most 10,000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Wait until nothing is pending: exit 0 idle, 3 idle with failed paths, 4 timed out, 5
    /// nothing else pending but deletions held (see release-deletes).
    WaitIdle {
        /// Wait for this target only.
        #[arg(long)]
        target: Option<String>,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Compare the targets with the source, changing nothing: list each path that is missing,
    /// extra or differs (content, size, time, attributes). Exit 0 in sync, 1 drift found, 2 a
    /// target could not be compared. `resync` repairs.
    Verify {
        #[arg(long)]
        target: Option<String>,
        /// Compare content (rsync --checksum: reads every file at both sides), not size and
        /// modification time.
        #[arg(long)]
        checksum: bool,
        /// Only this directory (inside a root).
        path: Option<PathBuf>,
    },
    /// The versions each target keeps of PATH (a target's `versions`), oldest first, and where
    /// they are at the target. To restore one, copy it back into the source.
    Versions {
        #[arg(long)]
        target: Option<String>,
        path: PathBuf,
    },
    /// Re-read the configuration file.
    Reload,
    /// Stop the daemon.
    Stop,
    /// The recent delivered and failed batches; with --follow, then new ones as they happen.
    Log {
        /// Keep printing new events until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("syncctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    let open = || Conn::open(&socket);
    match cli.command {
        Command::Completions { shell } => cmd::completions(shell),
        Command::Man => cmd::man(),
        Command::Status { watch } => cmd::status(&mut open()?, &socket, json, watch),
        Command::Pause { target } => cmd::pause(&mut open()?, target, json),
        Command::Resume { target } => cmd::resume(&mut open()?, target, json),
        Command::Resync { target, path } => cmd::resync(&mut open()?, target, path, json),
        Command::RetryFailed { target } => cmd::retry_failed(&mut open()?, target, json),
        Command::ReleaseDeletes { target } => cmd::release_deletes(&mut open()?, target, json),
        Command::Failed { target, limit } => cmd::failed(&mut open()?, target, limit, json),
        Command::WaitIdle { target, timeout } => {
            cmd::wait_idle(&mut open()?, target, timeout, json)
        }
        Command::Verify {
            target,
            checksum,
            path,
        } => cmd::verify(&mut open()?, target, path, checksum, json),
        Command::Versions { target, path } => cmd::versions(&mut open()?, target, path, json),
        Command::Reload => cmd::reload(&mut open()?, json),
        Command::Stop => cmd::stop(&mut open()?, json),
        Command::Log { follow } => cmd::log(&mut open()?, follow, json),
    }
}

/// With no `--socket`: the demo's socket when syncctl runs where the demo runs (there, and a
/// daemon answers on it: a socket left by a killed demo is passed over), else the system's.
fn default_socket() -> PathBuf {
    pick_socket(
        std::path::Path::new(syncd_proto::DEMO_SOCKET),
        syncd_proto::default_socket_path(),
    )
}

/// `demo` when a daemon answers there, else `system`.
fn pick_socket(demo: &std::path::Path, system: PathBuf) -> PathBuf {
    match std::os::unix::net::UnixStream::connect(demo) {
        Ok(_) => demo.to_path_buf(),
        Err(_) => system,
    }
}

/// A `--watch` interval: seconds, at least 0.05.
fn interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.05 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds of 0.05 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_socket_is_taken_only_while_a_daemon_answers_there() {
        let d = tempfile::tempdir().unwrap();
        let (demo, system) = (d.path().join("demo.sock"), d.path().join("system.sock"));
        assert_eq!(pick_socket(&demo, system.clone()), system, "no demo");
        let listening = std::os::unix::net::UnixListener::bind(&demo).unwrap();
        assert_eq!(pick_socket(&demo, system.clone()), demo, "a demo answers");
        // A killed demo leaves its socket file: nobody answers there.
        drop(listening);
        assert!(demo.exists());
        assert_eq!(pick_socket(&demo, system.clone()), system, "a stale socket");
    }
}
