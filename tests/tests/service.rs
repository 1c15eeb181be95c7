//! Running as a service: the shipped unit and configuration, man pages and completions, the
//! systemd watchdog, logging to the journal or to a file that logrotate moves away.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncd_tests::*;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_file("packaging/syncd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    // The binary where the unit expects it; man pages are checked by the package test, where
    // they are installed.
    let unit = unit.replace("/usr/bin/syncd", bin("syncd").to_str().unwrap());
    let path = dir.path().join("syncd.service");
    std::fs::write(&path, unit).unwrap();
    let (ok, out, err) = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path),
    );
    assert!(
        ok && err.trim().is_empty(),
        "systemd-analyze verify: {out}{err}"
    );
    // It does find mistakes: a misspelt key.
    let bad = std::fs::read_to_string(&path)
        .unwrap()
        .replace("NoNewPrivileges", "NoNewPrivilege");
    std::fs::write(&path, bad).unwrap();
    let (_, _, err) = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path),
    );
    assert!(err.contains("NoNewPrivilege"), "{err}");
}

/// The shipped /etc/syncd/syncd.toml, pointed at `dir` (and without its socket group, which
/// only the package creates).
fn shipped_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_file("packaging/syncd.toml"))
        .unwrap()
        .replace("/var/lib/syncd", dir.join("state").to_str().unwrap())
        .replace("/run/syncd", dir.join("run").to_str().unwrap())
        .replace("socket_group = \"syncd\"", "");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let p = dir.join("syncd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_shipped_configuration_is_valid_and_replicates_nothing_until_edited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = shipped_config(dir.path());
    let (ok, out, err) = output(
        Command::new(bin("syncd"))
            .args(["check-config", "--config"])
            .arg(&cfg),
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("0 root(s)") && out.contains("replicates nothing"),
        "{out}"
    );
    let socket = dir.path().join("run/syncd.sock");
    let d = Syncd::start(&cfg, &socket);
    assert!(
        d.log
            .wait_for("no [[sync]] configured", 0, Duration::from_secs(10))
            .is_some(),
        "{}",
        d.log.text()
    );
    assert_eq!(d.status()["roots"].as_array().map(Vec::len), Some(0));
    d.settle();
    // Configured and reloaded, it replicates.
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    write(&src.join("a.txt"), b"a");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[[sync]]\nsource = {src:?}\n{}",
        local_target("local", &dst, "")
    ));
    std::fs::write(&cfg, text).unwrap();
    let out = d.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.settle();
    assert_same_tree(&src, &dst);
}

#[test]
fn man_pages_and_completions_are_generated_from_the_real_definitions() {
    for b in ["syncd", "syncctl"] {
        let (ok, page, err) = output(Command::new(bin(b)).arg("man"));
        assert!(ok, "{err}");
        assert!(page.starts_with(".ie") || page.contains("\n.TH "), "{page}");
        assert!(page.contains(&format!(".TH {b} 8")), "{b}(8): {page}");
        for shell in ["bash", "zsh", "fish"] {
            let (ok, script, err) = output(Command::new(bin(b)).args(["completions", shell]));
            assert!(ok && script.len() > 200, "{b} {shell}: {err}");
        }
    }
    let (_, page, _) = output(Command::new(bin("syncctl")).arg("man"));
    for sub in ["wait\\-idle", "retry\\-failed", "status"] {
        assert!(page.contains(sub), "syncctl(8) lists {sub}");
    }
    let (_, bash, _) = output(Command::new(bin("syncctl")).args(["completions", "bash"]));
    assert!(
        bash.contains("wait-idle") && bash.contains("complete "),
        "{bash}"
    );
    // The hidden generator commands stay out of the help.
    let (_, help, _) = output(Command::new(bin("syncctl")).arg("--help"));
    assert!(!help.contains("\n  man "), "{help}");
    let (ok, page, err) = output(Command::new(bin("syncd")).args(["man", "--config-file"]));
    assert!(ok, "{err}");
    assert!(page.contains(".TH SYNCD.TOML 5"), "{page}");
    for key in [
        "state_dir",
        "socket_group",
        "delay_ms",
        "dest",
        "workers",
        "max_attempts",
    ] {
        assert!(
            page.contains(&format!(".B {key}\n")),
            "syncd.toml(5) documents {key}"
        );
    }
}

