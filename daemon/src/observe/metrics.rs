//! Prometheus metrics for `GET /metrics` (see [`crate::control::http`]), in the text exposition format
//! (the `prometheus` crate's encoder; `promtool check metrics` passes it).
//!
//! Counters are fed as things happen (rsync runs by exit status, bytes sent, paths delivered and
//! their replication lag); gauges (pending, in flight, failed, the oldest pending change's age,
//! each target's state, watches, journal size, a running full sync's entries checked and total)
//! are read at
//! each scrape from the same state `syncctl status` reports, so the two always agree.

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use syncd_proto::{StatusReport, TargetState};

use crate::journal::{now_ms, Item};

/// Every metric of the daemon, registered once.
pub struct Metrics {
    registry: Registry,
    rsync_runs: IntCounterVec,
    bytes_sent: IntCounterVec,
    delivered: IntCounterVec,
    stuck: IntCounterVec,
    lag: HistogramVec,
    last_success: GaugeVec,
    /// Set from the status at every scrape.
    gauges: StatusGauges,
    journal_bytes: IntGauge,
    /// Held by a scrape from setting the gauges to encoding them: another scrape's reset would
    /// otherwise empty them in between.
    scrape: std::sync::Mutex<()>,
}

/// The gauges a scrape sets from `syncctl status`'s report.
struct StatusGauges {
    pending: IntGaugeVec,
    in_flight: IntGaugeVec,
    failed: IntGaugeVec,
    deletes_held: IntGaugeVec,
    watches: IntGaugeVec,
    full_checked: IntGaugeVec,
    full_total: IntGaugeVec,
    oldest_pending: GaugeVec,
    state: IntGaugeVec,
}

const TARGET: &[&str] = &["root", "target"];

/// Registers metrics; names and label sets are constants, so registering cannot fail.
struct Reg(Registry);

impl Reg {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric registered once");
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Reg(Registry::new());
        Arc::new(Metrics {
            rsync_runs: r.counter(
                "syncd_rsync_runs_total",
                "rsync runs that ended, by kind (batch, full, move) and exit status",
                &["root", "target", "kind", "exit"],
            ),
            bytes_sent: r.counter(
                "syncd_sent_bytes_total",
                "Bytes rsync transferred for the files it sent",
                TARGET,
            ),
            delivered: r.counter(
                "syncd_delivered_paths_total",
                "Paths the target confirmed",
                TARGET,
            ),
            stuck: r.counter(
                "syncd_stuck_paths_total",
                "Paths found pending with nothing running to deliver them (a bug of syncd's; each was pushed again)",
                TARGET,
            ),
            lag: r.histogram(
                "syncd_replication_lag_seconds",
                "From a path's first unconfirmed change to its confirmation by the target",
                // 5 ms to about 2.7 minutes.
                exponential_buckets(0.005, 2.0, 16).expect("valid buckets"),
                TARGET,
            ),
            last_success: r.float_gauge(
                "syncd_last_success_timestamp_seconds",
                "When the target last confirmed a push (Unix time)",
                TARGET,
            ),
            gauges: StatusGauges::new(&r),
            journal_bytes: r.add(
                IntGauge::new("syncd_journal_size_bytes", "Size of the journal on disk")
                    .expect("valid metric"),
            ),
            registry: r.0,
            scrape: std::sync::Mutex::new(()),
        })
    }

    /// The handle one target's pushes report to.
    pub fn target(self: &Arc<Self>, root: &str, target: &str) -> TargetMetrics {
        // Present from the start, so an alert on its increase sees the first one.
        self.stuck.with_label_values(&[root, target]);
        TargetMetrics {
            m: self.clone(),
            root: root.to_string(),
            target: target.to_string(),
        }
    }

    /// The text exposition, with the gauges taken from `status` (targets and roots that are
    /// gone since a reload disappear).
    pub fn render(&self, status: &StatusReport, journal_bytes: u64) -> String {
        // Nothing panics while it is held; a poisoned lock guards nothing broken.
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.gauges.reset();
        for r in &status.roots {
            self.gauges
                .watches
                .with_label_values(&[r.name.as_str()])
                .set(r.watches as i64);
            for t in &r.targets {
                self.gauges.set_target(&r.name, t);
            }
        }
        self.journal_bytes.set(journal_bytes as i64);
        let mut out = Vec::new();
        // Encoding into memory cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl StatusGauges {
    fn new(r: &Reg) -> StatusGauges {
        StatusGauges {
            pending: r.gauge(
                "syncd_pending_paths",
                "Paths journaled and not yet confirmed by the target",
                TARGET,
            ),
            in_flight: r.gauge(
                "syncd_in_flight_paths",
                "Paths in rsyncs running now",
                TARGET,
            ),
            failed: r.gauge(
                "syncd_failed_paths",
                "Paths parked after exhausting their attempts (syncctl failed)",
                TARGET,
            ),
            deletes_held: r.gauge(
                "syncd_deletes_held",
                "Deletions held by delete_guard until syncctl release-deletes",
                TARGET,
            ),
            watches: r.gauge(
                "syncd_watches",
                "Directories under inotify watch",
                &["root"],
            ),
            full_checked: r.gauge(
                "syncd_full_sync_checked_entries",
                "Entries the running full sync has checked (present while one runs)",
                TARGET,
            ),
            full_total: r.gauge(
                "syncd_full_sync_total_entries",
                "Entries in the directory the running full sync covers (once counted)",
                TARGET,
            ),
            oldest_pending: r.float_gauge(
                "syncd_oldest_pending_age_seconds",
                "Age of the oldest change the target has not confirmed yet (0: none): how far behind the standby is",
                TARGET,
            ),
            state: r.gauge(
                "syncd_target_state",
                "1 for the target's state now (running, paused, backoff, initial-sync), 0 for the others",
                &["root", "target", "state"],
            ),
        }
    }

    /// Empty every gauge (targets and roots gone since a reload disappear).
    fn reset(&self) {
        self.pending.reset();
        self.in_flight.reset();
        self.failed.reset();
        self.deletes_held.reset();
        self.watches.reset();
        self.full_checked.reset();
        self.full_total.reset();
        self.oldest_pending.reset();
        self.state.reset();
    }

    /// The gauges of target `t` of root `root`, as `syncctl status` reports it.
    fn set_target(&self, root: &str, t: &syncd_proto::TargetStatus) {
        let l = [root, t.name.as_str()];
        self.pending.with_label_values(&l).set(t.pending as i64);
        self.in_flight.with_label_values(&l).set(t.in_flight as i64);
        self.failed.with_label_values(&l).set(t.failed as i64);
        self.deletes_held
            .with_label_values(&l)
            .set(t.deletes_held as i64);
        let age = t.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0;
        self.oldest_pending.with_label_values(&l).set(age);
        for s in [
            TargetState::Running,
            TargetState::Paused,
            TargetState::Backoff,
            TargetState::InitialSync,
        ] {
            let now = i64::from(t.state == s);
            self.state
                .with_label_values(&[root, t.name.as_str(), s.as_str()])
                .set(now);
        }
        if let Some(p) = &t.full_sync {
            self.full_checked
                .with_label_values(&l)
                .set(p.checked as i64);
            if let Some(total) = p.total {
                self.full_total
                    .with_label_values(&l)
                    .set(total.entries as i64);
            }
        }
    }
}

