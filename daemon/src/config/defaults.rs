//! Every default of the configuration, in one place (the example config and syncd.toml(5) say
//! the same; `manual.rs` checks that every key is documented there).

use std::path::PathBuf;

/// The config file used when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/syncd/syncd.toml";

/// The embedded default: watch `./syncd-demo/source`, replicate into `./syncd-demo/target`.
pub const DEMO_CONFIG: &str = r#"
state_dir = "syncd-demo/state"
socket    = "syncd-demo/syncd.sock"

[[sync]]
name     = "demo"
source   = "syncd-demo/source"
delay_ms = 50

[[sync.target]]
name = "local"
dest = "syncd-demo/target"
"#;

/// `keep_versions_days`: how long a target keeps the versions of `versions` (0: for ever).
pub const KEEP_VERSIONS_DAYS: u64 = 30;

/// `grace_period_s`: how long running rsyncs may go on at shutdown.
pub const GRACE_PERIOD_S: u64 = 10;
/// `startup_resync`.
pub const STARTUP_RESYNC: bool = true;

/// `[[sync]] delay_ms`: the window of a create that may be followed by writes.
pub const DELAY_MS: u64 = 100;
/// `[[sync]] modify_delay_ms`: how long a file written without being closed waits after its
/// last write.
pub const MODIFY_DELAY_MS: u64 = 1000;
/// A file whose writes keep coming waits at most this many `modify_delay`s from its first write.
pub const WRITE_WAIT_FACTOR: u32 = 10;
/// `[[sync]] full_resync_interval_s`: full resyncs of a root that cannot be fully watched.
pub const FULL_RESYNC_INTERVAL_S: u64 = 300;

/// `[[sync]] delete_guard_window_s`: the window the deletions a target took are counted in.
pub const DELETE_GUARD_WINDOW_S: u64 = 60;

/// `[[sync.target]] workers`: rsyncs at once.
pub const WORKERS: usize = 4;
/// The most `workers` allowed.
pub const MAX_WORKERS: usize = 16;
/// `max_attempts` of one path before it is parked.
pub const MAX_ATTEMPTS: u32 = 10;
/// `retry_initial_ms`, `retry_max_ms`: the backoff's first step and ceiling.
pub const RETRY_INITIAL_MS: u64 = 1000;
pub const RETRY_MAX_MS: u64 = 300_000;
/// `retry_failed_interval_s`: parked paths are tried again this often.
pub const RETRY_FAILED_INTERVAL_S: u64 = 3600;
/// `timeout_s`: rsync's `--timeout` (I/O inactivity).
pub const TIMEOUT_S: u64 = 60;
/// `contimeout_s`: rsync's `--contimeout` and ssh's `ConnectTimeout`.
pub const CONTIMEOUT_S: u64 = 15;
/// `push_deadline_s`: a batch rsync running longer is killed.
pub const PUSH_DEADLINE_S: u64 = 3600;
/// `max_batch`: paths in one rsync.
pub const MAX_BATCH: usize = 10_000;
/// `hook_timeout_s`: a hook run longer is killed.
pub const HOOK_TIMEOUT_S: u64 = 60;

/// `state_dir` when not given: depends on who runs the daemon.
pub fn state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/syncd")
    } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(d).join("syncd")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".local/state/syncd")
    } else {
        PathBuf::from("/tmp").join(format!("syncd-{}", nix::unistd::geteuid()))
    }
}

/// `socket` when not given: where syncctl looks too.
pub fn socket() -> PathBuf {
    syncd_proto::default_socket_path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_listens_where_syncctl_looks_for_it() {
        let c: toml::Value = toml::from_str(DEMO_CONFIG).unwrap();
        assert_eq!(c["socket"].as_str(), Some(syncd_proto::DEMO_SOCKET));
    }
}
