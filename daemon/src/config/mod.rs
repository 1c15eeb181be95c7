//! Configuration: the TOML file, quick mode (`--source/--target`) and the embedded demo default.
//!
//! Invariants: a [`Config`] only exists fully validated. Every check runs in [`Config::validate`]
//! before anything is started, so a bad file never produces a half-configured daemon; every error
//! names the key, the value and what to do.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod exclude;
pub mod manual;

pub use exclude::Excludes;

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

/// The file format, exactly as written by the administrator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    pidfile: Option<PathBuf>,
    log_file: Option<PathBuf>,
    socket_group: Option<String>,
    grace_period_s: Option<u64>,
    startup_resync: Option<bool>,
    http: Option<RawHttp>,
    #[serde(default)]
    sync: Vec<RawSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    token_file: Option<PathBuf>,
}

/// The optional HTTP interface (see [`crate::control::http`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// The control token, read from `token_file`; `None`: control over HTTP is off.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    name: Option<String>,
    source: PathBuf,
    #[serde(default)]
    exclude: Vec<String>,
    delay_ms: Option<u64>,
    modify_delay_ms: Option<u64>,
    full_resync_interval_s: Option<u64>,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    dest: String,
    password_file: Option<PathBuf>,
    port: Option<u16>,
    #[serde(default)]
    rsync_args: Vec<String>,
    #[serde(default)]
    ssh_args: Vec<String>,
    workers: Option<usize>,
    compress: Option<bool>,
    max_delete: Option<u64>,
    timeout_s: Option<u64>,
    contimeout_s: Option<u64>,
    push_deadline_s: Option<u64>,
    max_batch: Option<usize>,
    max_attempts: Option<u32>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    #[serde(alias = "retry_failed_interval")]
    retry_failed_interval_s: Option<u64>,
    on_batch: Option<Vec<String>>,
    on_failure: Option<Vec<String>>,
    hook_timeout_s: Option<u64>,
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
    /// Window for files written without being closed (logs).
    pub modify_delay: Duration,
    /// Interval of full resyncs when the root cannot be fully watched.
    pub full_resync_interval: Duration,
    pub targets: Vec<TargetConfig>,
}

/// Where a target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A local directory.
    Local(PathBuf),
    /// `[user@]host::module[/path]` or `rsync://[user@]host[:port]/module[/path]`.
    Daemon {
        user: Option<String>,
        host: String,
        module: String,
        path: String,
        /// Port given in an `rsync://` URL.
        port: Option<u16>,
    },
    /// `[user@]host:path` through ssh.
    Ssh {
        user: Option<String>,
        host: String,
        path: String,
    },
}

