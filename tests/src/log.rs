//! Lines a child wrote to a pipe, collected by a thread and awaited with a deadline.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines a child wrote to a pipe, collected by a thread, awaited with a deadline.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Set when the stream ended: a line that has not come will not come.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Log {
    /// Collect lines from `r` until EOF.
    pub fn follow(r: impl std::io::Read + Send + 'static, echo: &'static str) -> Log {
        let log = Log::default();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).split(b'\n') {
                let Ok(line) = line else { break };
                let s = String::from_utf8_lossy(&line).into_owned();
                if std::env::var_os("SYNCD_TEST_ECHO").is_some() {
                    eprintln!("[{echo}] {s}");
                }
                let (m, c) = &*l.inner;
                m.lock().unwrap().push(s);
                c.notify_all();
            }
            let (m, c) = &*l.inner;
            let _guard = m.lock().unwrap();
            l.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            c.notify_all();
        });
        log
    }

    /// Wait until a line containing `needle` appears (counting from line `from`); returns its index.
    pub fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> Option<usize> {
        self.wait_until(from, timeout, |l| l.contains(needle))
    }

    /// Wait until a line from index `from` on satisfies `pred`; returns its index. None after
    /// `timeout`, or once the stream ended without one.
    pub fn wait_until(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.inner;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(i) = lines.iter().skip(from).position(|l| pred(l)) {
                return Some(from + i);
            }
            let now = Instant::now();
            if now >= deadline || self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            lines = c.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Line `i`, if collected.
    pub fn line(&self, i: usize) -> Option<String> {
        self.inner.0.lock().unwrap().get(i).cloned()
    }

    /// Whether the stream ended (no more lines will come).
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Number of lines so far.
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().len()
    }

    /// Whether no line was collected yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().join("\n")
    }
}
