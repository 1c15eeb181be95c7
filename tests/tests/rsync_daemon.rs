//! End-to-end against a real rsync daemon on 127.0.0.1 started by the fixture.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use syncd_tests::*;

fn module_dir(env: &Env) -> std::path::PathBuf {
    let m = env.dir.path().join("module");
    std::fs::create_dir(&m).unwrap();
    m
}

/// A daemon that writes as `nobody` into a module owned by `nobody`, in which `locked/` belongs
/// to root: every file under `locked/` is refused, nothing else. Returns the module, the daemon
/// and the fix (hand `locked/` to nobody). Write the source's `locked/` files before starting
/// syncd, so the startup full sync does not delete the empty `locked/` at the target.
fn refusing_daemon(env: &Env) -> (std::path::PathBuf, RsyncDaemon, impl Fn()) {
    let module = module_dir(env);
    std::fs::create_dir(module.join("locked")).unwrap();
    std::fs::set_permissions(
        module.join("locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    nix::unistd::chown(&module, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "uid = nobody\ngid = nogroup\n");
    let locked = module.join("locked");
    let fix = move || nix::unistd::chown(&locked, Some(nobody.uid), Some(nobody.gid)).unwrap();
    (module, rd, fix)
}

#[test]
fn operations_reach_an_rsync_daemon_target() {
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    write(&env.src.join("before/start.txt"), b"pre");
    let cfg = env.config("", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &module);

    write(&env.src.join("a/b/c.txt"), b"abc");
    // Symlinks, including one leaving the module, arrive exactly as they are.
    std::os::unix::fs::symlink("../outside-the-module", env.src.join("escaping-link")).unwrap();
    std::os::unix::fs::symlink("b/c.txt", env.src.join("a/inner-link")).unwrap();
    write(&env.src.join("#comment-like"), b"#");
    write(&env.src.join("a/b/c2.txt"), b"c2");
    d.settle();
    assert_same_tree(&env.src, &module);

    std::fs::rename(env.src.join("a"), env.src.join("a-renamed")).unwrap();
    write(&env.src.join("a-renamed/b/after.txt"), b"after rename");
    std::fs::remove_dir_all(env.src.join("before")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &module);
    assert!(
        !d.log.text().contains(RSYNC_PASSWORD),
        "the password leaked into the log"
    );
    assert!(
        !String::from_utf8_lossy(&d.ctl(&["--json", "status"]).stdout).contains(RSYNC_PASSWORD)
    );
}

#[test]
fn a_stream_of_changes_costs_one_rsync_per_pace_not_one_per_file() {
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let cfg = env.config("", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let since = now_ms();
    // One file every 5 ms for a second: a push to this daemon takes about 10 ms, so one rsync
    // per file (or per two) is what an unpaced worker would run.
    let started = std::time::Instant::now();
    let mut next = started;
    for i in 0..200 {
        write(&env.src.join(format!("s/{i:03}")), b"x");
        next += Duration::from_millis(5);
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    let took = started.elapsed();
    d.settle();
    assert_same_tree(&env.src, &module);
    // Every batch delivered is one event of the log.
    let batches = d
        .events()
        .iter()
        .filter(|e| e["kind"] == "delivered" && e["time_ms"].as_u64() >= Some(since))
        .count();
    // At most one batch start per 50 ms while the stream lasts, then the rest.
    let most = (took.as_millis() / 50) as usize + 3;
    assert!(
        batches <= most,
        "{batches} rsyncs for 200 files in {took:?}: more than one per 50 ms ({most})"
    );
}

#[test]
fn a_server_connection_limit_narrows_parallel_pushes_without_backing_off() {
    let env = Env::new();
    let module = module_dir(&env);
    let extra = format!(
        "max connections = 1\nlock file = {}",
        env.dir.path().join("rsyncd.lock").display()
    );
    let rd = RsyncDaemon::start(env.dir.path(), &module, &extra);
    // Slow pushes of 20 paths each, three allowed at once: they overlap, and the server
    // takes one connection at a time.
    let cfg = env.config(
        "",
        &rd.target(
            "d1",
            "workers = 3\nmax_batch = 20\nretry_initial_ms = 5000\nretry_max_ms = 5000\nrsync_args = [\"--bwlimit=2000\"]",
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..100 {
        write(&env.src.join(format!("f/{i:03}")), &vec![b'x'; 50_000]);
    }
    d.wait_idle(1);
    assert!(d.ctl(&["resume"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &module);
    let log = d.log.text();
    assert!(
        log.contains("the server limits connections"),
        "the pushes overlapped and one was refused:\n{log}"
    );
    assert!(
        !log.contains("backing off"),
        "our own connections are not an outage:\n{log}"
    );
}

#[test]
fn daemon_outage_means_backoff_then_everything_is_delivered() {
    let env = Env::new();
    let module = module_dir(&env);
    let mut rd = RsyncDaemon::start(env.dir.path(), &module, "");
    // Backoff long enough that status, read right after the failure, still sees it.
    let cfg = env.config(
        "",
        &rd.target("d1", "retry_initial_ms = 2000\nretry_max_ms = 3000"),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    rd.stop();
    for i in 0..100 {
        write(
            &env.src.join(format!("during-outage/{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    let st = d.wait_backoff("d1");
    let err = st["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("rsync exit 10"),
        "last_error names the failure: {st}"
    );
    assert!(st["pending"].as_u64().unwrap() > 0);
    assert_eq!(d.wait_idle(1), 4, "not idle while the target is down");
    rd.restart();
    d.settle();
    assert_same_tree(&env.src, &module);
    let st = d.target_status("d1");
    assert_eq!(st["state"], "running");
    assert_eq!(st["pending"], 0);
}

#[test]
fn refused_path_is_listed_failed_and_delivered_after_the_fix() {
    let env = Env::new();
    let (module, rd, fix) = refusing_daemon(&env);
    write(
        &env.src.join("locked/at-start.txt"),
        b"refused by the full sync",
    );
    let cfg = env.config(
        "",
        &rd.target(
            "d1",
            "max_attempts = 2\nretry_initial_ms = 50\nretry_max_ms = 100",
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    write(&env.src.join("ok1.txt"), b"fine");
    write(&env.src.join("locked/refused.txt"), b"refused");
    write(&env.src.join("ok2/nested.txt"), b"fine too");
    assert_eq!(
        d.wait_idle(60),
        3,
        "idle with failed paths: {}",
        d.log.text()
    );
    let out = d.ctl(&["failed"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("locked/refused.txt") && listed.contains("locked/at-start.txt"),
        "{listed}"
    );
    assert!(
        listed.contains("Permission denied"),
        "the reason is rsync's: {listed}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&d.ctl(&["--json", "failed"]).stdout).unwrap();
    assert_eq!(json["failed"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(d.target_status("d1")["failed"], 2);
    // Everything else of the same batches arrived.
    assert_eq!(std::fs::read(module.join("ok1.txt")).unwrap(), b"fine");
    assert_eq!(
        std::fs::read(module.join("ok2/nested.txt")).unwrap(),
        b"fine too"
    );
    // Fix the cause, retry.
    fix();
    assert!(d.ctl(&["retry-failed"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &module);
    assert_eq!(d.target_status("d1")["failed"], 0);
}

#[test]
fn two_targets_one_broken_the_other_converges() {
    let env = Env::new();
    let module = module_dir(&env);
    let mut rd = RsyncDaemon::start(env.dir.path(), &module, "");
    rd.stop();
    let targets = format!(
        "{}{}",
        local_target("good", &env.dst, ""),
        rd.target("broken", "retry_initial_ms = 2000\nretry_max_ms = 3000")
    );
    let cfg = env.config("", &targets);
    let d = Syncd::start(&cfg, &env.socket);
    for i in 0..200 {
        write(
            &env.src.join(format!("f{}/{i}.txt", i % 10)),
            format!("{i}").as_bytes(),
        );
    }
    let out = d.ctl(&["wait-idle", "--target", "good", "--timeout", "60"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same_tree(&env.src, &env.dst);
    let broken = d.target_status("broken");
    // In backoff, or in the middle of a probe.
    assert!(
        broken["state"] == "backoff" || broken["in_flight"].as_u64() > Some(0),
        "{broken}"
    );
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("rsync exit 10"),
        "{broken}"
    );
    assert!(broken["pending"].as_u64().unwrap() > 0);
    assert_eq!(d.target_status("good")["pending"], 0);
    rd.restart();
    d.settle();
    assert_same_tree(&env.src, &module);
}

#[test]
fn wrong_password_is_reported_not_retried_fast() {
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    std::fs::write(&rd.password_file, "wrong-password\n").unwrap();
    let cfg = env.config("", &rd.target("d1", "retry_max_ms = 60000"));
    let d = Syncd::start(&cfg, &env.socket);
    let st = d.wait_backoff("d1");
    let err = st["last_error"].as_str().unwrap();
    assert!(err.contains("auth failed"), "{err}");
    assert!(!err.contains("wrong-password") && !d.log.text().contains("wrong-password"));
    // Permanent errors wait the maximum backoff, not the first step.
    assert!(st["next_retry_ms"].as_u64().unwrap() > 20_000, "{st}");
}

#[test]
fn quick_mode_with_rsync_url_and_password_from_the_environment() {
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    write(&env.src.join("q.txt"), b"quick");
    let mut child = std::process::Command::new(bin("syncd"))
        .arg("--foreground")
        .arg("--source")
        .arg(&env.src)
        .arg("--target")
        .arg(format!("rsync://syncuser@127.0.0.1:{}/mod", rd.port))
        .arg("--target")
        .arg(&env.dst)
        .arg("--state-dir")
        .arg(&env.state)
        .arg("--socket")
        .arg(&env.socket)
        .env("RSYNC_PASSWORD", RSYNC_PASSWORD)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::follow(child.stderr.take().unwrap(), "syncd");
    assert!(
        log.wait_for("syncd ready", 0, Duration::from_secs(30))
            .is_some(),
        "{}",
        log.text()
    );
    write(&env.src.join("sub/after.txt"), b"after");
    let out = ctl(&env.socket, &["wait-idle", "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", log.text());
    let status = ctl(&env.socket, &["--json", "status"]);
    for text in [
        log.text(),
        String::from_utf8_lossy(&status.stdout).into_owned(),
    ] {
        assert!(
            !text.contains(RSYNC_PASSWORD),
            "the password leaked: {text}"
        );
    }
    assert_same_tree(&env.src, &module);
    assert_same_tree(&env.src, &env.dst);
    kill_reap(&mut child);
}

#[test]
fn parked_paths_are_retried_on_schedule() {
    let env = Env::new();
    let (module, rd, fix) = refusing_daemon(&env);
    write(&env.src.join("locked/x.txt"), b"x");
    let cfg = env.config(
        "",
        &rd.target("d1", "max_attempts = 1\nretry_failed_interval = 1"),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.wait_event_of("failed", 0);
    fix();
    // No retry-failed command: the schedule alone queues it again.
    d.wait_target("d1", Duration::from_secs(30), |t| t["failed"] == 0);
    d.settle();
    assert_same_tree(&env.src, &module);
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f[11] + f[12]) as f64 / 100.0
}

#[test]
fn paused_target_with_a_retrying_path_does_not_spin() {
    let env = Env::new();
    let (_module, rd, _fix) = refusing_daemon(&env);
    write(&env.src.join("locked/x.txt"), b"x");
    let cfg = env.config(
        "",
        &rd.target(
            "d1",
            "max_attempts = 1000\nretry_initial_ms = 100\nretry_max_ms = 200",
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    // The path failed and waits for its retry (exit 23: the target does not back off).
    d.wait_target("d1", Duration::from_secs(20), |t| {
        t["last_error"].is_string()
    });
    assert!(d.ctl(&["pause"]).status.success());
    let before = cpu_seconds(d.child.id());
    // Two seconds in which the path's retry time passes many times over, while paused.
    assert_eq!(d.wait_idle(2), 4);
    let used = cpu_seconds(d.child.id()) - before;
    assert!(
        used < 0.5,
        "syncd used {used:.2} s of CPU in 2 s while paused: a wake-up loop spins"
    );
}

#[test]
fn daemon_killed_in_the_middle_of_a_large_transfer_then_restarted() {
    let env = Env::new();
    let module = module_dir(&env);
    let mut rd = RsyncDaemon::start(env.dir.path(), &module, "");
    // Slow enough (4 MB/s) that the 24 MB file is still crossing when the server dies.
    let cfg = env.config("", &rd.target("d1", "rsync_args = [\"--bwlimit=4000\"]"));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write(&env.src.join("big.bin"), &big);
    for i in 0..20 {
        write(
            &env.src.join(format!("small/{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    // rsync writes into a temporary ".big.bin.XXXXXX" next to the final name.
    assert!(
        wait_for_entry(
            &module,
            |n| n.starts_with(".big.bin."),
            Duration::from_secs(30)
        ),
        "the transfer never started:\n{}",
        d.log.text()
    );
    rd.crash();
    let st = d.wait_backoff("d1");
    assert!(st["last_error"].is_string(), "{st}");
    assert_eq!(d.wait_idle(1), 4, "not idle while the server is down");
    rd.restart();
    d.settle();
    assert_same_tree(&env.src, &module);
}

#[test]
fn target_that_accepts_and_never_speaks_is_cut_off_by_the_deadline_without_pile_up() {
    let env = Env::new();
    let module = module_dir(&env);
    // A listener that accepts every connection and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
    let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let silent = {
        let (held, closing) = (held.clone(), closing.clone());
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                if closing.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                held.0.lock().unwrap().push(c);
                held.1.notify_all();
            }
        })
    };
    let password_file = env.dir.path().join("rsync.password");
    std::fs::write(&password_file, format!("{RSYNC_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Batches are cut off by syncd's deadline (1 s). A batch cut off owes its directory a full
    // sync (to clean up after it), which has no deadline (it may rightly take hours): rsync's
    // own I/O timeout (timeout_s) ends that one.
    let target = format!(
        "[[sync.target]]\nname = \"silent\"\ndest = \"syncuser@127.0.0.1::mod\"\nport = {port}\npassword_file = {password_file:?}\ncontimeout_s = 600\ntimeout_s = 2\npush_deadline_s = 1\nretry_initial_ms = 100\nretry_max_ms = 300\nworkers = 2\n"
    );
    let cfg = env.config_top("startup_resync = false", "", &target);
    let d = Syncd::start(&cfg, &env.socket);
    for i in 0..50 {
        write(&env.src.join(format!("f{i}.txt")), b"x");
    }
    // Several failures in a row; never more rsyncs than workers.
    let mut most = 0;
    d.each_backoff("silent", 4, |_| {
        most = most.max(children_named(d.child.id(), "rsync"));
    });
    assert!(
        d.log
            .text()
            .contains("rsync did not finish within push_deadline_s = 1 and was killed"),
        "{}",
        d.log.text()
    );
    // The password travels in a file, never in a command line anyone can read with ps. Read
    // the command line while an rsync is connected (and hanging).
    let n = held.0.lock().unwrap().len();
    let (guard, _) = held
        .1
        .wait_timeout_while(held.0.lock().unwrap(), Duration::from_secs(30), |h| {
            h.len() == n
        })
        .unwrap();
    drop(guard);
    let cmdlines = rsync_cmdlines(d.child.id());
    assert!(
        !cmdlines.is_empty(),
        "an rsync is hanging on the silent target"
    );
    for c in &cmdlines {
        assert!(c.contains("--password-file="), "{c}");
        // Nagle against delayed ACKs costs every daemon push ~80 ms of handshake otherwise.
        assert!(c.contains("--sockopts=TCP_NODELAY"), "{c}");
        assert!(
            !c.contains(RSYNC_PASSWORD),
            "password on a command line: {c}"
        );
    }
    assert!(most <= 2, "{most} rsync processes at once with workers = 2");
    let st = d.target_status("silent");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("push_deadline_s") || e.contains("timeout")),
        "{st}"
    );
    assert!(
        held.0.lock().unwrap().len() >= 4,
        "each attempt reached the listener"
    );
    // The real server takes the port over: everything is delivered.
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    silent.join().unwrap();
    drop(held.0.lock().unwrap().drain(..));
    let _rd = RsyncDaemon::start_on(env.dir.path(), &module, "", port);
    d.settle();
    assert_same_tree(&env.src, &module);
}

#[test]
fn target_disk_full_is_reported_retried_and_delivered_once_space_is_freed() {
    let env = Env::new();
    let module = module_dir(&env);
    let _fs = Tmpfs::mount(&module, "4m");
    let filler = module.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[7u8; 65536]).is_ok() {}
    }
    let rd = RsyncDaemon::start(env.dir.path(), &module, "exclude = filler");
    let cfg = env.config_top(
        "startup_resync = false",
        "",
        &rd.target("d1", "retry_initial_ms = 300\nretry_max_ms = 1000"),
    );
    let d = Syncd::start(&cfg, &env.socket);
    for i in 0..20 {
        write(&env.src.join(format!("data/{i}.bin")), &vec![b'd'; 100_000]);
    }
    // Status names the cause.
    d.wait_target("d1", Duration::from_secs(30), |t| {
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device"))
    });
    assert_eq!(d.wait_idle(1), 4, "not idle while the target is full");
    // Retried with backoff, not in a loop: a handful of attempts per second at most.
    let attempts_before = d.log.text().matches("No space left on device").count();
    std::fs::remove_file(&filler).unwrap();
    d.settle();
    let attempts = d.log.text().matches("No space left on device").count();
    println!("disk full: {attempts_before} failing attempts logged before space was freed, {attempts} in all");
    let mut src = snapshot(&env.src);
    let dst = snapshot(&module);
    src.retain(|k, _| !k.starts_with(b"filler"));
    assert_eq!(src.len(), dst.len(), "every file delivered");
    assert_same_tree(&env.src, &module);
}

/// Command lines of the rsync processes `ppid` runs right now.
fn rsync_cmdlines(ppid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                st.contains("(rsync)")
                    && st
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().nth(1))
                        == Some(ppid.to_string().as_str())
            })
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

#[test]
fn on_failure_is_told_each_parked_path_with_rsyncs_reason() {
    let env = Env::new();
    let (_module, rd, _fix) = refusing_daemon(&env);
    let (prog, told) = hook_recorder(env.dir.path());
    let cfg = env.config(
        "",
        &rd.target(
            "d1",
            &format!("max_attempts = 1\non_failure = [{:?}]", prog),
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    write(&env.src.join("locked/x.txt"), b"x");
    write(&env.src.join("fine.txt"), b"fine");
    assert_eq!(d.wait_idle(60), 3, "idle with a failed path");
    let read = || std::fs::read_to_string(&told).unwrap_or_default();
    let told_it = wait_for_change_in(env.dir.path(), Duration::from_secs(30), || {
        let text = read();
        text.contains("locked/x.txt") && text.contains("failure d1 ")
    });
    let text = read();
    assert!(told_it, "on_failure was told: {text:?}\n{}", d.log.text());
    assert!(text.contains("Permission denied"), "rsync's reason: {text}");
    assert!(!text.contains("fine.txt"), "{text}");
    // syncctl log says the same.
    let log = d.ctl(&["log"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.lines()
            .any(|l| l.contains("data/d1 failed 1 path(s): locked/x.txt")
                && l.contains("Permission denied")),
        "{log}"
    );
}

/// Make every kind of change the catch-up must find, in `src` as set up by the test below.
fn change_everything_kind_by_kind(src: &std::path::Path) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("append"))
        .unwrap()
        .write_all(b"more")
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("truncate"))
        .unwrap()
        .set_len(3)
        .unwrap();
    std::fs::remove_file(src.join("delete")).unwrap();
    std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // Same size, and the mtime put back (utimensat): only the ctime tells.
    let mtime = std::fs::metadata(src.join("rewrite"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::write(src.join("rewrite"), b"9876543210").unwrap();
    std::fs::File::options()
        .write(true)
        .open(src.join("rewrite"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::remove_file(src.join("became-dir")).unwrap();
    write(&src.join("became-dir/child"), b"c");
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("append", src.join("link")).unwrap();
    std::fs::rename(src.join("olddir"), src.join("newdir")).unwrap();
    write(&src.join("tree/a/b"), b"b");
}

#[test]
fn changes_of_every_kind_made_while_down_arrive_at_restart_without_a_full_sync() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    for p in [
        "append",
        "truncate",
        "delete",
        "chmod",
        "rewrite",
        "became-dir",
        "same",
    ] {
        write(&env.src.join(p), b"0123456789");
    }
    write(&env.src.join("olddir/inner/f"), b"f");
    std::os::unix::fs::symlink("same", env.src.join("link")).unwrap();
    let cfg = env.config("", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &module);
    assert_eq!(d.stop(), Some(0));

    change_everything_kind_by_kind(&env.src);
    let restarted = now_ms();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &module);
    let mode = std::fs::metadata(module.join("chmod")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600, "the chmod arrived");
    assert_eq!(
        d.full_syncs_since(restarted),
        Vec::<serde_json::Value>::new()
    );
    let caught = d.wait_event_of("caught-up", restarted);
    assert!(
        caught["paths"].as_u64().unwrap() >= 15,
        "every change found: {caught}"
    );
}

/// `syncctl --json verify ARGS…`: exit code and the document.
fn verify(d: &Syncd, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json", "verify"];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// The (kind, path) pairs a verify listed, sorted.
fn drift(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["paths"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["kind"].as_str().unwrap().into(),
                p["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn verify_lists_what_differs_at_the_target_changes_nothing_and_is_clean_after_resync() {
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    for (p, c) in [
        ("keep.txt", "keep"),
        ("change.txt", "change"),
        ("delete-me.txt", "delete me"),
        ("same-size.txt", "aaaa"),
        ("sub/inner.txt", "inner"),
    ] {
        write(&env.src.join(p), c.as_bytes());
    }
    let cfg = env.config("", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let (code, doc) = verify(&d, &[]);
    assert_eq!((code, drift(&doc)), (0, vec![]), "{doc}");
    assert_eq!(doc["drift"], false);

    // Behind syncd's back, at the target.
    std::fs::remove_file(module.join("delete-me.txt")).unwrap();
    write(&module.join("extra.txt"), b"not at the source");
    write(&module.join("change.txt"), b"changed at the target");
    let same = module.join("same-size.txt");
    let mtime = std::fs::metadata(&same).unwrap().modified().unwrap();
    write(&same, b"bbbb");
    std::fs::File::options()
        .write(true)
        .open(&same)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let target_before = snapshot(&module);

    let s = |k: &str, p: &str| (k.to_string(), p.to_string());
    let (code, doc) = verify(&d, &[]);
    let quick = vec![
        s("extra", "extra.txt"),
        s("missing", "delete-me.txt"),
        s("size", "change.txt"),
    ];
    assert_eq!((code, drift(&doc)), (1, quick.clone()), "{doc}");
    // Same size and time: only a comparison of content sees it.
    let (code, doc) = verify(&d, &["--checksum"]);
    let mut by_content = quick;
    by_content.insert(0, s("content", "same-size.txt"));
    assert_eq!((code, drift(&doc)), (1, by_content), "{doc}");
    // One directory only, and it is in sync.
    let sub = env.src.join("sub");
    let (code, doc) = verify(&d, &["--target", "d1", sub.to_str().unwrap()]);
    assert_eq!((code, drift(&doc)), (0, vec![]), "{doc}");
    assert_eq!(doc["targets"][0]["dir"], "sub");
    assert_eq!(
        snapshot(&module),
        target_before,
        "verify changed the target"
    );
    // The human form names each path.
    let text = String::from_utf8(d.ctl(&["verify"]).stdout).unwrap();
    assert!(
        text.contains("3 path(s) differ") && text.contains("extra      extra.txt"),
        "{text}"
    );

    assert!(d.ctl(&["resync", "--target", "d1"]).status.success());
    d.settle();
    let (code, doc) = verify(&d, &["--checksum"]);
    // rsync's quick check cannot see same-size.txt: the full sync leaves it, --checksum tells.
    assert_eq!(
        (code, drift(&doc)),
        (1, vec![s("content", "same-size.txt")]),
        "{doc}"
    );
    let (code, doc) = verify(&d, &[]);
    assert_eq!((code, drift(&doc)), (0, vec![]), "{doc}");
    drop(rd);
    let (code, doc) = verify(&d, &[]);
    assert_eq!(code, 2, "{doc}");
    let err = doc["targets"][0]["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("not compared:"), "{doc}");
}

#[test]
fn names_the_daemon_refuses_are_parked_within_half_a_minute_and_told() {
    // The default retry policy (1 s doubling to 300 s, 10 attempts) would take about 8.5
    // minutes to park them; an error retrying cannot fix gets three quick attempts.
    let env = Env::new();
    let module = module_dir(&env);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "exclude = refused_*\n");
    let (prog, told) = hook_recorder(env.dir.path());
    let extra = format!(
        "retry_initial_ms = 1000\nretry_max_ms = 300000\nmax_attempts = 10\non_failure = [{prog:?}]"
    );
    let d = Syncd::start(&env.config("", &rd.target("d1", &extra)), &env.socket);
    d.settle();
    let started = std::time::Instant::now();
    for i in 0..5 {
        write(&env.src.join(format!("refused_{i}")), b"never accepted");
    }
    write(&env.src.join("fine.txt"), b"fine");
    // Before they are parked, `failed` lists them as retrying, with what failed and when next:
    // once each has failed a first time (journaled before it is logged).
    for i in 0..5 {
        let first_failure = d.log.wait_until(0, Duration::from_secs(30), |l| {
            l.contains("path failed; will retry") && l.contains(&format!("path=refused_{i} "))
        });
        assert!(
            first_failure.is_some(),
            "refused_{i} never failed:\n{}",
            d.log.text()
        );
    }
    let out = d.ctl(&["--json", "failed"]);
    let retrying: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        retrying["retrying"].as_array().map(Vec::len),
        Some(5),
        "{retrying}"
    );
    assert_eq!(
        retrying["failed"].as_array().map(Vec::len),
        Some(0),
        "{retrying}"
    );
    let r = &retrying["retrying"][0];
    assert!(r["attempts"].as_u64() >= Some(1), "{r}");
    assert!(r["next_retry_ms"].as_u64() <= Some(5000), "{r}");
    assert!(
        r["last_error"].as_str().unwrap().contains("daemon refused"),
        "{r}"
    );
    let text = String::from_utf8_lossy(&d.ctl(&["failed"]).stdout).into_owned();
    assert!(text.contains("retrying: "), "{text}");
    let read = || std::fs::read_to_string(&told).unwrap_or_default();
    let all_told = wait_for_change_in(env.dir.path(), Duration::from_secs(30), || {
        (0..5).all(|i| read().contains(&format!("refused_{i}")))
    });
    let took = started.elapsed();
    assert!(
        all_told,
        "on_failure told of every refused name within 30 s: {:?}\n{}",
        read(),
        d.log.text()
    );
    assert!(
        read().contains("daemon refused to receive"),
        "rsync's reason: {}",
        read()
    );
    assert!(took < Duration::from_secs(30), "parked after {took:?}");
    let failed = d.ctl(&["failed"]);
    let listed = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains("3 attempt(s)"))
            .count(),
        5,
        "{listed}"
    );
    assert!(module.join("fine.txt").exists(), "the rest flows");
    assert_eq!(d.wait_idle(10), 3, "idle with failed paths");
}
