//! syncd: real-time file replication with inotify, a sled journal and the real `rsync`.
//!
//! The modules in the order an event travels (see docs/architecture.md):
//! - [`process`]: the daemon around it all: run, supervise, reload, daemonize;
//! - [`config`]: the validated configuration;
//! - [`watch`]: inotify → [`watch::Change`]s;
//! - [`coalesce`]: changes → journal entries for every target of the root ([`catchup`]: what
//!   changed while nobody watched; [`links`]: the other names of a hard-linked file);
//! - [`journal`]: the sled journal of pending, parked and owed work;
//! - [`dispatch`]: one worker per target: batches, schedule, retries;
//! - [`rsync`]: the rsync command lines, runs and exit classification;
//! - [`control`] (the Unix socket and HTTP) and [`observe`] (metrics, log, hooks) beside them;
//! - [`engine`]: one generation of the pipeline, wiring the stages together;
//! - [`fs`]: relative paths and root identity, below them all.
//!
//! [`run`] is the whole daemon once the process is set up (forked or not). The binary only
//! parses arguments, daemonizes and builds the runtime. Tasks talk over bounded channels,
//! `watch` channels for published state and `Notify` for wake-ups. No lock is held across an
//! `.await`.

pub mod catchup;
pub mod coalesce;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod engine;
pub mod faults;
pub mod fs;
pub mod journal;
pub mod links;
pub mod observe;
pub mod process;
pub mod rsync;
pub mod watch;

pub use config::Config;
pub use process::run;