impl Dest {
    /// Parse a DEST as written on the command line or in the config.
    pub fn parse(s: &str) -> Result<Dest, String> {
        const HELP: &str = "use a local directory, [user@]host::module[/path], rsync://[user@]host[:port]/module[/path] or [user@]host:path";
        if s.is_empty() {
            return Err(format!("empty destination: {HELP}"));
        }
        let url = s.strip_prefix("rsync://");
        let split_user = |hostpart: &str| -> Result<(Option<String>, String), String> {
            let (user, host) = match hostpart.rsplit_once('@') {
                Some(("", _)) => return Err(format!("empty user before '@': {HELP}")),
                Some((u, h)) => (Some(u.to_string()), h),
                None => (None, hostpart),
            };
            if host.is_empty() {
                return Err(format!("missing host: {HELP}"));
            }
            if host.contains(['/', ' ']) {
                return Err(format!("invalid host {host:?}: {HELP}"));
            }
            Ok((user, host.to_string()))
        };
        // The module/path part of a daemon destination, shared by the `::` and URL forms.
        let daemon = |hostpart: &str, modpath: &str, port: Option<u16>| -> Result<Dest, String> {
            let (user, host) = split_user(hostpart)?;
            let (module, path) = modpath.split_once('/').unwrap_or((modpath, ""));
            if module.is_empty() {
                return Err(format!("missing module after the host: {HELP}"));
            }
            Ok(Dest::Daemon {
                user,
                host,
                module: module.to_string(),
                path: path.trim_end_matches('/').to_string(),
                port,
            })
        };
        if let Some(rest) = url {
            let (hostport, modpath) = rest.split_once('/').unwrap_or((rest, ""));
            let (hostpart, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| format!("invalid port {p:?}: {HELP}"))?,
                    ),
                ),
                None => (hostport, None),
            };
            return daemon(hostpart, modpath, port);
        }
        if let Some((hostpart, rest)) = s.split_once("::") {
            if hostpart.contains('/') {
                return Ok(Dest::Local(PathBuf::from(s)));
            }
            return daemon(hostpart, rest, None);
        }
        if let Some((hostpart, path)) = s.split_once(':') {
            // rsync's own rule: a colon after a slash is part of a local path.
            if !hostpart.contains('/') {
                let (user, host) = split_user(hostpart)?;
                return Ok(Dest::Ssh {
                    user,
                    host,
                    path: path.to_string(),
                });
            }
        }
        Ok(Dest::Local(PathBuf::from(s)))
    }

    /// The destination argument for rsync, with the trailing slash that means "into".
    pub fn rsync_arg(&self, sub: &[u8]) -> OsString {
        let mut out = match self {
            Dest::Local(p) => p.as_os_str().as_bytes().to_vec(),
            Dest::Daemon {
                user,
                host,
                module,
                path,
                ..
            } => {
                let mut s = String::new();
                if let Some(u) = user {
                    s.push_str(u);
                    s.push('@');
                }
                s.push_str(host);
                s.push_str("::");
                s.push_str(module);
                if !path.is_empty() {
                    s.push('/');
                    s.push_str(path);
                }
                s.into_bytes()
            }
            Dest::Ssh { user, host, path } => {
                let mut s = String::new();
                if let Some(u) = user {
                    s.push_str(u);
                    s.push('@');
                }
                s.push_str(host);
                s.push(':');
                s.push_str(path);
                s.into_bytes()
            }
        };
        if !sub.is_empty() {
            if !out.ends_with(b"/") && !out.ends_with(b":") {
                out.push(b'/');
            }
            out.extend_from_slice(sub);
        }
        if !out.ends_with(b"/") && !out.ends_with(b":") {
            out.push(b'/');
        }
        std::os::unix::ffi::OsStringExt::from_vec(out)
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.rsync_arg(b"");
        let s = String::from_utf8_lossy(s.as_bytes());
        f.write_str(s.trim_end_matches('/'))
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
}

/// The `[http]` table: an address to listen on, and the control token's file (private to
/// syncd's user, like an rsync password file).
fn check_http(raw: &RawHttp) -> Result<HttpConfig, ConfigError> {
    let listen = raw.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            &raw.listen,
            "not an address:port; for example \"127.0.0.1:9188\" (loopback only) or \"[::1]:9188\"",
        )
    })?;
    let token = match &raw.token_file {
        None => None,
        Some(f) => {
            let key = "http.token_file";
            let meta = std::fs::metadata(f).map_err(|e| {
                invalid(
                    key,
                    f.display(),
                    format!("{e}; create it (mode 0600) with the token in it"),
                )
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(invalid(
                    key,
                    f.display(),
                    format!(
                        "readable by others (mode {:04o}): anyone who reads it controls syncd; run chmod 600 {}",
                        meta.permissions().mode() & 0o7777,
                        f.display()
                    ),
                ));
            }
            let t = std::fs::read_to_string(f)
                .map_err(|e| invalid(key, f.display(), format!("{e}; fix the path")))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(invalid(
                    key,
                    f.display(),
                    "the token must be at least 16 characters; for example: head -c 24 /dev/urandom | base64 > FILE",
                ));
            }
            Some(t)
        }
    };
    Ok(HttpConfig { listen, token })
}

