//! Liveness is checked while running: a path pending at a running target with nothing running
//! to deliver it is found within seconds, named by `syncctl failed`, counted in `status` and
//! `/metrics`, told to `on_failure`, and delivered by a full sync of its directory. The bug that
//! made one (a swap of two file names held each name until the other was delivered) is
//! switched back on in the debug build with `SYNCD_FAULTS=hold-swaps`, so this test fails if the
//! safety net does.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use syncd_tests::*;

#[test]
fn a_path_stuck_by_a_bug_is_found_named_counted_told_and_delivered_within_30_s() {
    let env = Env::new();
    let (hook, calls) = hook_recorder(env.dir.path());
    let port = free_port();
    let cfg = env.config_top(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "",
        &local_target(
            "local",
            &env.dst,
            &format!("on_failure = [{:?}]", hook.to_str().unwrap()),
        ),
    );
    write(&env.src.join("d/a"), &[b'a'; 1111]);
    write(&env.src.join("d/b"), &[b'b'; 2222]);
    let d = Syncd::start_with_env(
        &cfg,
        &env.socket,
        &[("SYNCD_FAULTS", OsStr::new("hold-swaps"))],
    );
    d.settle();
    // Paused, the three renames collapse into a swap whatever the journal commits they land
    // in (no move is delivered in between).
    assert!(d.ctl(&["pause"]).status.success());
    let swapped = Instant::now();
    swap(&env);
    assert!(d.ctl(&["resume"]).status.success());
    assert_eq!(d.wait_idle(30), 0, "wait-idle\n{}", d.log.text());
    assert!(swapped.elapsed() < Duration::from_secs(30));
    assert_same_tree(&env.src, &env.dst);

    let failed = d.ctl(&["--json", "failed"]);
    let failed: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    let mut stuck: Vec<&str> = failed["stuck"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    stuck.sort();
    assert_eq!(stuck, ["d/a", "d/b"], "{failed}");
    let what = failed["stuck"][0]["what"].as_str().unwrap();
    assert!(
        what.contains("a bug of syncd's") && what.contains("full sync of d"),
        "{what}"
    );
    let human = String::from_utf8_lossy(&d.ctl(&["failed"]).stdout).into_owned();
    assert!(human.contains("d/a") && human.contains("stuck"), "{human}");

    let status = d.ctl(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["targets"][0]["stuck"], 2, "{status}");
    let (_, metrics) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(
        sample(
            &metrics,
            "syncd_stuck_paths_total{root=\"data\",target=\"local\"}"
        ),
        2.0
    );
    // on_failure hears of each, with the reason.
    let told = || std::fs::read_to_string(&calls).unwrap_or_default();
    let heard = wait_for_change_in(env.dir.path(), Duration::from_secs(10), || {
        let t = told();
        t.contains("d/a") && t.contains("d/b") && t.contains("stuck")
    });
    assert!(heard, "on_failure was told: {}", told());
    assert!(d.log.text().contains("path stuck"));
}

#[test]
fn without_the_fault_a_swap_is_delivered_with_nothing_found_stuck() {
    let env = Env::new();
    let cfg = env.local_config("");
    write(&env.src.join("d/a"), &[b'a'; 1111]);
    write(&env.src.join("d/b"), &[b'b'; 2222]);
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert!(d.ctl(&["pause"]).status.success());
    swap(&env);
    assert!(d.ctl(&["resume"]).status.success());
    assert_eq!(d.wait_idle(30), 0, "{}", d.log.text());
    assert_same_tree(&env.src, &env.dst);
    let status = d.ctl(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    // The swap went by itself: the liveness check found nothing to deliver.
    assert_eq!(status["targets"][0]["stuck"], 0, "{status}");
    assert!(!d.log.text().contains("path stuck"));
}

/// `mv d/a d/t; mv d/b d/a; mv d/t d/b`.
fn swap(env: &Env) {
    let mv = |a: &str, b: &str| std::fs::rename(env.src.join(a), env.src.join(b)).unwrap();
    mv("d/a", "d/t");
    mv("d/b", "d/a");
    mv("d/t", "d/b");
}
