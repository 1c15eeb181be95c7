//! Test fixtures: the real `syncd` and `syncctl` binaries in a temp dir, a real rsync daemon and
//! a real sshd on 127.0.0.1, and an exact tree comparison.
//!
//! Every fixture kills and reaps its process on drop. Readiness is awaited by reading the
//! process's own log line ("syncd ready", rsync's "listening on port", sshd's "Server listening")
//! with a deadline, never by sleeping.

pub mod soak;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// This workspace's binary `name`, reachable by any user at `dir/name` (the build directory
/// may not be). A hard link when possible: a copy is a file this process had open for writing,
/// and a fork by another test thread at that moment makes its exec fail with ETXTBSY.
pub fn public_bin(name: &str, dir: &Path) -> PathBuf {
    let p = dir.join(name);
    if p.exists() {
        // Never copy onto it: it may be a hard link of the build output itself.
        return p;
    }
    if std::fs::hard_link(bin(name), &p).is_err() {
        std::fs::copy(bin(name), &p).unwrap();
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Spawn, retrying while the executable is "busy" (ETXTBSY: a copy of it was just written and
/// another thread's fork still holds the write handle until that child execs).
pub fn spawn_retrying(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
            r => return r.expect("spawn"),
        }
    }
    cmd.spawn().expect("spawn (executable stayed busy)")
}

/// Path of a binary built by this workspace (`cargo test --workspace` builds both).
pub fn bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace` (it builds syncd and syncctl)",
        p.display()
    );
    p
}

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
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.inner;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(i) = lines.iter().skip(from).position(|l| l.contains(needle)) {
                return Some(from + i);
            }
            let now = Instant::now();
            if now >= deadline || self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            lines = c.wait_timeout(lines, deadline - now).unwrap().0;
        }
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

/// A free TCP port on 127.0.0.1 (bound and released; the fixture binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kill a child with SIGKILL and reap it.
pub fn kill_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `syncd --foreground`.
pub struct Syncd {
    pub child: Child,
    pub log: Log,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Syncd {
    /// Start syncd on `config` and wait for "syncd ready".
    pub fn start(config: &Path, socket: &Path) -> Syncd {
        Self::start_with_env(config, socket, &[])
    }

    /// Start with extra environment (a fault-injecting PATH, say).
    pub fn start_with_env(config: &Path, socket: &Path, env: &[(&str, &OsStr)]) -> Syncd {
        Self::start_from(Command::new(bin("syncd")), config, socket, env)
    }

    /// Start as user `uid`/`gid`, from a copy of the binary in `dir` (which that user can
    /// reach; the build directory may not be).
    pub fn start_as(config: &Path, socket: &Path, dir: &Path, uid: u32, gid: u32) -> Syncd {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(public_bin("syncd", dir));
        cmd.uid(uid).gid(gid);
        Self::start_from(cmd, config, socket, &[])
    }

    fn start_from(mut cmd: Command, config: &Path, socket: &Path, env: &[(&str, &OsStr)]) -> Syncd {
        cmd.arg("--foreground")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env("SYNCD_LOG", "info,syncd=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_retrying(&mut cmd);
        let log = Log::follow(child.stderr.take().unwrap(), "syncd");
        let s = Syncd {
            child,
            log,
            socket: socket.to_path_buf(),
            config: config.to_path_buf(),
        };
        if s.log
            .wait_for("syncd ready", 0, Duration::from_secs(30))
            .is_none()
        {
            let dir = config.parent().unwrap_or(Path::new("/"));
            panic!(
                "syncd did not become ready:\n{}\nprocesses with files open under {}:\n{}",
                s.log.text(),
                dir.display(),
                holders(dir).join("\n")
            );
        }
        s
    }

    /// Run syncctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.socket, args)
    }

    /// `syncctl wait-idle --timeout T`: the exit code.
    pub fn wait_idle(&self, timeout_s: u32) -> i32 {
        let out = self.ctl(&["wait-idle", "--timeout", &timeout_s.to_string()]);
        out.status.code().unwrap_or(-1)
    }

    /// Wait idle and require exit 0 (everything delivered, nothing failed).
    pub fn settle(&self) {
        let out = self.ctl(&["wait-idle", "--timeout", "60"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "wait-idle: {}{}\nstatus: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&self.ctl(&["status"]).stdout),
            self.log.text()
        );
    }

    /// `syncctl --json status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["--json", "status"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// One target's status object by name.
    pub fn target_status(&self, name: &str) -> serde_json::Value {
        let s = self.status();
        s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .expect("target in status")
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().ok()?;
        st.code()
    }

    /// SIGKILL and reap: a crash.
    pub fn kill9(mut self) {
        kill_reap(&mut self.child);
    }
}

impl Drop for Syncd {
    fn drop(&mut self) {
        // SIGTERM first so syncd kills its own rsync children; SIGKILL if it does not exit.
        terminate(&mut self.child, Duration::from_secs(15));
    }
}

/// SIGTERM, wait up to `grace` for the exit, then SIGKILL; always reaps.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        if rx.recv_timeout(grace).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
}

