//! Faults injected through a fake `rsync` on PATH that wraps the real one: a hang, a death by
//! signal, a slow run, a push held until released. Everything else is real.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use syncd_tests::*;

fn real_rsync() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("rsync"))
        .find(|p| p.exists())
        .expect("rsync on PATH")
}

/// A directory holding the fake rsync; flag files in `flags` switch faults on.
struct Fake {
    bin: PathBuf,
    flags: PathBuf,
}

impl Fake {
    fn new(dir: &Path) -> Fake {
        let bin = dir.join("fakebin");
        let flags = dir.join("flags");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&flags).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             case \"$1\" in --version) exec {real} \"$@\";; esac\n\
             if [ -e {f}/no-link-dest ]; then for a in \"$@\"; do shift; case \"$a\" in --link-dest=*) ;; *) set -- \"$@\" \"$a\";; esac; done; fi\n\
             [ -e {f}/hang ] && exec sleep \"$(cat {f}/hang)\"\n\
             [ -e {f}/die ] && kill -9 $$\n\
             [ -e {f}/slow ] && : > {f}/slow-started && sleep 2\n\
             if [ -e {f}/pause-after ]; then {real} \"$@\"; rc=$?; : > {f}/paused; timeout 60 cat {f}/release > /dev/null; exit $rc; fi\n\
             if [ -e {f}/after ]; then {real} \"$@\"; rc=$?; echo \"$$ $rc\" > {f}/finished; exec sleep 3600; fi\n\
             if [ -e {f}/hold ]; then\n\
               l=$(mktemp {f}/list.XXXXXX); cat > \"$l\"; tr '\\0' '\\n' < \"$l\" >> {f}/lists\n\
               if tr '\\0' '\\n' < \"$l\" | grep -qxF \"./$(cat {f}/hold)\"; then\n\
                 : > {f}/held; timeout 60 cat {f}/release > /dev/null\n\
               fi\n\
               exec {real} \"$@\" < \"$l\"\n\
             fi\n\
             exec {real} \"$@\"\n",
            real = real_rsync().display(),
            f = flags.display()
        );
        let p = bin.join("rsync");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { bin, flags }
    }

    fn path_env(&self) -> OsString {
        let mut p = OsString::from(self.bin.as_os_str());
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap());
        p
    }

    fn set(&self, flag: &str, on: bool) {
        self.set_to(flag, on, "");
    }

    /// Switch a flag; `hang`'s content is how long the fake sleeps (tells tests apart).
    fn set_to(&self, flag: &str, on: bool, content: &str) {
        let f = self.flags.join(flag);
        if on {
            std::fs::write(f, content).unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn start(env: &Env, fake: &Fake, target_extra: &str) -> Syncd {
    start_top(env, fake, "", target_extra).0
}

/// Start syncd with the fake rsync first on PATH; `top` lines go into the config's top level.
fn start_top(env: &Env, fake: &Fake, top: &str, target_extra: &str) -> (Syncd, std::path::PathBuf) {
    let cfg = env.config_top(top, "", &local_target("local", &env.dst, target_extra));
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    d.settle();
    (d, cfg)
}

/// SIGTERM `d`: it must exit cleanly within `limit` (its grace period and a margin); returns
/// how long it took.
fn stop_within(d: Syncd, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    assert_eq!(d.stop(), Some(0));
    let took = started.elapsed();
    assert!(took < limit, "exits within its grace period: took {took:?}");
    took
}

#[test]
fn hung_rsync_is_killed_at_the_deadline_and_the_batch_retried() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let d = start(&env, &fake, "push_deadline_s = 1");
    fake.set_to("hang", true, "1000");
    write(&env.src.join("h.txt"), b"hang");
    let st = d.wait_backoff("local");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("push_deadline_s"),
        "{st}"
    );
    assert_eq!(st["pending"], 1);
    // After several deadline kills, rsyncs (here: their sleep) do not pile up: at most the one
    // in flight exists.
    d.wait_backoffs("local", 2);
    let parent = d.child.id().to_string();
    let procs = std::process::Command::new("pgrep")
        .args(["-P", &parent, "-f", "sleep 1000"])
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&procs.stdout).lines().count();
    assert!(
        n <= 1,
        "{n} hung rsyncs alive: killed pushes left processes behind"
    );
    fake.set("hang", false);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn rsync_killed_by_a_signal_is_never_counted_as_delivered() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let d = start(&env, &fake, "");
    fake.set("die", true);
    write(&env.src.join("k.txt"), b"killed");
    let st = d.wait_backoff("local");
    assert!(
        st["last_error"].as_str().unwrap().contains("signal 9"),
        "{st}"
    );
    assert_eq!(st["pending"], 1, "{st}");
    assert_eq!(st["delivered"], 0, "{st}");
    fake.set("die", false);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn sigterm_lets_a_running_push_finish_within_the_grace_period() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let d = start(&env, &fake, "");
    fake.set("slow", true);
    write(&env.src.join("slow.txt"), b"slow push");
    d.wait_push("local");
    // The push takes two seconds; the grace period (5 s in the fixture) covers it.
    stop_within(d, Duration::from_secs(5));
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn sigterm_kills_a_push_that_outlives_the_grace_period_and_keeps_its_paths() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let (d, cfg) = start_top(
        &env,
        &fake,
        "grace_period_s = 1\nstartup_resync = false",
        "",
    );
    fake.set_to("hang", true, "1001");
    write(&env.src.join("stuck.txt"), b"stuck");
    d.wait_push("local");
    stop_within(d, Duration::from_secs(4));
    assert!(snapshot(&env.dst).is_empty());
    fake.set("hang", false);
    // Nothing was confirmed: the journal still owes the path (no startup resync to help).
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn kill_9_after_rsync_finished_but_before_its_paths_left_the_journal_loses_nothing() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    // No startup resync: after the crash only the journal can say what is owed.
    let (d, cfg) = start_top(&env, &fake, "startup_resync = false", "");
    // The fake runs the real rsync, then reports on a FIFO and never exits: syncd is killed
    // with the transfer done and its paths still in the journal.
    let fifo = fake.flags.join("finished");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Everything journaled first, so one push carries it all.
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..50 {
        write(
            &env.src.join(format!("a/{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    assert_eq!(d.wait_idle(1), 4);
    assert_eq!(d.target_status("local")["pending"], 51);
    fake.set("after", true);
    assert!(d.ctl(&["resume"]).status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(reader));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the push never finished")
        .unwrap();
    let mut words = report.split_whitespace();
    let wrapper: i32 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("0"), "the real rsync succeeded");
    assert_same_tree(&env.src, &env.dst);
    d.kill9();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wrapper),
        nix::sys::signal::Signal::SIGKILL,
    );
    fake.set("after", false);
    // Restarted with every push failing: what the journal still owes is visible.
    fake.set("die", true);
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    d.wait_backoff("local");
    assert_eq!(
        d.target_status("local")["pending"],
        51,
        "the 50 files and their directory are still owed"
    );
    fake.set("die", false);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn sigterm_under_load_exits_within_the_grace_period_and_keeps_everything_unconfirmed() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let (d, cfg) = start_top(
        &env,
        &fake,
        "grace_period_s = 2\nstartup_resync = false",
        "workers = 2\nmax_batch = 200",
    );
    // Every push takes two seconds or more: at SIGTERM some are running, most are waiting.
    fake.set("slow", true);
    for i in 0..3000 {
        write(
            &env.src.join(format!("load/{}/{i}.bin", i % 30)),
            &vec![b'x'; 1000 + i % 5000],
        );
    }
    d.wait_push("local");
    let took = stop_within(d, Duration::from_secs(4));
    println!(
        "SIGTERM under load: exited in {} ms (grace period 2 s)",
        took.as_millis()
    );
    fake.set("slow", false);
    // Only the journal knows what was seen and not confirmed.
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn an_interrupted_push_owes_its_directory_a_full_sync_even_across_kill_9() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    // No startup resync: after the crash only the journal can say what is owed.
    let (d, cfg) = start_top(&env, &fake, "startup_resync = false", "");
    write(&env.src.join("d/keep.txt"), b"keep");
    d.settle();
    // A leftover at the target that only a full sync of `d` removes (like the temporary file
    // a killed transfer leaves behind).
    write(&env.dst.join("d/.keep.txt.Xy12Ab"), b"partial");
    assert!(d.ctl(&["pause"]).status.success());
    write(&env.src.join("d/a.txt"), b"a");
    write(&env.src.join("d/b.txt"), b"b");
    d.wait_idle(1);
    // The push is killed by a signal: interrupted, so `d` is owed a full sync.
    fake.set("die", true);
    assert!(d.ctl(&["resume"]).status.success());
    d.wait_backoff("local");
    // Killed as soon as the worker acted on the result: the owed sync must already be on disk.
    d.kill9();
    fake.set("die", false);
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    d.settle();
    assert!(
        !env.dst.join("d/.keep.txt.Xy12Ab").exists(),
        "the owed full sync of d ran after the restart"
    );
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_path_waits_while_a_push_above_or_below_it_runs() {
    // Two rsyncs on one part of the tree would race: a push of `d/sub/f` that read the source
    // before `d` was renamed away could recreate `d/sub/f` after the push of `d` deleted it.
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    let d = start(&env, &fake, "workers = 4");
    write(&env.src.join("d/sub/old"), b"old");
    d.settle();
    // The held push blocks reading this FIFO until the test writes to it.
    nix::unistd::mkfifo(
        &fake.flags.join("release"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    fake.set_to("hold", true, "d/sub/f");
    write(&env.src.join("d/sub/f"), b"f");
    assert!(
        wait_for_entry(&fake.flags, |n| n == "held", Duration::from_secs(20)),
        "the push of d/sub/f started: {}",
        d.log.text()
    );
    std::fs::rename(env.src.join("d"), env.dir.path().join("moved-away")).unwrap();
    // Pushed by a batch that starts after `d` is journaled: `d` sorts first, so it would be in
    // that batch or an earlier one unless it is held back.
    write(&env.src.join("other.txt"), b"other");
    assert!(
        wait_for_entry(&env.dst, |n| n == "other.txt", Duration::from_secs(20)),
        "other.txt delivered while d/sub/f is held: {}",
        d.log.text()
    );
    let lists = std::fs::read_to_string(fake.flags.join("lists")).unwrap();
    assert!(
        !lists.lines().any(|l| l == "./d"),
        "d was pushed while the push of d/sub/f ran:\n{lists}"
    );
    assert!(env.dst.join("d/sub/old").exists());
    std::fs::write(fake.flags.join("release"), b"go\n").unwrap();
    d.settle();
    assert!(!env.dst.join("d").exists());
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_running_full_sync_reports_what_it_checked_of_the_counted_tree() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    // 3 directories of 10 files, 100 bytes each, one excluded file, a file already at the
    // target and one that only the target has.
    for d in 0..3 {
        for f in 0..10 {
            write(&env.src.join(format!("d{d}/f{f}")), &[b'x'; 100]);
        }
    }
    write(&env.src.join("skip.tmp"), b"excluded");
    write(&env.src.join("same"), b"same");
    write(&env.dst.join("same"), b"same");
    let mtime = std::fs::metadata(env.src.join("same"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(env.dst.join("same"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    write(&env.dst.join("stale"), b"only at the target");
    let (entries, bytes) = (1 + 3 + 30 + 1, 30 * 100 + 4);
    nix::unistd::mkfifo(
        &fake.flags.join("release"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    fake.set("pause-after", true);
    let port = free_port();
    let cfg = env.config_top(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "exclude = [\"*.tmp\"]",
        &local_target("local", &env.dst, ""),
    );
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    // The startup full sync: rsync has finished, its process has not exited yet.
    assert!(
        wait_for_entry(&fake.flags, |n| n == "paused", Duration::from_secs(30)),
        "{}",
        d.log.text()
    );
    // `status --json --watch`: one object per line; the first status starts the count, a
    // later line carries its total.
    let mut watch = std::process::Command::new(bin("syncctl"))
        .args(["--socket", env.socket.to_str().unwrap()])
        .args(["--json", "status", "--watch", "0.05"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Log::follow(watch.stdout.take().unwrap(), "watch");
    let counted = lines.wait_for(r#""total":{"#, 0, Duration::from_secs(20));
    let third = lines.wait_for("", 2, Duration::from_secs(20));
    kill_reap(&mut watch);
    let text = lines.text();
    let all: Vec<&str> = text.lines().collect();
    let (Some(counted), Some(_)) = (counted, third) else {
        panic!("three lines, one with the total: {text}\n{}", d.log.text());
    };
    for l in &all[..3] {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
        assert_eq!(v["targets"][0]["full_sync"]["checked"], entries, "{v}");
    }
    let v: serde_json::Value = serde_json::from_str(all[counted]).unwrap();
    let st = v["targets"][0].clone();
    assert_eq!(st["state"], "initial-sync", "{st}");
    let p = &st["full_sync"];
    assert_eq!(p["total"]["entries"], entries, "{st}");
    assert_eq!(p["total"]["bytes"], bytes, "{st}");
    assert_eq!(p["checked"], entries, "every entry was checked: {st}");
    assert_eq!(p["checked_bytes"], bytes, "{st}");
    // 3 directories and 30 files sent, `stale` deleted; the root and `same` were up to date.
    assert_eq!(p["files"], 34, "{st}");
    assert_eq!(p["deleted"], 1, "{st}");
    assert!(p["bytes_sent"].as_u64().unwrap() >= 3000, "{st}");
    assert_eq!(p["path"], "", "{st}");
    assert_eq!(p["queued"], 0, "{st}");
    assert_eq!(p["fraction"], 0.999, "never done while it runs: {st}");
    // The same in the metrics.
    let (code, metrics) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(code, 200, "{metrics}");
    assert_promtool_accepts(&metrics);
    let l = r#"{root="data",target="local"}"#;
    for name in ["checked", "total"] {
        let got = sample(&metrics, &format!("syncd_full_sync_{name}_entries{l}"));
        assert_eq!(got, entries as f64, "{name}: {metrics}");
    }

    let human = d.ctl(&["status"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let want = format!("full sync of the root: 99%, {entries} of {entries} entries");
    assert!(human.contains(&want), "{human}");
    assert!(human.contains("      33 sent ("), "{human}");
    assert!(human.contains("), 1 deleted, "), "{human}");
    assert!(
        !human.contains("[#"),
        "no bar when the output is not a terminal: {human}"
    );
    // On a terminal (script(1) gives syncctl a pty), with a bar.
    let on_tty = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --socket {} status",
            bin("syncctl").display(),
            env.socket.display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let on_tty = String::from_utf8_lossy(&on_tty.stdout);
    assert!(
        on_tty.contains("full sync of the root: [###################.] 99%"),
        "{on_tty}"
    );

    // --watch on a terminal redraws the screen, bar included, until interrupted.
    let mut watch = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --socket {} status --watch 0.1",
            bin("syncctl").display(),
            env.socket.display()
        ))
        .arg("/dev/null")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let frames = Log::follow(watch.stdout.take().unwrap(), "watch");
    let redraw = "\x1b[H\x1b[2Jsyncd ";
    let first = frames.wait_for(redraw, 0, Duration::from_secs(20));
    let second = first.and_then(|i| frames.wait_for(redraw, i + 1, Duration::from_secs(20)));
    let bar = second
        .and_then(|i| frames.wait_for("[###################.] 99%", i, Duration::from_secs(20)));
    kill_reap(&mut watch);
    assert!(
        bar.is_some(),
        "two frames, the second with the bar: {}",
        frames.text()
    );

    std::fs::write(fake.flags.join("release"), b"go\n").unwrap();
    d.settle();
    assert!(d.target_status("local")["full_sync"].is_null());
    let (_, metrics) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert!(
        !metrics.contains("syncd_full_sync_checked_entries{"),
        "gone once done: {metrics}"
    );
    assert!(!env.dst.join("stale").exists());
    assert!(!env.dst.join("skip.tmp").exists());
}

#[test]
fn a_full_sync_that_ends_after_watching_stopped_leaves_the_next_start_trusting_no_index() {
    let env = Env::new();
    write(&env.src.join("a.txt"), b"a");
    let fake = Fake::new(env.dir.path());
    // The startup full sync takes two seconds; syncd is told to stop during them, and the
    // grace period (5 s) lets it finish after watching stopped: what it pushed from then on,
    // no event tells.
    fake.set("slow", true);
    let cfg = env.local_config("");
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    assert!(
        wait_for_entry(
            &fake.flags,
            |n| n == "slow-started",
            Duration::from_secs(30)
        ),
        "{}",
        d.log.text()
    );
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    fake.set("slow", false);
    assert!(
        d.log
            .wait_for("the next start trusts no index", 0, Duration::from_secs(10))
            .is_some(),
        "{}",
        d.log.text()
    );
    assert_eq!(d.stop(), Some(0));
    let t = now_ms();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let owed: Vec<String> = d
        .full_syncs_since(t)
        .iter()
        .filter(|e| e["kind"] == "full-sync-owed")
        .map(|e| e["error"].to_string())
        .collect();
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert!(owed[0].contains("did not stop in order"), "{owed:?}");
}

#[test]
fn a_running_verify_shows_in_status_what_it_checked_and_found_so_far() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    for i in 0..20 {
        write(&env.src.join(format!("d/{i}.txt")), b"x");
    }
    let d = start(&env, &fake, "");
    d.settle();
    std::fs::remove_file(env.dst.join("d/7.txt")).unwrap();
    write(&env.dst.join("d/stale"), b"only at the target");
    nix::unistd::mkfifo(
        &fake.flags.join("release"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // The verify's rsync has compared everything; its process has not exited yet.
    fake.set("pause-after", true);
    let socket = env.socket.clone();
    let verify = std::thread::spawn(move || ctl(&socket, &["--json", "verify"]));
    assert!(
        wait_for_entry(&fake.flags, |n| n == "paused", Duration::from_secs(30)),
        "{}",
        d.log.text()
    );
    let st = d.target_status("local");
    let p = &st["verify"];
    // Every entry of the source (the root, d, its 20 files) compared.
    assert_eq!(p["checked"], 22, "{st}");
    assert_eq!(p["files"], 2, "one missing, one extra so far: {st}");
    assert!(st["full_sync"].is_null(), "a verify is no full sync: {st}");
    let text = String::from_utf8(d.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("verify of the root:"), "{text}");
    fake.set("pause-after", false);
    std::fs::write(fake.flags.join("release"), b"go\n").unwrap();
    let out = verify.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "drift found");
    assert!(
        d.target_status("local")["verify"].is_null(),
        "gone once done"
    );
}

#[test]
fn kill_9_between_a_moves_push_and_the_old_directorys_deletion_loses_nothing() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    for i in 0..10 {
        write(&env.src.join(format!("a/f{i}")), &[b'0' + i as u8; 4096]);
    }
    write(&env.src.join("warm/up"), b"w");
    let d = start(&env, &fake, "");
    let cfg = env.dir.path().join("syncd.toml");
    // The first rename probes the target (rsyncs of their own); this one is its move alone.
    std::fs::rename(env.src.join("warm"), env.src.join("probed")).unwrap();
    d.settle();
    nix::unistd::mkfifo(
        &fake.flags.join("release"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // The move's rsync has finished; its process has not exited, the old tree is still owed
    // its deletion.
    fake.set("pause-after", true);
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    assert!(
        wait_for_entry(&fake.flags, |n| n == "paused", Duration::from_secs(30)),
        "{}",
        d.log.text()
    );
    assert_same_tree(&env.src.join("b"), &env.dst.join("b"));
    assert!(
        env.dst.join("a/f3").exists(),
        "the old tree waits for the move"
    );
    d.kill9();
    fake.set("pause-after", false);
    std::fs::write(fake.flags.join("release"), b"go\n").unwrap();
    let path = fake.path_env();
    let d = Syncd::start_with_env(&cfg, &env.socket, &[("PATH", &path)]);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_target_where_link_dest_links_nothing_gets_plain_pushes_and_status_says_why() {
    let env = Env::new();
    let fake = Fake::new(env.dir.path());
    // An rsync that drops --link-dest: like 3.4.3 into a `use chroot = no` daemon, it sends
    // everything again without a word.
    fake.set("no-link-dest", true);
    write(&env.src.join("a/f"), &[b'f'; 100_000]);
    let d = start(&env, &fake, "");
    assert_eq!(d.target_status("local")["renames"], "unprobed");
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    let st = d.target_status("local");
    assert_eq!(st["renames"], "plain", "{st}");
    let why = st["renames_reason"].as_str().unwrap_or_default();
    assert!(why.contains("sent the data again"), "{st}");
    let text = String::from_utf8(d.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("renames: plain pushes ("), "{text}");
    assert!(
        std::fs::read_dir(env.dst).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("syncd-probe-")),
        "the probe leaves nothing"
    );
}
