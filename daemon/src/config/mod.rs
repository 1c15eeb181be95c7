//! Configuration: the TOML file, quick mode (`--source/--target`) and the embedded demo default.
//!
//! - `raw`: the file format (serde types); `defaults`: every default; `validate`: the checks,
//!   one function per section; `dest`: destinations; `exclude`: rsync-style patterns;
//!   `manual`: syncd.toml(5), generated from the example configuration.
//!
//! Invariants: a [`Config`] only exists fully validated. Every check runs in `validate` before
//! anything is started, so a bad file never produces a half-configured daemon; every error
//! names the key, the value and what to do.

pub mod defaults;
pub mod dest;
pub mod exclude;
pub mod manual;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use defaults::{DEFAULT_CONFIG_FILE, DEMO_CONFIG};
pub use dest::{Dest, DestError};
pub use exclude::Excludes;
use raw::{RawConfig, RawSync, RawTarget};

/// A configuration error, phrased for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} = {value:?}: {problem}")]
    Invalid {
        key: String,
        value: String,
        problem: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// The optional HTTP interface (see [`crate::control::http`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// The control token, read from `token_file`; `None`: control over HTTP is off.
    pub token: Option<String>,
}

impl HttpConfig {
    /// Served beyond this host: then a token guards `/status` and `/metrics` too.
    pub fn exposed(&self) -> bool {
        !self.listen.ip().is_loopback()
    }
}

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the journal lives.
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub pidfile: PathBuf,
    /// Log file when running in the background.
    pub log_file: PathBuf,
    /// Members of this group may use the control socket.
    pub socket_group: Option<String>,
    /// How long in-flight rsyncs may run on at shutdown.
    pub grace_period: Duration,
    /// Run one full rsync per root and target at start (changes made while down).
    pub startup_resync: bool,
    pub http: Option<HttpConfig>,
    pub roots: Vec<RootConfig>,
    /// The file this came from, for `reload`.
    pub source_file: Option<PathBuf>,
    /// Its text: a reload of an unchanged file (logrotate's SIGHUP) restarts nothing.
    pub source_text: Option<String>,
}

/// One `[[sync]]` root.
#[derive(Debug, Clone)]
pub struct RootConfig {
    pub name: String,
    /// Absolute path of the watched directory.
    pub source: PathBuf,
    pub excludes: Excludes,
    /// Window for creates that may be followed by more writes.
    pub delay: Duration,
    /// Window for files written without being closed (logs): a quiet `modify_delay` after the
    /// last write, at most [`RootConfig::longest_write_wait`] from the first.
    pub modify_delay: Duration,
    /// Interval of full resyncs when the root cannot be fully watched.
    pub full_resync_interval: Duration,
    /// How many deletions a target takes before the rest are held (`delete_guard`).
    pub delete_guard: DeleteGuard,
    pub targets: Vec<TargetConfig>,
}

/// `delete_guard` and `delete_guard_window_s`: deletions a target may take within `window`
/// before the batch that would go over, and every deletion after it, are held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeleteGuard {
    pub limit: GuardLimit,
    pub window: Duration,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            limit: GuardLimit::Off,
            window: Duration::from_secs(defaults::DELETE_GUARD_WINDOW_S),
        }
    }
}

/// How many deletions `delete_guard` lets through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardLimit {
    Off,
    /// A share (0 to 1) of the root's entries, as the index counts them.
    Share(f64),
    /// A number of paths.
    Paths(u64),
}

impl RootConfig {
    /// The longest a path written without being closed waits in memory: writes that keep
    /// coming move its window on, never past this from its first event (so a file written
    /// forever is still pushed).
    pub fn longest_write_wait(&self) -> Duration {
        self.modify_delay * defaults::WRITE_WAIT_FACTOR
    }
}

/// A configured hook program (see [`crate::observe::hooks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// Retry policy of one target.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts of one path before it is parked as failed.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    /// Parked paths are moved back to pending this often.
    pub failed_interval: Duration,
}