/// Wait until an entry whose name satisfies `pred` appears in `dir` (already there counts), by
/// watching the directory with inotify; false after `timeout`.
pub fn wait_for_entry(dir: &Path, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    let mut ino = inotify::Inotify::init().expect("inotify");
    ino.watches()
        .add(
            dir,
            inotify::WatchMask::CREATE | inotify::WatchMask::MOVED_TO,
        )
        .expect("watch");
    let present = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| pred(&e.file_name().to_string_lossy()))
    };
    if present(dir) {
        return true;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            ino.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        if let Ok(evs) = ino.read_events(&mut buf) {
            for ev in evs {
                if ev.name.is_some_and(|n| pred(&n.to_string_lossy())) {
                    return true;
                }
            }
        }
    }
}

/// Wait until `cond` holds, checking it again whenever something in `dir` changes (an entry
/// created, written, moved in or removed: inotify); false after `timeout`. For conditions on
/// files a process writes (its log, a hook's output).
pub fn wait_for_change_in(dir: &Path, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    use std::os::fd::AsFd;
    let mut ino = inotify::Inotify::init().expect("inotify");
    use inotify::WatchMask as M;
    ino.watches()
        .add(
            dir,
            M::CREATE | M::MODIFY | M::CLOSE_WRITE | M::MOVED_TO | M::DELETE | M::ATTRIB,
        )
        .expect("watch");
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        // Checked after the watch exists: no change can slip between the check and the wait.
        if cond() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            ino.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        let _ = ino.read_events(&mut buf);
    }
}

/// Wait until process `pid` (not necessarily our child) has exited, on a pidfd; false after
/// `timeout`. True too if it was gone already.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Processes with a file open under `dir`: "pid state cmdline -> file" (for failure reports).
pub fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(fds) = std::fs::read_dir(p.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target.starts_with(dir) {
                let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
                let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
                let state = status
                    .lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or("");
                let ppid = status
                    .lines()
                    .find(|l| l.starts_with("PPid:"))
                    .unwrap_or("");
                out.push(format!(
                    "{} {state} {ppid} {} -> {}",
                    e.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmd).replace('\0', " "),
                    target.display()
                ));
            }
        }
    }
    out
}

/// Processes named `comm` whose parent is `ppid`.
pub fn children_named(ppid: u32, comm: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid …
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
            let parent = rest.split_whitespace().nth(1).unwrap_or("");
            name == comm && parent == ppid.to_string()
        })
        .count()
}

/// Resident set size of process `pid` in KiB (VmRSS), or 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident set size of process `pid` in KiB (VmHWM), or 0 when it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Run syncctl with `--socket`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("syncctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run syncctl")
}

/// A temp directory with `src/`, `dst/`, `state/` and a config writer.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// Fresh directories.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("syncd-t")
            .tempdir_in("/tmp")
            .unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let state = dir.path().join("state");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let socket = dir.path().join("run/syncd.sock");
        Env {
            dir,
            src,
            dst,
            state,
            socket,
        }
    }

    /// Write a config with one root (`extra_root` lines go into `[[sync]]`) and the given target
    /// sections; returns its path.
    pub fn config(&self, extra_root: &str, targets: &str) -> PathBuf {
        self.config_top("", extra_root, targets)
    }

    /// Like [`Env::config`] with extra top-level lines.
    pub fn config_top(&self, top: &str, extra_root: &str, targets: &str) -> PathBuf {
        let text = format!(
            "{top}\n\n[[sync]]\n{root}\n{targets}",
            top = merge_keys(
                &format!(
                    "state_dir = {:?}\nsocket = {:?}\ngrace_period_s = 5",
                    self.state, self.socket
                ),
                top
            ),
            root = merge_keys(
                &format!(
                    "name = \"data\"\nsource = {:?}\ndelay_ms = 20\nmodify_delay_ms = 200",
                    self.src
                ),
                extra_root
            ),
        );
        let p = self.dir.path().join("syncd.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A config with one local target `local` into `dst/`.
    pub fn local_config(&self, extra_root: &str) -> PathBuf {
        self.config(extra_root, &local_target("local", &self.dst, ""))
    }
}

/// A `[[sync.target]]` section for a local directory; `extra` lines override the defaults.
pub fn local_target(name: &str, dest: &Path, extra: &str) -> String {
    let defaults =
        format!("name = {name:?}\ndest = {dest:?}\nretry_initial_ms = 100\nretry_max_ms = 1000");
    format!("[[sync.target]]\n{}\n", merge_keys(&defaults, extra))
}

/// `key = value` lines of `defaults` not set in `extra`, then `extra`.
pub fn merge_keys(defaults: &str, extra: &str) -> String {
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let mut out: Vec<&str> = defaults
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .collect();
    out.extend(extra.lines());
    out.join("\n")
}

/// What a tree entry is, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { size: u64, content: Vec<u8> },
    Symlink(Vec<u8>),
    Other,
}

