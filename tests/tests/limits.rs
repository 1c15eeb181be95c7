//! Kernel limits: inotify queue overflow and the watch limit. These lower system-wide sysctls for
//! a moment (restored on drop), so this file's tests run one at a time, and cargo runs test
//! binaries one after another.

use std::sync::Mutex;
use std::time::Duration;

use syncd_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// Sets a sysctl under /proc/sys and restores the old value on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Option<Sysctl> {
        let old = std::fs::read_to_string(path).ok()?;
        if std::fs::write(path, value).is_err() {
            eprintln!("cannot write {path} (not root?)");
            return None;
        }
        Some(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

#[test]
fn queue_overflow_catches_the_roots_up_without_a_full_sync_and_converges() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    // A second root with its own target, which the overflow must leave alone.
    let (src2, dst2) = (env.dir.path().join("src2"), env.dir.path().join("dst2"));
    std::fs::create_dir(&src2).unwrap();
    std::fs::create_dir(&dst2).unwrap();
    for i in 0..50 {
        write(&src2.join(format!("calm/{i}.txt")), b"calm");
    }
    let cfg = env.config(
        "",
        &format!(
            "{}\n[[sync]]\nname = \"other\"\nsource = {src2:?}\ndelay_ms = 20\n{}",
            local_target("local", &env.dst, ""),
            local_target("other", &dst2, "")
        ),
    );
    // The limit applies when the inotify instance is created: lower it around syncd's start.
    let limit = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "32")
        .expect("root is needed to lower the inotify queue limit");
    let d = Syncd::start(&cfg, &env.socket);
    drop(limit);
    d.settle();
    assert_same_tree(&src2, &dst2);
    // A stalled daemon (SIGSTOP) cannot read: the kernel queue of 32 events overflows.
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    let stopped = now_ms();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    for i in 0..300 {
        write(&env.src.join(format!("o{}/{i}.txt", i % 40)), b"overflow");
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // The overflow is answered by a catch-up from the index (of both roots: they share the
    // kernel queue), not by a full sync.
    d.wait_event(std::time::Duration::from_secs(30), |e| {
        e["kind"] == "caught-up"
            && e["target"] == "data/local"
            && e["time_ms"].as_u64().is_some_and(|t| t >= stopped)
    });
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(d.full_syncs_since(stopped), Vec::<serde_json::Value>::new());
    // Watching still works afterwards, including in directories created during the overflow.
    write(&env.src.join("o7/after.txt"), b"after");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // The other root shares the kernel queue, so it was caught up too, with no full sync.
    // (Its files are pushed again all the same: written within seconds of the index, they
    // are racy, see catchup::racy.)
    assert_same_tree(&src2, &dst2);
    assert_eq!(d.target_status("other")["failed"], 0);
}

#[test]
fn watch_limit_is_reported_and_the_root_converges_by_scheduled_resyncs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    for i in 0..60 {
        write(&env.src.join(format!("dir{i}/sub/f.txt")), b"x");
    }
    let cfg = env.config(
        "full_resync_interval_s = 1",
        &local_target("local", &env.dst, ""),
    );
    let in_use = count_watches();
    let limit = Sysctl::set(
        "/proc/sys/fs/inotify/max_user_watches",
        &(in_use + 30).to_string(),
    )
    .expect("root is needed to lower the watch limit");
    let d = Syncd::start(&cfg, &env.socket);
    drop(limit);
    let st = d.wait_status(Duration::from_secs(10), |s| {
        s["roots"][0]["state"] == "scheduled-resync"
    });
    let root = &st["roots"][0];
    let reason = root["reason"].as_str().unwrap();
    assert!(
        reason.contains("fs.inotify.max_user_watches") && reason.contains("121 directories"),
        "{reason}"
    );
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // A change deep in the unwatched part still arrives, through the scheduled full resync.
    // Two full syncs end after the writes: the second began after them.
    let written = now_ms();
    for i in 0..60 {
        write(&env.src.join(format!("dir{i}/sub/g.txt")), b"later");
    }
    let events = Stream::events(&d.socket);
    let full_sync_since = |t: u64| {
        move |e: &serde_json::Value| {
            e["kind"] == "full-sync" && e["time_ms"].as_u64().is_some_and(|at| at >= t)
        }
    };
    let (first, _) = events
        .next(0, Duration::from_secs(20), full_sync_since(written))
        .expect("a full sync after the writes");
    assert!(
        events
            .next(first + 1, Duration::from_secs(20), full_sync_since(written))
            .is_some(),
        "a second full sync after the writes\n{}",
        events.text()
    );
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

/// Inotify watches currently held by all processes (from /proc/*/fdinfo).
fn count_watches() -> usize {
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(s) = std::fs::read_to_string(fd.path()) {
                n += s.lines().filter(|l| l.starts_with("inotify wd:")).count();
            }
        }
    }
    n
}

