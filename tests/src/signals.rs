//! Typed signals from a running syncd, to wait on instead of its log wording: its status
//! (`syncctl --json status --watch`, one document every 50 ms) and its events (`syncctl --json
//! log --follow`: delivered, failed, full-sync), each awaited with a deadline.
//!
//! A wait names the fields it needs (`state`, `last_error`, `in_flight`, an event's `kind`),
//! so rewording a log line breaks no test; only the contract's names can.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

/// A `syncctl` that prints one JSON document per line until dropped.
pub struct Stream {
    child: Child,
    lines: Log,
    errors: Log,
}

impl Stream {
    /// Status snapshots, every 50 ms (the shortest `--watch` interval).
    pub fn status(socket: &Path) -> Stream {
        Self::spawn(socket, &["--json", "status", "--watch", "0.05"])
    }

    /// The event log: what the ring holds, then every new event.
    pub fn events(socket: &Path) -> Stream {
        Self::spawn(socket, &["--json", "log", "--follow"])
    }

    fn spawn(socket: &Path, args: &[&str]) -> Stream {
        let mut child = Command::new(bin("syncctl"))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run syncctl");
        let lines = Log::follow(child.stdout.take().unwrap(), "syncctl");
        let errors = Log::follow(child.stderr.take().unwrap(), "syncctl");
        Stream {
            child,
            lines,
            errors,
        }
    }

    /// The first document from index `from` on that satisfies `pred`, with its index.
    pub fn next(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(usize, Value)> {
        let i = self.lines.wait_until(from, timeout, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v))
        })?;
        let v = serde_json::from_str(&self.lines.line(i)?).ok()?;
        Some((i, v))
    }

    /// Everything printed so far, and what syncctl said on stderr (for failure messages).
    pub fn text(&self) -> String {
        format!("{}\n{}", self.lines.text(), self.errors.text())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        kill_reap(&mut self.child);
    }
}

/// Status snapshots one after another, across the moments syncd refuses status (between two
/// generations, on reload, it answers "syncd is starting", which ends a `--watch`): then a new
/// watch is started.
pub struct Statuses {
    socket: PathBuf,
    stream: Stream,
    at: usize,
    refusals: Vec<String>,
}

impl Statuses {
    pub fn new(socket: &Path) -> Statuses {
        Statuses {
            socket: socket.to_path_buf(),
            stream: Stream::status(socket),
            at: 0,
            refusals: Vec::new(),
        }
    }

    /// The next snapshot; None at `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some((i, v)) = self.stream.next(self.at, left, |_| true) {
                self.at = i + 1;
                return Some(v);
            }
            if self.stream.lines.is_closed() {
                self.refusals.push(self.stream.errors.text());
                self.stream = Stream::status(&self.socket);
                self.at = 0;
            }
        }
    }

    /// The first snapshot that satisfies `pred`; None at `deadline`.
    pub fn find(&mut self, deadline: Instant, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        while let Some(v) = self.next(deadline) {
            if pred(&v) {
                return Some(v);
            }
        }
        None
    }

    /// The last snapshot and the refusals seen (for failure messages).
    pub fn text(&self) -> String {
        let last = self.stream.lines.text();
        let mut refusals = self.refusals.clone();
        refusals.dedup();
        format!(
            "last status: {}\nsyncctl said: {}{}",
            last.lines().last().unwrap_or("(none)"),
            refusals.join(" / "),
            self.stream.errors.text()
        )
    }
}

/// Milliseconds since the epoch, as an event's `time_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Target `name` in a status document.
pub fn target_in(status: &Value, name: &str) -> Option<Value> {
    status["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

impl Syncd {
    /// Wait until the status satisfies `pred`; returns that status. Panics after `timeout`
    /// with the last status and syncd's log.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut s = Statuses::new(&self.socket);
        match s.find(Instant::now() + timeout, pred) {
            Some(v) => v,
            None => panic!(
                "status never got there in {timeout:?}\n{}\nlog:\n{}",
                s.text(),
                self.log.text()
            ),
        }
    }

    /// Wait until target `name` satisfies `pred`; returns its status object.
    pub fn wait_target(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let v = self.wait_status(timeout, |s| target_in(s, name).is_some_and(|t| pred(&t)));
        target_in(&v, name).unwrap()
    }

    /// Wait until target `name` backs off (a push failed); returns its status object.
    pub fn wait_backoff(&self, name: &str) -> Value {
        self.wait_target(name, Duration::from_secs(30), |t| t["state"] == "backoff")
    }

    /// Wait until target `name` has entered backoff `n` times from now on (one already under
    /// way counts as the first). An entry is a snapshot in backoff after one that was not, or
    /// whose time to the next try grew (a try so short that no snapshot saw it between two
    /// backoffs still counts).
    pub fn wait_backoffs(&self, name: &str, n: usize) {
        self.each_backoff(name, n, |_| {});
    }

    /// Like [`Syncd::wait_backoffs`], calling `at` with the target's status at each entry.
    pub fn each_backoff(&self, name: &str, n: usize, mut at_entry: impl FnMut(&Value)) {
        let mut s = Statuses::new(&self.socket);
        let deadline = Instant::now() + Duration::from_secs(30 * n as u64);
        let mut prev: Option<Value> = None;
        let mut entered = 0;
        while entered < n {
            let Some(v) = s.next(deadline) else {
                panic!(
                    "{name} backed off {entered} of {n} times\n{}\nlog:\n{}",
                    s.text(),
                    self.log.text()
                );
            };
            let Some(t) = target_in(&v, name) else {
                continue;
            };
            if t["state"] == "backoff" {
                let new = match &prev {
                    None => true,
                    Some(p) if p["state"] != "backoff" => true,
                    Some(p) => t["next_retry_ms"].as_u64() > p["next_retry_ms"].as_u64(),
                };
                if new {
                    entered += 1;
                    at_entry(&t);
                }
            }
            prev = Some(t);
        }
    }

    /// Wait until a push to target `name` is running (paths in flight).
    pub fn wait_push(&self, name: &str) -> Value {
        self.wait_target(name, Duration::from_secs(30), |t| {
            t["in_flight"].as_u64().unwrap_or(0) > 0
        })
    }

    /// The events the log ring holds now (`syncctl --json log`), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let out = self.ctl(&["--json", "log"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect()
    }

    /// Wait for an event of the log that satisfies `pred`; returns it.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let s = Stream::events(&self.socket);
        match s.next(0, timeout, pred) {
            Some((_, v)) => v,
            None => panic!(
                "no such event in {timeout:?}; events:\n{}\nlog:\n{}",
                s.text(),
                self.log.text()
            ),
        }
    }

    /// The full syncs owed or run at or after `since_ms` (events `full-sync-owed` and
    /// `full-sync` of the log ring).
    pub fn full_syncs_since(&self, since_ms: u64) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                (e["kind"] == "full-sync" || e["kind"] == "full-sync-owed")
                    && e["time_ms"].as_u64().is_some_and(|t| t >= since_ms)
            })
            .collect()
    }

    /// Wait for an event of `kind` ("delivered", "failed", "full-sync") that happened at or
    /// after `since_ms` (see [`now_ms`]); returns it.
    pub fn wait_event_of(&self, kind: &str, since_ms: u64) -> Value {
        self.wait_event(Duration::from_secs(30), |e| {
            e["kind"] == kind && e["time_ms"].as_u64().is_some_and(|t| t >= since_ms)
        })
    }
}
