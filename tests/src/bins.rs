//! The binaries under test and process helpers: where they are, spawning, killing and reaping.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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

/// Run syncctl with `--socket`; arguments are `&str`s, or paths that need not be UTF-8.
pub fn ctl<S: AsRef<std::ffi::OsStr>>(socket: &Path, args: &[S]) -> Output {
    Command::new(bin("syncctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run syncctl")
}

/// The installed rsync's version (major, minor, patch): some expectations about what rsync
/// saves (not what syncd delivers) depend on it.
pub fn rsync_version() -> (u32, u32, u32) {
    let out = Command::new("rsync")
        .arg("--version")
        .output()
        .expect("rsync --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("0.0.0");
    let mut n = v
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}
