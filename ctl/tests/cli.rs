//! `syncctl` without a daemon: a message a human can act on, and exit 1.

use std::process::Command;

#[test]
fn unreachable_daemon_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nope.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach syncd at {}: is it running?",
            sock.display()
        )),
        "{err}"
    );
}

#[test]
fn bad_wait_idle_timeout_is_rejected_by_the_parser() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
        .args(["wait-idle", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout"));
}

#[test]
fn a_watch_interval_that_is_not_a_usable_number_of_seconds_is_rejected_by_the_parser() {
    for bad in ["0", "-1", "often", "inf"] {
        let out = Command::new(env!("CARGO_BIN_EXE_syncctl"))
            .args(["status", &format!("--watch={bad}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--watch") && err.contains("0.05 or more"),
            "{err}"
        );
    }
}