/// A hook's program and arguments: run directly, so the program must be an absolute path to an
/// executable file.
fn hook(
    key: String,
    argv: Option<Vec<String>>,
    timeout: Duration,
) -> Result<Option<Hook>, ConfigError> {
    let Some(argv) = argv else {
        return Ok(None);
    };
    let Some(prog) = argv.first() else {
        return Err(invalid(
            key,
            "[]",
            "empty: give the program's absolute path and its arguments, or remove the key",
        ));
    };
    if !Path::new(prog).is_absolute() {
        return Err(invalid(
            key,
            prog,
            "not an absolute path: hooks run without a shell or a PATH search; give the program's full path",
        ));
    }
    match std::fs::metadata(prog) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            Ok(Some(Hook { argv, timeout }))
        }
        Ok(_) => Err(invalid(
            key,
            prog,
            "not an executable file; chmod +x it or fix the path",
        )),
        Err(e) => Err(invalid(key, prog, format!("{e}; fix the path"))),
    }
}

/// Defaults that depend on who runs the daemon.
fn default_state_dir() -> PathBuf {
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

impl Config {
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
        Self::validate(raw)
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
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = absolute(raw.state_dir.unwrap_or_else(default_state_dir));
        let socket = absolute(raw.socket.unwrap_or_else(syncd_proto_default_socket));
        if socket.as_os_str().len() > 100 {
            return Err(invalid(
                "socket",
                socket.display(),
                "path too long for a Unix socket (over 100 bytes); choose a shorter path",
            ));
        }
        let pidfile = absolute(raw.pidfile.unwrap_or_else(|| state_dir.join("syncd.pid")));
        let log_file = absolute(raw.log_file.unwrap_or_else(|| state_dir.join("syncd.log")));
        if let Some(g) = &raw.socket_group {
            match nix::unistd::Group::from_name(g) {
                Ok(Some(_)) => {}
                _ => {
                    return Err(invalid(
                        "socket_group",
                        g,
                        "no such group; create it or remove the key",
                    ))
                }
            }
        }
        let http = raw.http.as_ref().map(check_http).transpose()?;
        // No [[sync]] is valid: the packaged configuration ships that way, and the daemon runs
        // idle (and says so) until a root is added and the configuration reloaded.
        let mut roots = Vec::new();
        let mut root_names = HashSet::new();
        for (i, s) in raw.sync.into_iter().enumerate() {
            let key = |k: &str| format!("sync[{i}].{k}");
            let source = absolute(s.source.clone());
            match std::fs::metadata(&source) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(invalid(key("source"), source.display(), "not a directory")),
                Err(e) => {
                    return Err(invalid(
                        key("source"),
                        source.display(),
                        format!("{e}; create the directory or fix the path"),
                    ))
                }
            }
            let name = match s.name {
                Some(n) => n,
                None => default_root_name(&source),
            };
            check_name(&key("name"), &name)?;
            if !root_names.insert(name.clone()) {
                return Err(invalid(
                    key("name"),
                    &name,
                    "another [[sync]] has the same name; names must be unique",
                ));
            }
            let excludes = Excludes::new(&s.exclude)
                .map_err(|(pat, why)| invalid(key("exclude"), pat, why))?;
            if s.target.is_empty() {
                return Err(invalid(
                    key("target"),
                    "[]",
                    "no [[sync.target]]: add at least one destination",
                ));
            }
            let mut targets = Vec::new();
            let mut target_names = HashSet::new();
            for (j, t) in s.target.into_iter().enumerate() {
                let tkey = |k: &str| format!("sync[{i}].target[{j}].{k}");
                let dest =
                    Dest::parse(&t.dest).map_err(|why| invalid(tkey("dest"), &t.dest, why))?;
                let dest = match dest {
                    Dest::Local(p) => {
                        let p = absolute(p);
                        if p.starts_with(&source) || source.starts_with(&p) {
                            return Err(invalid(
                                tkey("dest"),
                                p.display(),
                                "a local target must not overlap the source directory",
                            ));
                        }
                        let parent = p.parent().unwrap_or(Path::new("/"));
                        if !parent.is_dir() {
                            return Err(invalid(
                                tkey("dest"),
                                p.display(),
                                format!(
                                    "parent directory {} does not exist; create it",
                                    parent.display()
                                ),
                            ));
                        }
                        Dest::Local(p)
                    }
                    d => d,
                };
                let name = t.name.unwrap_or_else(|| format!("t{}", j + 1));
                check_name(&tkey("name"), &name)?;
                if !target_names.insert(name.clone()) {
                    return Err(invalid(
                        tkey("name"),
                        &name,
                        "another target of this [[sync]] has the same name",
                    ));
                }
                if let Some(pf) = &t.password_file {
                    if !matches!(dest, Dest::Daemon { .. }) {
                        return Err(invalid(
                            tkey("password_file"),
                            pf.display(),
                            "only rsync daemon targets (host::module) use a password file",
                        ));
                    }
                    check_password_file(&tkey("password_file"), pf)?;
                }
                let port = match (&dest, t.port) {
                    (Dest::Daemon { port: Some(u), .. }, Some(p)) if *u != p => {
                        return Err(invalid(
                            tkey("port"),
                            p,
                            format!("conflicts with port {u} in dest; give it once"),
                        ));
                    }
                    (Dest::Daemon { port: Some(u), .. }, _) => Some(*u),
                    (_, p) => p,
                };
                if t.port.is_some() && matches!(dest, Dest::Local(_)) {
                    return Err(invalid(
                        tkey("port"),
                        t.port.unwrap_or(0),
                        "a local directory target has no port",
                    ));
                }
                if !t.ssh_args.is_empty() && !matches!(dest, Dest::Ssh { .. }) {
                    return Err(invalid(
                        tkey("ssh_args"),
                        t.ssh_args.join(" "),
                        "only ssh targets (host:path) take ssh_args",
                    ));
                }
                for a in &t.rsync_args {
                    if !a.starts_with('-') {
                        return Err(invalid(tkey("rsync_args"), a, "every entry must be an option starting with '-'; paths are chosen by syncd"));
                    }
                }
                let workers = t.workers.unwrap_or(4);
                if !(1..=16).contains(&workers) {
                    return Err(invalid(tkey("workers"), workers, "allowed: 1 to 16"));
                }
                let max_attempts = t.max_attempts.unwrap_or(10);
                if max_attempts == 0 {
                    return Err(invalid(tkey("max_attempts"), 0, "must be at least 1"));
                }
                let initial = t.retry_initial_ms.unwrap_or(1000);
                let max = t.retry_max_ms.unwrap_or(300_000);
                if initial == 0 || max < initial {
                    return Err(invalid(
                        tkey("retry_max_ms"),
                        max,
                        format!(
                            "must be at least retry_initial_ms ({initial}), which must be above 0"
                        ),
                    ));
                }
                let timeout = t.timeout_s.unwrap_or(60);
                if timeout == 0 {
                    return Err(invalid(tkey("timeout_s"), 0, "must be at least 1 second"));
                }
                let max_batch = t.max_batch.unwrap_or(10_000);
                if max_batch == 0 {
                    return Err(invalid(tkey("max_batch"), 0, "must be at least 1"));
                }
                let hook_timeout = Duration::from_secs(t.hook_timeout_s.unwrap_or(60).max(1));
                let on_batch = hook(tkey("on_batch"), t.on_batch, hook_timeout)?;
                let on_failure = hook(tkey("on_failure"), t.on_failure, hook_timeout)?;
                targets.push(TargetConfig {
                    name,
                    dest,
                    password_file: t.password_file.map(absolute),
                    port,
                    rsync_args: t.rsync_args,
                    ssh_args: t.ssh_args,
                    workers,
                    compress: t.compress.unwrap_or(false),
                    max_delete: t.max_delete,
                    timeout: Duration::from_secs(timeout),
                    contimeout: Duration::from_secs(t.contimeout_s.unwrap_or(15).max(1)),
                    push_deadline: Duration::from_secs(t.push_deadline_s.unwrap_or(3600).max(1)),
                    max_batch,
                    retry: RetryPolicy {
                        max_attempts,
                        initial: Duration::from_millis(initial),
                        max: Duration::from_millis(max),
                        failed_interval: Duration::from_secs(
                            t.retry_failed_interval_s.unwrap_or(3600).max(1),
                        ),
                    },
                    on_batch,
                    on_failure,
                });
            }
            roots.push(RootConfig {
                name,
                source,
                excludes,
                delay: Duration::from_millis(s.delay_ms.unwrap_or(100)),
                modify_delay: Duration::from_millis(s.modify_delay_ms.unwrap_or(1000)),
                full_resync_interval: Duration::from_secs(
                    s.full_resync_interval_s.unwrap_or(300).max(1),
                ),
                targets,
            });
        }
        for (a, ra) in roots.iter().enumerate() {
            for rb in &roots[a + 1..] {
                if ra.source.starts_with(&rb.source) || rb.source.starts_with(&ra.source) {
                    return Err(invalid(
                        "sync.source",
                        ra.source.display(),
                        format!(
                            "overlaps the source of [[sync]] {:?}; roots must not nest",
                            rb.name
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            state_dir,
            socket,
            pidfile,
            log_file,
            socket_group: raw.socket_group,
            grace_period: Duration::from_secs(raw.grace_period_s.unwrap_or(10)),
            startup_resync: raw.startup_resync.unwrap_or(true),
            http,
            roots,
            source_file: None,
            source_text: None,
        })
    }
}

fn syncd_proto_default_socket() -> PathBuf {
    syncd_proto::default_socket_path()
}

/// Make a path absolute against the current directory without touching the file system.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn default_root_name(source: &Path) -> String {
    let base = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "root".to_string()
    } else {
        clean
    }
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            name,
            "names are 1-64 characters of letters, digits, '.', '_' and '-', not starting with '.'",
        ))
    }
}