/// Every entry under `root`, by relative path (bytes), excluding rsync's partial dir.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name == ".rsync-partial" {
                continue;
            }
            let r = rel.join(&name);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let node = if m.file_type().is_symlink() {
                Node::Symlink(
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                stack.push(r.clone());
                Node::Dir
            } else if m.is_file() {
                Node::File {
                    size: m.size(),
                    content: std::fs::read(&p).unwrap_or_default(),
                }
            } else {
                Node::Other
            };
            out.insert(r.as_os_str().as_bytes().to_vec(), node);
        }
    }
    out
}

/// Assert that `dst` holds exactly what `src` holds (paths, types, sizes, content).
pub fn assert_same_tree(src: &Path, dst: &Path) {
    let a = snapshot(src);
    let b = snapshot(dst);
    if a != b {
        let mut diff = Vec::new();
        for (k, v) in &a {
            match b.get(k) {
                None => diff.push(format!("missing at target: {}", String::from_utf8_lossy(k))),
                Some(w) if w != v => diff.push(format!(
                    "differs: {} ({:?} vs {:?})",
                    String::from_utf8_lossy(k),
                    short(v),
                    short(w)
                )),
                _ => {}
            }
        }
        for k in b.keys() {
            if !a.contains_key(k) {
                diff.push(format!("extra at target: {}", String::from_utf8_lossy(k)));
            }
        }
        diff.truncate(40);
        panic!(
            "target differs from source ({} vs {} entries):\n{}",
            a.len(),
            b.len(),
            diff.join("\n")
        );
    }
}

fn short(n: &Node) -> String {
    match n {
        Node::File { size, .. } => format!("file {size} B"),
        other => format!("{other:?}"),
    }
}

/// A real rsync daemon on 127.0.0.1 with module `mod`, user `syncuser`, its own secrets file.
pub struct RsyncDaemon {
    pub child: Option<Child>,
    pub port: u16,
    pub module_path: PathBuf,
    pub password_file: PathBuf,
    pub conf: PathBuf,
    pub log: Log,
}

/// The password the fixture's rsync daemon accepts.
pub const RSYNC_PASSWORD: &str = "s3cret-Pw";

impl RsyncDaemon {
    /// Start a daemon serving `module_path`; `module_extra` lines go into the module section.
    pub fn start(dir: &Path, module_path: &Path, module_extra: &str) -> RsyncDaemon {
        Self::start_on(dir, module_path, module_extra, free_port())
    }

