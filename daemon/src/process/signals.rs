//! The signals and timers of the process: SIGTERM and SIGINT start the shutdown, SIGHUP (one
//! handler, in the supervisor) reopens the log file and reloads, and systemd's watchdog is
//! pinged at half its interval.

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancel `shutdown` at the first SIGTERM or SIGINT.
pub fn spawn_terminate(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Ping systemd's watchdog every `every` (half of `WatchdogSec`), for the life of the process.
pub fn spawn_watchdog(every: Duration) {
    info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog: pinging"
    );
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    });
}

/// SIGHUP, the supervisor's only handler of it.
pub fn hangup() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// After SIGHUP, when logging to a file: logrotate moved the file away, so output goes on into
/// a new file at the configured path.
pub fn reopen_log(log_file: &Path) {
    match super::daemonize::redirect_output(log_file) {
        Ok(()) => info!(file = %log_file.display(), "log file reopened"),
        Err(e) => {
            warn!(error = %e, "cannot reopen the log file; writing on to the old one")
        }
    }
}