#[test]
fn the_systemd_watchdog_is_pinged_and_hidden_from_rsync() {
    let env = Env::new();
    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = env.local_config("");
    // rsync's environment, as a fake rsync on PATH sees it.
    let fakebin = env.dir.path().join("fakebin");
    std::fs::create_dir(&fakebin).unwrap();
    let seen = env.dir.path().join("rsync-env");
    let real = Command::new("sh")
        .args(["-c", "command -v rsync"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let fake = fakebin.join("rsync");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nenv > {}\nexec {real} \"$@\"\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = std::ffi::OsString::from(fakebin.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    let d = Syncd::start_with_env(
        &cfg,
        &env.socket,
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("200000")),
            ("PATH", &path),
        ],
    );
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    let started = Instant::now();
    // Until READY=1 and three pings have come (a slow start sends pings before READY=1).
    let done = |got: &[String]| {
        got.iter().any(|m| m.contains("READY=1"))
            && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    };
    while !done(&got) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "watchdog pings: {got:?}"
        );
        let n = notify.recv(&mut buf).expect("a notification within 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    write(&env.src.join("x.txt"), b"x");
    d.settle();
    let rsync_env = std::fs::read_to_string(&seen).unwrap();
    assert!(!rsync_env.contains("WATCHDOG_USEC"), "{rsync_env}");
}

#[test]
fn logs_to_the_journal_carry_no_timestamp_of_their_own() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let cfg = env.local_config("");
    let run = |journal: bool| -> String {
        let log = env.dir.path().join(format!("stderr-{journal}"));
        let f = std::fs::File::create(&log).unwrap();
        let m = f.metadata().unwrap();
        let mut cmd = Command::new(bin("syncd"));
        cmd.args(["--foreground", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        }
        let mut child = spawn_retrying(&mut cmd);
        assert!(
            wait_for_change_in(env.dir.path(), Duration::from_secs(30), || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("syncd ready")
            }),
            "syncd ready"
        );
        terminate(&mut child, Duration::from_secs(20));
        std::fs::read_to_string(&log).unwrap()
    };
    let plain = run(false);
    let first = plain.lines().next().unwrap();
    assert!(first.starts_with("20"), "a timestamp: {first}");
    let journal = run(true);
    for line in journal.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.trim_start()
                .starts_with(|c: char| c.is_ascii_uppercase()),
            "no timestamp (the journal adds its own): {line}"
        );
    }
}

#[test]
fn sighup_reopens_the_log_file_for_logrotate_and_restarts_nothing_when_unchanged() {
    let env = Env::new();
    let log = env.dir.path().join("syncd.log");
    let cfg = env.config_top(
        &format!("log_file = {log:?}"),
        "",
        &local_target("local", &env.dst, ""),
    );
    // Forked into the background: output goes to the log file.
    let (ok, out, err) = output(Command::new(bin("syncd")).arg("--config").arg(&cfg));
    assert!(ok, "{out}{err}");
    let pid: i32 = std::fs::read_to_string(env.state.join("syncd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    let guard = Guard(pid);
    write(&env.src.join("before.txt"), b"1");
    assert_eq!(
        ctl(&env.socket, &["wait-idle", "--timeout", "30"])
            .status
            .code(),
        Some(0)
    );
    // logrotate: move the file away, then SIGHUP.
    let rotated = env.dir.path().join("syncd.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        wait_for_change_in(env.dir.path(), Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("log file reopened")
        }),
        "a new log file"
    );
    assert!(
        wait_for_change_in(env.dir.path(), Duration::from_secs(20), || {
            let all = std::fs::read_to_string(&log).unwrap_or_default()
                + &std::fs::read_to_string(&rotated).unwrap_or_default();
            all.contains("configuration unchanged; nothing restarted")
        }),
        "the reload's answer"
    );
    // Still replicating, and logging into the new file only.
    let old_len = std::fs::metadata(&rotated).unwrap().len();
    write(&env.src.join("after.txt"), b"2");
    assert_eq!(
        ctl(&env.socket, &["wait-idle", "--timeout", "30"])
            .status
            .code(),
        Some(0)
    );
    assert_same_tree(&env.src, &env.dst);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("configuration reloaded"), "{text}");
    assert_eq!(ctl(&env.socket, &["stop"]).status.code(), Some(0));
    assert!(
        wait_for_exit(pid.as_raw() as u32, Duration::from_secs(30)),
        "syncd gone"
    );
    // Gone: nothing to kill (the pid may be somebody else's by now).
    std::mem::forget(guard);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("shutting down"));
    assert_eq!(std::fs::metadata(&rotated).unwrap().len(), old_len);
}

/// Kills `pid` when dropped (a failed test must not leave a daemon behind).
struct Guard(nix::unistd::Pid);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
    }
}