/// One `[[sync.target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub dest: Dest,
    pub password_file: Option<PathBuf>,
    pub port: Option<u16>,
    pub rsync_args: Vec<String>,
    pub ssh_args: Vec<String>,
    pub workers: usize,
    pub compress: bool,
    pub max_delete: Option<u64>,
    /// rsync `--timeout` (I/O inactivity).
    pub timeout: Duration,
    /// rsync `--contimeout` (daemon connect).
    pub contimeout: Duration,
    /// A batch rsync running longer than this is killed.
    pub push_deadline: Duration,
    pub max_batch: usize,
    pub retry: RetryPolicy,
    /// Run after delivered batches (see [`crate::observe::hooks`]).
    pub on_batch: Option<Hook>,
    /// Run when paths are parked as failed.
    pub on_failure: Option<Hook>,
    /// The directory (relative to the target root, one name) where what a push overwrites or
    /// deletes at the target is kept, under the UTC time of the run (`--backup-dir`).
    pub versions: Option<String>,
    /// Runs' versions older than this are deleted (checked hourly); None: kept for ever.
    pub keep_versions: Option<Duration>,
}

impl Config {
    /// What is valid but most likely not meant: told by `check-config` and at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(h) = self
            .http
            .as_ref()
            .filter(|h| h.exposed() && h.token.is_none())
        {
            w.push(format!(
                "http.listen = \"{}\" is not a loopback address and no http.token_file is set: \
                 /status and /metrics show every root's and target's names, paths and rsync's \
                 errors to any host that reaches it; listen on 127.0.0.1:{} (scrape through an \
                 ssh tunnel or a reverse proxy), or set http.token_file (then every request \
                 needs the token: Authorization: Bearer TOKEN)",
                h.listen,
                h.listen.port()
            ));
        }
        for r in &self.roots {
            let names = r.targets.iter().filter_map(|t| t.versions.as_deref());
            for v in names.filter(|v| r.source.join(v).symlink_metadata().is_ok()) {
                w.push(format!(
                    "{} is not replicated: a target keeps its versions in directories named \"{v}\", \
                     and no directory of that name is pushed from the source; rename it, or pick \
                     another name for versions",
                    r.source.join(v).display()
                ));
            }
        }
        w
    }

    /// Load and validate a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg = Self::from_toml(&text, path)?;
        cfg.source_file = Some(path.to_path_buf());
        cfg.source_text = Some(text);
        Ok(cfg)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        validate::validate(raw)
    }

    /// Quick mode: one root, targets from the command line, no file.
    pub fn quick(
        source: PathBuf,
        targets: Vec<String>,
        state_dir: Option<PathBuf>,
        socket: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let raw = RawConfig {
            state_dir,
            socket,
            pidfile: None,
            log_file: None,
            socket_group: None,
            grace_period_s: None,
            startup_resync: None,
            http: None,
            sync: vec![RawSync {
                name: None,
                source,
                exclude: vec![],
                delay_ms: None,
                modify_delay_ms: None,
                full_resync_interval_s: None,
                delete_guard: None,
                delete_guard_window_s: None,
                target: targets
                    .into_iter()
                    .enumerate()
                    .map(|(i, dest)| RawTarget {
                        name: Some(format!("t{}", i + 1)),
                        dest,
                        ..Default::default()
                    })
                    .collect(),
            }],
        };
        validate::validate(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp_config(extra: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let text = format!(
            "state_dir = \"{d}/state\"\nsocket = \"{d}/s.sock\"\n[[sync]]\nsource = \"{s}\"\n[[sync.target]]\ndest = \"{d}/dst\"\n{extra}",
            d = dir.path().display(),
            s = src.display()
        );
        let r = Config::from_toml(&text, Path::new("test.toml"));
        (dir, r)
    }

    /// Issue 26: names syncd uses at the target are not a `versions` directory (the probe
    /// deleted what it held).
    #[test]
    fn versions_may_not_take_a_name_syncd_uses_at_the_target() {
        for name in [
            "syncd-rename-probe",
            ".rsync-partial",
            "syncd-probe-0123456789abcdef",
        ] {
            let (_d, c) = tmp_config(&format!("versions = \"{name}\""));
            let e = c.expect_err(name).to_string();
            assert!(e.contains("a name syncd uses at the target"), "{e}");
        }
        let (_d, c) = tmp_config("versions = \".syncd-versions\"");
        c.unwrap();
    }

    /// Issue 26: the overlap checks compare paths as resolved, not as written.
    #[test]
    fn sources_targets_and_state_that_overlap_once_resolved_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for p in ["a", "b", "elsewhere", "dst"] {
            std::fs::create_dir(dir.path().join(p)).unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link-to-a")).unwrap();
        // Paths relative to the temp dir: (state_dir, dest) of one root of a/, and the dests of
        // two roots, of a/ and b/.
        let one = |state: &str, dest: &str| {
            format!("state_dir = \"{d}/{state}\"\n[[sync]]\nsource = \"{d}/a\"\n[[sync.target]]\ndest = \"{d}/{dest}\"\n")
        };
        let two = |dest_a: &str, dest_b: &str| {
            format!(
                "state_dir = \"{d}/state\"\n[[sync]]\nsource = \"{d}/a\"\n[[sync.target]]\ndest = \"{d}/{dest_a}\"\n\
                 [[sync]]\nsource = \"{d}/b\"\n[[sync.target]]\ndest = \"{d}/{dest_b}\"\n"
            )
        };
        let cases = [
            (
                one("state", "elsewhere/../a/bk"),
                "must not overlap the source",
            ),
            (one("state", "link-to-a/bk"), "it resolves to"),
            (one("a/.state", "dst"), "inside the source"),
            (one("dst/state", "dst"), "a full sync would delete it"),
            (two("dst", "dst"), "overlaps target"),
            (two("dst", "dst/b"), "overlaps target"),
            (two("dst", "a/bk"), "overlaps the source"),
        ];
        for (text, says) in cases {
            let e = Config::from_toml(&text, Path::new("t.toml"))
                .expect_err(&text)
                .to_string();
            assert!(e.contains(says), "{text}\n{e}");
        }
        // Apart: accepted.
        Config::from_toml(&two("dst-a", "dst-b"), Path::new("t.toml")).unwrap();
    }

    #[test]
    fn http_beyond_loopback_without_a_token_is_warned_of_with_the_fix() {
        // Parsed only: nothing is bound.
        let (_d, c) = tmp_config("[http]\nlisten = \"0.0.0.0:9188\"");
        let w = c.unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("0.0.0.0:9188") && w[0].contains("listen on 127.0.0.1:9188"));
        assert!(w[0].contains("http.token_file"), "{}", w[0]);
        for quiet in ["127.0.0.1:9188", "127.0.0.2:9188", "[::1]:9188"] {
            let (_d, c) = tmp_config(&format!("[http]\nlisten = \"{quiet}\""));
            assert!(c.unwrap().warnings().is_empty(), "{quiet}");
        }
        let (d, _) = tmp_config("");
        let token = d.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let extra = format!(
            "[http]\nlisten = \"0.0.0.0:9188\"\ntoken_file = \"{}\"",
            token.display()
        );
        let (_d2, c) = tmp_config(&extra);
        let c = c.unwrap();
        assert!(c.warnings().is_empty());
        assert!(
            c.http.unwrap().exposed(),
            "the token then guards every request"
        );
    }

    #[test]
    fn versions_is_one_directory_name_and_is_excluded_from_the_source() {
        for bad in ["a/b", "", "..", "ver*", "/abs"] {
            let (_d, c) = tmp_config(&format!("versions = {bad:?}"));
            let e = c.expect_err(bad).to_string();
            assert!(
                e.contains("versions") && e.contains("one directory name"),
                "{e}"
            );
        }
        let (_d, c) = tmp_config("versions = \".syncd-versions\"");
        let c = c.unwrap();
        assert_eq!(
            c.roots[0].targets[0].versions.as_deref(),
            Some(".syncd-versions")
        );
        assert!(c.roots[0].excludes.matches(b"deep/.syncd-versions", true));
        assert!(
            c.roots[0].excludes.same_in_every_subtree(),
            "renames still move"
        );
        assert!(c.warnings().is_empty());
        let at_source = c.roots[0].source.join(".syncd-versions");
        std::fs::create_dir(&at_source).unwrap();
        let w = c.warnings();
        assert!(
            w.len() == 1 && w[0].contains(&at_source.display().to_string()),
            "{w:?}"
        );
    }

    #[test]
    fn shipped_example_config_validates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("mnt/backup")).unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = include_str!("../../../packaging/syncd.example.toml")
            .replace("\"/data\"", &format!("\"{d}/data\""))
            .replace("/mnt/backup/data", &format!("{d}/mnt/backup/data"))
            .replace("/etc/rsync.password", &pw.display().to_string())
            .replace("/var/lib/syncd", &format!("{d}/state"));
        let cfg = Config::from_toml(&text, Path::new("syncd.example.toml")).unwrap();
        assert_eq!(cfg.roots[0].targets.len(), 2);
        assert_eq!(cfg.roots[0].targets[0].retry.max_attempts, 10);
    }

    #[test]
    fn minimal_config_validates() {
        let (_d, cfg) = tmp_config("");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.roots[0].name, "src");
        assert_eq!(cfg.roots[0].targets[0].name, "t1");
    }

    #[test]
    fn unknown_key_names_the_key() {
        let (_d, cfg) = tmp_config("bogus = 1\n");
        let msg = cfg.unwrap_err().to_string();
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn bad_workers_names_key_value_and_range() {
        let (_d, cfg) = tmp_config("workers = 0\n");
        let msg = cfg.unwrap_err().to_string();
        assert!(
            msg.contains("sync[0].target[0].workers") && msg.contains("1 to 16"),
            "{msg}"
        );
    }

    /// A config whose `[[sync]]` carries `keys`.
    fn with_sync_keys(keys: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let text = format!(
            "state_dir = \"{d}/state\"\n[[sync]]\nsource = \"{d}/src\"\n{keys}\n[[sync.target]]\ndest = \"{d}/dst\"\n",
            d = dir.path().display(),
        );
        Config::from_toml(&text, Path::new("test.toml"))
    }

    #[test]
    fn delete_guard_takes_off_a_share_or_a_number_and_names_what_it_wants_otherwise() {
        let guard = |keys: &str| with_sync_keys(keys).map(|c| c.roots[0].delete_guard);
        let off = guard("").unwrap();
        assert_eq!(off.limit, GuardLimit::Off);
        assert_eq!(off.window, Duration::from_secs(60));
        assert_eq!(
            guard("delete_guard = \"off\"").unwrap().limit,
            GuardLimit::Off
        );
        assert_eq!(
            guard("delete_guard = \"30%\"").unwrap().limit,
            GuardLimit::Share(0.3)
        );
        let g = guard("delete_guard = 5000\ndelete_guard_window_s = 10").unwrap();
        assert_eq!(g.limit, GuardLimit::Paths(5000));
        assert_eq!(g.window, Duration::from_secs(10));
        for (bad, says) in [
            ("delete_guard = \"lots\"", "\"30%\""),
            ("delete_guard = -5", "number of paths"),
            ("delete_guard = 0.3", "\"30%\""),
            ("delete_guard = \"0%\"", "more than 0%"),
            ("delete_guard = \"130%\"", "at most 100%"),
            ("delete_guard_window_s = 0", "at least 1 second"),
        ] {
            let e = guard(bad).unwrap_err().to_string();
            assert!(e.contains("delete_guard") && e.contains(says), "{bad}: {e}");
        }
    }
}
