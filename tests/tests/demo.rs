//! The README's quick start: syncd with no configuration runs the demo in the current
//! directory, and `syncctl` run from there finds it without `--socket`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use syncd_tests::*;

/// `syncctl ARGS` run from `dir`, with no `--socket` and no `SYNCD_SOCKET`.
fn syncctl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("syncctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("SYNCD_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn syncctl_run_where_the_demo_runs_finds_it_without_a_socket_option() {
    if Path::new("/etc/syncd/syncd.toml").exists() {
        // syncd would run on the installed configuration, not the demo (packaging/test-deb
        // removes the package it installs; CI runs this test before it).
        eprintln!("skipped: /etc/syncd/syncd.toml exists, so syncd does not run the demo");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Command::new(bin("syncd"))
        .arg("--foreground")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::follow(daemon.stderr.take().unwrap(), "syncd");
    if log
        .wait_for("syncd ready", 0, Duration::from_secs(30))
        .is_none()
    {
        kill_reap(&mut daemon);
        panic!("the demo did not start:\n{}", log.text());
    }
    assert!(
        log.text()
            .contains("try, from this directory: syncctl status"),
        "{}",
        log.text()
    );
    let out = syncctl_in(dir.path(), &["--json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["roots"][0]["name"], "demo", "{status}");
    // A killed demo's socket left behind is passed over: syncctl's unit test
    // (`the_demo_socket_is_taken_only_while_a_daemon_answers_there`), where nothing else can
    // answer on the system's socket.
    kill_reap(&mut daemon);
}