fn check_password_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        invalid(
            key,
            path.display(),
            format!("{e}; create it with the password on its first line, mode 0600"),
        )
    })?;
    if !meta.is_file() {
        return Err(invalid(key, path.display(), "not a regular file"));
    }
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(invalid(
            key,
            path.display(),
            format!(
                "readable by others (mode {:04o}); rsync refuses it: run chmod 600 {}",
                meta.permissions().mode() & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_forms_parse() {
        assert_eq!(
            Dest::parse("/backup").unwrap(),
            Dest::Local("/backup".into())
        );
        assert_eq!(
            Dest::parse("u@127.0.0.1::mod/sub/").unwrap(),
            Dest::Daemon {
                user: Some("u".into()),
                host: "127.0.0.1".into(),
                module: "mod".into(),
                path: "sub".into(),
                port: None,
            }
        );
        assert_eq!(
            Dest::parse("rsync://u@127.0.0.1:8873/mod/a/b").unwrap(),
            Dest::Daemon {
                user: Some("u".into()),
                host: "127.0.0.1".into(),
                module: "mod".into(),
                path: "a/b".into(),
                port: Some(8873),
            }
        );
        assert!(Dest::parse("rsync://h:notaport/m").is_err());
        assert!(Dest::parse("rsync://h/").is_err());
        assert_eq!(
            Dest::parse("localhost:/srv/x").unwrap(),
            Dest::Ssh {
                user: None,
                host: "localhost".into(),
                path: "/srv/x".into()
            }
        );
        assert_eq!(Dest::parse("./a:b").unwrap(), Dest::Local("./a:b".into()));
        assert!(Dest::parse("host::").is_err());
        assert!(Dest::parse("::mod").is_err());
        assert!(Dest::parse("@host:path").is_err());
        assert!(Dest::parse("").is_err());
    }

    #[test]
    fn rsync_arg_has_trailing_slash_and_subdir() {
        let d = Dest::parse("u@h::m").unwrap();
        assert_eq!(d.rsync_arg(b""), OsString::from("u@h::m/"));
        assert_eq!(d.rsync_arg(b"a/b"), OsString::from("u@h::m/a/b/"));
        let s = Dest::parse("h:").unwrap();
        assert_eq!(s.rsync_arg(b""), OsString::from("h:"));
        assert_eq!(s.rsync_arg(b"x"), OsString::from("h:x/"));
    }

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
}
