//! A target's kept versions (`versions = NAME`) pruned: at start and every hour, the run
//! directories older than `keep_versions_days` are deleted at the target. Runs beside the
//! worker: it touches nothing a push reads or writes (new runs get new names).

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::rsync::versions::expired;
use crate::rsync::Runner;

/// How often the versions are looked at.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prune target `id`'s versions older than `keep` until `stop`.
pub async fn prune_versions(runner: Runner, id: String, keep: Duration, stop: CancellationToken) {
    // The first tick is at once; a prune that overruns the hour pushes the next one back.
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            // Dropped at shutdown: its rsync is killed with it, the next start prunes again.
            _ = prune_once(&runner, &id, keep) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn prune_once(runner: &Runner, id: &str, keep: Duration) {
    let runs = match runner.version_runs().await {
        Ok(r) => r,
        Err(o) => {
            warn!(target = %id, outcome = ?o, "cannot list the kept versions; trying again in an hour");
            return;
        }
    };
    let old = expired(&runs, SystemTime::now(), keep);
    if old.is_empty() {
        return;
    }
    match runner.delete_version_runs(&old).await {
        Ok(()) => info!(
            target = %id,
            runs = old.len(),
            kept = runs.len() - old.len(),
            days = keep.as_secs() / 86_400,
            "pruned versions older than keep_versions_days"
        ),
        Err(o) => {
            warn!(target = %id, outcome = ?o, "pruning versions failed; trying again in an hour")
        }
    }
}