    /// Like [`RsyncDaemon::start`] on a given port.
    pub fn start_on(dir: &Path, module_path: &Path, module_extra: &str, port: u16) -> RsyncDaemon {
        let secrets = dir.join("rsyncd.secrets");
        std::fs::write(&secrets, format!("syncuser:{RSYNC_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let password_file = dir.join("rsync.password");
        std::fs::write(&password_file, format!("{RSYNC_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = dir.join("rsyncd.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        write!(
            f,
            "pid file = {dir}/rsyncd.pid\nuse chroot = yes\nmax connections = 20\n\n[mod]\npath = {module}\nread only = false\nmunge symlinks = no\nuid = root\ngid = root\nauth users = syncuser\nsecrets file = {secrets}\n{module_extra}\n",
            dir = dir.display(),
            module = module_path.display(),
            secrets = secrets.display(),
        )
        .unwrap();
        let mut d = RsyncDaemon {
            child: None,
            port,
            module_path: module_path.to_path_buf(),
            password_file,
            conf,
            log: Log::default(),
        };
        d.restart();
        d
    }

    /// (Re)start on the same port.
    pub fn restart(&mut self) {
        let mut child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", self.conf.display()))
            .arg(format!("--port={}", self.port))
            .arg("--address=127.0.0.1")
            .arg("--log-file=/dev/stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsync --daemon");
        self.log = Log::follow(child.stderr.take().unwrap(), "rsyncd");
        self.child = Some(child);
        if self
            .log
            .wait_for("listening on port", 0, Duration::from_secs(15))
            .is_none()
        {
            panic!("rsync daemon did not start:\n{}", self.log.text());
        }
    }

    /// Stop the daemon (kill and reap).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_reap(&mut c);
        }
    }

    /// Kill the daemon *and* the processes it forked for running transfers (they would
    /// otherwise finish on their own): a crash of the whole server.
    pub fn crash(&mut self) {
        let conf = format!("--config={}", self.conf.display());
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == conf.as_bytes()))
            })
            .collect();
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.stop();
    }

    /// DEST for syncd.
    pub fn dest(&self) -> String {
        "syncuser@127.0.0.1::mod".to_string()
    }

    /// A target section pointing at this daemon; `extra` lines override the defaults.
    pub fn target(&self, name: &str, extra: &str) -> String {
        let defaults = format!(
            "name = {name:?}\ndest = {dest:?}\nport = {port}\npassword_file = {pf:?}\ncontimeout_s = 2\ntimeout_s = 10\nretry_initial_ms = 200\nretry_max_ms = 1000",
            dest = self.dest(),
            port = self.port,
            pf = self.password_file,
        );
        format!("[[sync.target]]\n{}\n", merge_keys(&defaults, extra))
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real sshd on 127.0.0.1 with its own host key and an authorized client key.
pub struct Sshd {
    pub child: Child,
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub log: Log,
}

impl Sshd {
    /// Start sshd in `dir`, or `None` (with the reason printed) when sshd is not installed.
    pub fn start(dir: &Path) -> Sshd {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd missing: apt-get install openssh-server (tests/run does)"
        );
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        for k in [&host_key, &client_key] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen failed");
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_ed25519.pub"), &auth).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\nLogLevel INFO\n",
                hk = host_key.display(),
                auth = auth.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sshd");
        let log = Log::follow(child.stderr.take().unwrap(), "sshd");
        if log
            .wait_for("Server listening", 0, Duration::from_secs(15))
            .is_none()
        {
            kill_reap(&mut child);
            panic!("sshd did not start:\n{}", log.text());
        }
        Sshd {
            child,
            port,
            client_key,
            known_hosts,
            log,
        }
    }

    /// A target section for `user@127.0.0.1:path`.
    pub fn target(&self, name: &str, path: &Path) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        format!(
            "[[sync.target]]\nname = {name:?}\ndest = \"{user}@127.0.0.1:{path}\"\nport = {port}\nssh_args = [\"-i\", {key:?}, \"-o\", \"UserKnownHostsFile={kh}\", \"-o\", \"StrictHostKeyChecking=yes\"]\nretry_initial_ms = 200\nretry_max_ms = 5000\n",
            path = path.display(),
            port = self.port,
            key = self.client_key,
            kh = self.known_hosts.display(),
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_reap(&mut self.child);
    }
}

/// Write `content` to `path`, creating parents.
pub fn write(path: &Path, content: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

/// A tmpfs (or bind mount) mounted for a test (root needed); unmounted (lazily) on drop.
pub struct Tmpfs {
    path: PathBuf,
    mounted: bool,
    /// For a bind mount: the directory shown at `path`.
    bind_from: Option<PathBuf>,
}

impl Tmpfs {
    /// Bind-mount the existing directory `from` on the existing directory `path`: unmounting
    /// and binding again gives `path` back the same device and inode.
    pub fn bind(from: &Path, path: &Path) -> Tmpfs {
        let mut m = Tmpfs {
            path: path.to_path_buf(),
            mounted: false,
            bind_from: Some(from.to_path_buf()),
        };
        m.mount_again();
        m
    }

    /// Bind the same directory again after [`Tmpfs::unmount`].
    pub fn mount_again(&mut self) {
        let from = self
            .bind_from
            .as_ref()
            .expect("only a bind mount can be mounted again");
        let st = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount --bind on {} failed (root needed)",
            self.path.display()
        );
        self.mounted = true;
    }

    /// Mount a tmpfs of `size` (e.g. "8m") on the existing directory `path`.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        Self::mount_with(path, &format!("size={size}"))
    }

    /// Mount a tmpfs with mount options `opts` (e.g. "size=2m,ro").
    pub fn mount_with(path: &Path, opts: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs on {} failed (root needed)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
            mounted: true,
            bind_from: None,
        }
    }

    /// Unmount now, as an administrator would (fails if busy).
    pub fn unmount(&mut self) {
        let st = Command::new("umount")
            .arg(&self.path)
            .status()
            .expect("run umount");
        assert!(st.success(), "umount {} failed", self.path.display());
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// `GET url`: the status code and the body.
pub fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
pub fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name_and_labels} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `promtool check metrics` (Debian package prometheus) passes `metrics`.
pub fn assert_promtool_accepts(metrics: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
