//! `delete_guard`: a mass deletion at the source is held per target, in the journal, while every
//! other change keeps flowing; `syncctl status`, `wait-idle`, `on_failure` and the metrics tell
//! it; a restart keeps it held; a held path created again is an ordinary update; `syncctl
//! release-deletes [TARGET]` pushes what is held. The real rsync, a real rsync daemon.

use std::path::Path;
use std::time::Duration;

use syncd_tests::*;

/// `keep/` (40 files) and `big/` (8 directories of 20 files): `big` with everything in it is
/// 169 of the root's 210 entries, 80 %.
fn tree(src: &Path) {
    for i in 0..40 {
        write(&src.join(format!("keep/k{i}")), b"kept");
    }
    for d in 0..8 {
        for f in 0..20 {
            write(&src.join(format!("big/d{d}/f{f}")), b"precious");
        }
    }
}
const BIG_ENTRIES: u64 = 169;

/// `syncctl wait-idle --timeout 60` for one target (or all), its exit code and output.
fn wait_idle(d: &Syncd, target: Option<&str>) -> (i32, String) {
    let mut args = vec!["wait-idle", "--timeout", "60"];
    if let Some(t) = target {
        args.extend(["--target", t]);
    }
    let out = d.ctl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

fn held(d: &Syncd, target: &str) -> u64 {
    d.target_status(target)["deletes_held"].as_u64().unwrap()
}

/// Files of `big/` still at the target.
fn big_files_at(dest: &Path) -> usize {
    snapshot(&dest.join("big"))
        .keys()
        .filter(|k| k.starts_with(b"d") && k.contains(&b'/'))
        .count()
}

#[test]
fn an_rm_rf_of_80_percent_is_held_whole_at_a_daemon_target_while_a_new_file_goes_then_released() {
    let env = Env::new();
    tree(&env.src);
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let (prog, told) = hook_recorder(env.dir.path());
    let target = rd.target("d1", &format!("on_failure = [{prog:?}]"));
    let cfg = env.config("delete_guard = \"30%\"", &target);
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_eq!(big_files_at(&module), 160);

    // The whole rm -rf lands in one batch (the target was paused: busy, or away).
    assert!(d.ctl(&["pause", "d1"]).status.success());
    std::fs::remove_dir_all(env.src.join("big")).unwrap();
    write(&env.src.join("new.txt"), b"still arrives");
    d.wait_target("d1", Duration::from_secs(30), |t| {
        t["pending"].as_u64() == Some(BIG_ENTRIES + 1)
    });
    assert!(d.ctl(&["resume", "d1"]).status.success());

    let (code, text) = wait_idle(&d, None);
    assert_eq!(code, 5, "not idle while deletes are held: {text}");
    assert!(
        text.contains("169 deletion(s) held"),
        "{text}\n{}",
        std::fs::read_to_string(&told).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read(module.join("new.txt")).unwrap(),
        b"still arrives"
    );
    assert_eq!(
        big_files_at(&module),
        160,
        "none of the rm -rf reached the target"
    );
    assert_eq!(held(&d, "d1"), BIG_ENTRIES);
    told_and_shown(&d, &told);

    // A restart keeps them held.
    drop(d);
    let d = Syncd::start(&cfg, &env.socket);
    assert_eq!(wait_idle(&d, None).0, 5);
    assert_eq!(held(&d, "d1"), BIG_ENTRIES);
    assert_eq!(big_files_at(&module), 160);

    // Restored at the source (from the standby): an ordinary update, no longer held.
    write(&env.src.join("big/d0/f0"), b"restored");
    assert_eq!(wait_idle(&d, None).0, 5);
    assert_eq!(
        held(&d, "d1"),
        BIG_ENTRIES - 3,
        "big, big/d0 and f0 are back"
    );
    assert_eq!(
        std::fs::read(module.join("big/d0/f0")).unwrap(),
        b"restored"
    );

    let out = d.ctl(&["release-deletes", "d1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("166 at data/d1"),
        "{said}"
    );
    d.settle();
    assert_same_tree(&env.src, &module);
    assert_eq!(held(&d, "d1"), 0);

    // Released, the guard judges the next deletion afresh: one file of 44 goes at once.
    std::fs::remove_file(env.src.join("keep/k0")).unwrap();
    d.settle();
    assert!(!module.join("keep/k0").exists());
}

/// `on_failure` was run with how many deletes are held and the held paths; status and the log
/// say what to do.
fn told_and_shown(d: &Syncd, told: &Path) {
    let read = || std::fs::read_to_string(told).unwrap_or_default();
    let dir = told.parent().unwrap();
    let ok = wait_for_change_in(dir, Duration::from_secs(30), || {
        read().contains("failure d1 169 deletion(s) held by delete_guard")
    });
    let text = read();
    assert!(ok, "on_failure told: {text:?}");
    assert!(text.contains("syncctl release-deletes d1"), "{text}");
    assert!(text.lines().any(|l| l == "big/d7/f19"), "{text}");
    let status = d.ctl(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(
            "deletes held: 169 (delete_guard); check the source, then syncctl release-deletes d1"
        ),
        "{status}"
    );
    assert!(d.log.text().contains("mass deletion held by delete_guard"));

    // `failed` names each held path, told apart from failures, with the command that pushes it.
    let failed = d.ctl(&["failed", "--limit", "5"]);
    let failed = String::from_utf8_lossy(&failed.stdout);
    let held_lines: Vec<&str> = failed.lines().filter(|l| l.contains("\theld: ")).collect();
    assert_eq!(held_lines.len(), 5, "{failed}");
    assert!(
        held_lines.iter().all(|l| l.starts_with("data/d1\tbig")
            && l.ends_with("check the source, then syncctl release-deletes data/d1")),
        "{failed}"
    );
    assert!(
        failed.contains("… and 164 more held (use --limit)"),
        "{failed}"
    );
    let json = d.ctl(&["--json", "failed", "--target", "d1"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let held = json["held"].as_array().unwrap();
    assert_eq!(held.len(), 169, "{json}");
    assert!(held.iter().any(|h| h["path"] == "big/d7/f19"), "{json}");
}

#[test]
fn a_number_of_paths_lets_that_many_go_then_holds_per_target_until_each_is_released() {
    let env = Env::new();
    for f in 0..200 {
        write(&env.src.join(format!("big/f{f:03}")), b"x");
    }
    let (a, b) = (env.dir.path().join("a"), env.dir.path().join("b"));
    let targets = format!(
        "{}{}",
        local_target("t1", &a, ""),
        local_target("t2", &b, "")
    );
    let d = Syncd::start(&env.config("delete_guard = 50", &targets), &env.socket);
    d.settle();
    // As it happens, in however many batches: at most 50 deletions reach each target.
    std::fs::remove_dir_all(env.src.join("big")).unwrap();
    assert_eq!(wait_idle(&d, None).0, 5);
    for (t, dest) in [("t1", &a), ("t2", &b)] {
        let left = snapshot(dest).len() as u64;
        assert!(left >= 151, "{t}: {left} of 201 entries left");
        assert_eq!(held(&d, t), left, "{t}: what is left is held");
    }
    assert!(d.ctl(&["release-deletes", "t1"]).status.success());
    assert_eq!(wait_idle(&d, Some("t1")).0, 0);
    assert_same_tree(&env.src, &a);
    assert_eq!(
        wait_idle(&d, Some("t2")).0,
        5,
        "t2 still holds its deletions"
    );
    assert!(b.join("big").exists());
    assert!(d.ctl(&["release-deletes"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &b);
}

#[test]
fn a_bad_delete_guard_is_refused_naming_what_it_takes() {
    let env = Env::new();
    let cfg = env.config("delete_guard = \"lots\"", &local_target("t1", &env.dst, ""));
    let out = std::process::Command::new(bin("syncd"))
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sync[0].delete_guard") && err.contains("\"30%\"") && err.contains("5000"),
        "{err}"
    );
}

#[test]
fn a_restart_within_the_window_remembers_the_deletions_taken_before_it() {
    let env = Env::new();
    for f in 0..60 {
        write(&env.src.join(format!("f{f:02}")), b"x");
    }
    let cfg = env.config(
        "delete_guard = 50\ndelete_guard_window_s = 600",
        &local_target("local", &env.dst, ""),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    for f in 0..40 {
        std::fs::remove_file(env.src.join(format!("f{f:02}"))).unwrap();
    }
    assert_eq!(wait_idle(&d, None).0, 0, "40 of 50 go");
    assert_eq!(snapshot(&env.dst).len(), 20);
    drop(d);

    // 40 + 15 is over the guard, restart or not: at most 10 more go (in however many
    // batches), the rest is held. Forgotten, all 15 would go.
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    for f in 40..55 {
        std::fs::remove_file(env.src.join(format!("f{f:02}"))).unwrap();
    }
    let (code, text) = wait_idle(&d, None);
    assert_eq!(code, 5, "{text}");
    let left = snapshot(&env.dst).len() as u64;
    assert!(
        left >= 10,
        "{left} of 20 left: more than the guard's 50 went"
    );
    assert_eq!(held(&d, "local"), left - 5, "what is left is held");
}

#[test]
fn deletions_made_while_syncd_was_down_and_a_full_syncs_deletions_are_held_too() {
    let env = Env::new();
    for i in 0..40 {
        write(&env.src.join(format!("keep/k{i:02}")), b"kept");
    }
    for i in 0..30 {
        write(&env.src.join(format!("gone/g{i:02}")), b"precious");
    }
    let cfg = env.config("delete_guard = 10", &local_target("local", &env.dst, ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    d.stop();

    // Deleted while syncd was down: the start's catch-up finds them, the guard holds them.
    std::fs::remove_dir_all(env.src.join("gone")).unwrap();
    let d = Syncd::start(&cfg, &env.socket);
    assert_eq!(wait_idle(&d, None).0, 5);
    assert_eq!(held(&d, "local"), 31);
    assert_eq!(snapshot(&env.dst.join("gone")).len(), 30);
    assert!(d.ctl(&["release-deletes"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);

    // A full sync (--delete) deletes what the guard has left (10 within the window, of which
    // the release took none), and holds the rest.
    for i in 0..30 {
        write(
            &env.dst.join(format!("extra/x{i:02}")),
            b"only at the target",
        );
    }
    assert!(d.ctl(&["resync"]).status.success());
    let (code, text) = wait_idle(&d, None);
    assert_eq!(code, 5, "{text}");
    // 10 of the 31 entries deleted: 20 files left in the directory.
    assert_eq!(snapshot(&env.dst.join("extra")).len(), 20);
    assert_eq!(
        held(&d, "local"),
        20,
        "rsync's count of what it skipped: the files"
    );
    assert!(d
        .log
        .text()
        .contains("full sync's deletions held by delete_guard"));
    let failed = d.ctl(&["failed"]);
    let failed = String::from_utf8_lossy(&failed.stdout);
    assert!(
        failed
            .contains("data/local\t.\theld: 20 deletion(s) a full sync skipped over delete_guard"),
        "{failed}"
    );
    assert!(d.ctl(&["release-deletes", "local"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(held(&d, "local"), 0);
}