/// One target's view of [`Metrics`]; cheap to clone.
#[derive(Clone)]
pub struct TargetMetrics {
    m: Arc<Metrics>,
    root: String,
    target: String,
}

impl TargetMetrics {
    fn labels(&self) -> [&str; 2] {
        [&self.root, &self.target]
    }

    /// An rsync run ended.
    pub fn rsync_run(&self, kind: &str, exit: &str, bytes: u64) {
        self.m
            .rsync_runs
            .with_label_values(&[self.root.as_str(), self.target.as_str(), kind, exit])
            .inc();
        // Present from the first run on, so a scrape shows 0 rather than nothing.
        self.m
            .bytes_sent
            .with_label_values(&self.labels())
            .inc_by(bytes);
    }

    /// A path was found stuck.
    pub fn stuck(&self) {
        self.m.stuck.with_label_values(&self.labels()).inc();
    }

    /// The target confirmed `items` (`confirmed` of them were still current).
    pub fn delivered(&self, items: &[Item], confirmed: u64) {
        let now = now_ms();
        let l = self.labels();
        self.m.delivered.with_label_values(&l).inc_by(confirmed);
        let h = self.m.lag.with_label_values(&l);
        for it in items {
            h.observe(now.saturating_sub(it.entry.first_seen_ms) as f64 / 1000.0);
        }
        self.m
            .last_success
            .with_label_values(&l)
            .set(now as f64 / 1000.0);
    }

    /// A full sync of the target finished.
    pub fn synced(&self) {
        self.m
            .last_success
            .with_label_values(&self.labels())
            .set(now_ms() as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncd_proto::{ByteBuf, RootState, RootStatus, TargetStatus};

    fn status() -> StatusReport {
        StatusReport {
            version: "0".into(),
            pid: 1,
            uptime_ms: 0,
            roots: vec![RootStatus {
                name: "data".into(),
                source: ByteBuf::from(b"/data".to_vec()),
                state: RootState::Watching,
                watches: 3,
                targets: vec![TargetStatus {
                    name: "b1".into(),
                    dest: "h::m".into(),
                    state: TargetState::Running,
                    pending: 7,
                    in_flight: 0,
                    failed: 0,
                    delivered: 0,
                    oldest_pending_ms: None,
                    last_error: None,
                    next_retry_ms: None,
                    full_sync: None,
                    verify: None,
                    renames: syncd_proto::RenameMode::Unprobed,
                    deletes_held: 0,
                    stuck: 0,
                }],
            }],
        }
    }

    #[test]
    fn how_far_behind_and_the_state_of_each_target_are_gauges() {
        let m = Metrics::new();
        let mut s = status();
        let t = &mut s.roots[0].targets[0];
        t.oldest_pending_ms = Some(312_500);
        t.deletes_held = 800;
        t.state = TargetState::Backoff;
        let text = m.render(&s, 1);
        for line in [
            r#"syncd_oldest_pending_age_seconds{root="data",target="b1"} 312.5"#,
            r#"syncd_deletes_held{root="data",target="b1"} 800"#,
            r#"syncd_target_state{root="data",state="backoff",target="b1"} 1"#,
            r#"syncd_target_state{root="data",state="running",target="b1"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        s.roots[0].targets[0].oldest_pending_ms = None;
        let text = m.render(&s, 1);
        assert!(text.contains(r#"syncd_oldest_pending_age_seconds{root="data",target="b1"} 0"#));
    }

    #[test]
    fn concurrent_scrapes_each_see_every_gauge() {
        // Two Prometheus servers (an HA pair) scrape at once: one scrape's reset must never
        // empty the gauges another is about to encode.
        let m = Metrics::new();
        let s = status();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..2000 {
                        let text = m.render(&s, 1);
                        assert!(
                            text.contains(r#"syncd_pending_paths{root="data",target="b1"} 7"#),
                            "{text}"
                        );
                    }
                });
            }
        });
    }
}