#[test]
fn full_state_filesystem_is_reported_and_recovered_from_without_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    std::fs::create_dir_all(&env.state).unwrap();
    let _mount = Tmpfs::mount(&env.state, "8m");
    let d = Syncd::start(&env.local_config(""), &env.socket);
    d.settle();
    // Fill the state filesystem.
    let filler = env.state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 65536]).is_ok() {}
    }
    let from = d.log.len();
    for i in 0..50 {
        write(&env.src.join(format!("while-full/{i}.txt")), b"x");
    }
    // Status reports it: the cause ("No space left on device") or, while an old handle
    // drains, the reopen attempt.
    d.wait_target("local", Duration::from_secs(20), |t| {
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("journal"))
    });
    // And the log names the cause.
    assert!(
        d.log
            .wait_for("No space left on device", from, Duration::from_secs(20))
            .is_some(),
        "{}",
        d.log.text()
    );
    assert_eq!(
        d.wait_idle(1),
        4,
        "not idle while changes cannot be journaled"
    );
    // Space comes back: the journal is reopened and everything converges, no restart.
    let freed = now_ms();
    std::fs::remove_file(&filler).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // Changes may have been missed while nothing could be journaled: the root is resynced.
    d.wait_event_of("full-sync", freed);
    assert!(d.target_status("local")["last_error"].is_null());
}

/// `syncd --foreground` on `cfg` must fail at once with a message containing `needles`.
fn assert_start_refused(env: &Env, cfg: &std::path::Path, needles: &[&str]) {
    let out = std::process::Command::new(bin("syncd"))
        .arg("--foreground")
        .arg("--config")
        .arg(cfg)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must refuse to start: {err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
    assert!(!env.socket.exists(), "nothing may start");
}

#[test]
fn state_directory_full_or_read_only_at_start_is_a_clear_error() {
    let env = Env::new();
    std::fs::create_dir_all(&env.state).unwrap();
    let cfg = env.local_config("");
    {
        let _full = Tmpfs::mount(&env.state, "2m");
        let mut f = std::fs::File::create(env.state.join("filler")).unwrap();
        use std::io::Write;
        while f.write_all(&[0u8; 65536]).is_ok() {}
        drop(f);
        assert_start_refused(
            &env,
            &cfg,
            &["state directory", "No space left on device", "state_dir"],
        );
    }
    {
        let _ro = Tmpfs::mount_with(&env.state, "size=2m,ro");
        assert_start_refused(
            &env,
            &cfg,
            &["state directory", "Read-only file system", "state_dir"],
        );
    }
    // Fixed: it starts.
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
}

#[test]
fn target_down_while_200_000_paths_change_keeps_them_in_the_journal_not_in_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    // Source and target in memory: the figures measure syncd, not this machine's disk (a small
    // file costs a 4 KiB page here).
    let _src_fs = Tmpfs::mount(&env.src, "1500m");
    let _module_fs = Tmpfs::mount(&module, "1500m");
    let mut rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let cfg = env.config_top(
        "startup_resync = false",
        "",
        &rd.target("remote", "retry_initial_ms = 500\nretry_max_ms = 1000"),
    );
    // Room in the kernel queue for every event of the burst: the paths must go through the
    // journal one by one, not collapse into an overflow resync.
    let queue = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "2000000")
        .expect("root is needed to raise the inotify queue limit");
    let d = Syncd::start(&cfg, &env.socket);
    drop(queue);
    d.settle();
    rd.stop();
    let started = std::time::Instant::now();
    const DIRS: usize = 200;
    const FILES: usize = 1000;
    for dir in 0..DIRS {
        let p = env.src.join(format!("d{dir:03}"));
        std::fs::create_dir(&p).unwrap();
        for f in 0..FILES {
            std::fs::write(p.join(format!("f{f:04}")), b"x").unwrap();
        }
    }
    let wrote = started.elapsed();
    // All journaled: pending counts every path, the daemon waits for the target.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let expected = (DIRS * FILES + DIRS) as u64;
    loop {
        let pending = d.target_status("remote")["pending"].as_u64().unwrap();
        if pending == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} of {expected} paths journaled"
        );
        assert_eq!(d.wait_idle(1), 4);
    }
    let journaled = started.elapsed();
    let rss = rss_kib(d.child.id());
    let peak = peak_rss_kib(d.child.id());
    println!(
        "200,000 paths with the target down: written in {:.1} s, journaled in {:.1} s; RSS {} MiB, peak {} MiB",
        wrote.as_secs_f64(),
        journaled.as_secs_f64(),
        rss / 1024,
        peak / 1024
    );
    assert!(
        peak < 150 * 1024,
        "peak RSS {peak} KiB while the target is down"
    );
    rd.restart();
    let out = d.ctl(&["wait-idle", "--timeout", "600"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let peak = peak_rss_kib(d.child.id());
    println!(
        "delivered in {:.1} s after the target came back; peak RSS {} MiB",
        started.elapsed().as_secs_f64() - journaled.as_secs_f64(),
        peak / 1024
    );
    assert!(peak < 150 * 1024, "peak RSS {peak} KiB while delivering");
    let t = std::time::Instant::now();
    assert_same_tree(&env.src, &module);
    println!("compared in {:.1} s", t.elapsed().as_secs_f64());
}
