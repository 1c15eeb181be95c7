//! The file format, exactly as the administrator writes it: every key optional where a default
//! exists, unknown keys refused. [`super::validate`] turns it into a [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;

/// The file format, exactly as written by the administrator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub grace_period_s: Option<u64>,
    pub startup_resync: Option<bool>,
    pub http: Option<RawHttp>,
    #[serde(default)]
    pub sync: Vec<RawSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub name: Option<String>,
    pub source: PathBuf,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub delay_ms: Option<u64>,
    pub modify_delay_ms: Option<u64>,
    pub full_resync_interval_s: Option<u64>,
    pub delete_guard: Option<RawGuard>,
    pub delete_guard_window_s: Option<u64>,
    #[serde(default)]
    pub target: Vec<RawTarget>,
}

/// `delete_guard` as written: `"off"`, a share (`"30%"`) or a number of paths.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawGuard {
    Paths(i64),
    Text(String),
    /// Not accepted, but named in the error rather than refused by the parser.
    Float(f64),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Option<String>,
    pub dest: String,
    pub password_file: Option<PathBuf>,
    pub port: Option<u16>,
    #[serde(default)]
    pub rsync_args: Vec<String>,
    #[serde(default)]
    pub ssh_args: Vec<String>,
    pub workers: Option<usize>,
    pub compress: Option<bool>,
    pub max_delete: Option<u64>,
    pub timeout_s: Option<u64>,
    pub contimeout_s: Option<u64>,
    pub push_deadline_s: Option<u64>,
    pub max_batch: Option<usize>,
    pub max_attempts: Option<u32>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    #[serde(alias = "retry_failed_interval")]
    pub retry_failed_interval_s: Option<u64>,
    pub on_batch: Option<Vec<String>>,
    pub on_failure: Option<Vec<String>>,
    pub hook_timeout_s: Option<u64>,
    pub versions: Option<String>,
    pub keep_versions_days: Option<u64>,
}
