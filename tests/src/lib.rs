//! Test fixtures: the real `syncd` and `syncctl` binaries in a temp dir, a real rsync daemon and
//! a real sshd on 127.0.0.1, and an exact tree comparison.
//!
//! Every fixture kills and reaps its process on drop. Readiness is awaited by reading the
//! process's own log line ("syncd ready", rsync's "listening on port", sshd's "Server listening")
//! with a deadline, never by sleeping. Past readiness, tests wait on syncd's typed signals
//! (`signals`: its status and its event log), not on its log wording.
//!
//! By role: `bins` (the binaries, spawning, reaping), `syncd`, `rsyncd`, `sshd` and `tmpfs`
//! (fixtures), `config` (config builders), `wait` (waits with deadlines), `asserts` (trees
//! compared exactly), `metrics` (HTTP and Prometheus), `procfs`, `log` (a child's lines),
//! `signals` (waits on status and events), `soak` (kill -9 cycles under a writer), `fuzz` (random
//! operations, then an exact comparison).

mod asserts;
mod bins;
mod config;
pub mod fuzz;
mod log;
mod metrics;
mod procfs;
mod rsyncd;
mod signals;
pub mod soak;
mod sshd;
mod syncd;
mod tmpfs;
mod wait;

pub use asserts::*;
pub use bins::*;
pub use config::*;
pub use log::*;
pub use metrics::*;
pub use procfs::*;
pub use rsyncd::*;
pub use signals::*;
pub use sshd::*;
pub use syncd::*;
pub use tmpfs::*;
pub use wait::*;
