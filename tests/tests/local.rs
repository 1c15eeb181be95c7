//! End-to-end against a local directory target: the real syncd, syncctl and rsync.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use syncd_tests::*;

/// A local-target config without the startup resync: after a restart only the journal knows
/// what is owed.
fn journal_only_config(env: &Env) -> std::path::PathBuf {
    env.config_top(
        "startup_resync = false",
        "",
        &local_target("local", &env.dst, ""),
    )
}

fn start(env: &Env) -> Syncd {
    let cfg = env.local_config("");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    d
}

#[test]
fn file_and_directory_operations_reach_the_target() {
    let env = Env::new();
    write(&env.src.join("pre-existing.txt"), b"before start");
    let d = start(&env);
    assert_same_tree(&env.src, &env.dst);

    // create
    write(&env.src.join("a.txt"), b"hello");
    write(&env.src.join("dir/b.txt"), b"world");
    std::fs::create_dir(env.src.join("empty")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);

    // modify (same size, same second: rsync's quick check would skip it), append, truncate
    std::fs::write(env.src.join("a.txt"), b"HELLO").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(env.src.join("dir/b.txt"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    std::fs::File::create(env.src.join("pre-existing.txt")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);

    // delete a file, an empty directory and a full subtree
    write(&env.src.join("deep/x/y/z.txt"), b"z");
    d.settle();
    std::fs::remove_file(env.src.join("a.txt")).unwrap();
    std::fs::remove_dir(env.src.join("empty")).unwrap();
    std::fs::remove_dir_all(env.src.join("deep")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);

    // a file replaced by a directory and back
    std::fs::remove_file(env.src.join("dir/b.txt")).unwrap();
    write(&env.src.join("dir/b.txt/inner"), b"now a dir");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn mkdir_p_six_levels_with_files_written_at_once() {
    let env = Env::new();
    let d = start(&env);
    let mut p = env.src.clone();
    for level in 0..6 {
        p = p.join(format!("l{level}"));
        std::fs::create_dir_all(&p).unwrap();
        for i in 0..5 {
            std::fs::write(p.join(format!("f{i}")), format!("{level}-{i}")).unwrap();
        }
    }
    // And a single `mkdir -p` of six levels with a file at the bottom right away.
    write(&env.src.join("m1/m2/m3/m4/m5/m6/bottom.txt"), b"bottom");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn directory_of_500_files_moved_in_from_outside() {
    let env = Env::new();
    let outside = env.dir.path().join("outside/big");
    for i in 0..500 {
        write(
            &outside.join(format!("sub{}/file{i}.dat", i % 7)),
            format!("content {i}").as_bytes(),
        );
    }
    let d = start(&env);
    std::fs::rename(&outside, env.src.join("big")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(snapshot(&env.dst).len(), 500 + 7 + 1);
}

#[test]
fn directory_renamed_inside_then_written_into() {
    let env = Env::new();
    write(&env.src.join("old/sub/a.txt"), b"a");
    let d = start(&env);
    std::fs::rename(env.src.join("old"), env.src.join("new")).unwrap();
    // Written right after the rename: the watch's cached path must already say "new".
    write(&env.src.join("new/sub/b.txt"), b"b");
    write(&env.src.join("new/c.txt"), b"c");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // And again, after the dust settled, into the renamed tree.
    write(&env.src.join("new/sub/d.txt"), b"d");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn directory_replaced_by_a_file_is_replaced_at_the_target_with_nothing_failed() {
    let env = Env::new();
    write(&env.src.join("x/g/h.txt"), b"h");
    let d = start(&env);
    // Paused, so the deletes below `x` and the new file `x` meet in one batch.
    assert!(d.ctl(&["pause"]).status.success());
    std::fs::remove_dir_all(env.src.join("x")).unwrap();
    write(&env.src.join("x"), b"a file now");
    assert_eq!(d.wait_idle(1), 4);
    assert!(d.ctl(&["resume"]).status.success());
    // Nothing below a file can be deleted at the source side: rsync must be told `x` alone, or
    // it fails (exit 23) on `x/g` and the path is retried in vain.
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    let st = d.target_status("local");
    assert_eq!(st["failed"], 0, "{st}");
    assert!(st["last_error"].is_null(), "{st}");
}

#[test]
fn directory_moved_away_and_recreated_before_the_push_leaves_nothing_of_it_at_the_target() {
    let env = Env::new();
    write(&env.src.join("a/old.txt"), b"old");
    write(&env.src.join("a/sub/deep.txt"), b"deep");
    let d = start(&env);
    // Paused, so the push comes only once `a` is a directory again: pushed as itself, it
    // deletes nothing below it, and only what the index held below it tells the old names.
    assert!(d.ctl(&["pause"]).status.success());
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    std::fs::create_dir(env.src.join("a")).unwrap();
    write(&env.src.join("a/new.txt"), b"new");
    assert_eq!(d.wait_idle(1), 4);
    assert!(d.ctl(&["resume"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn directory_moved_out_is_deleted_at_target_and_no_longer_watched() {
    let env = Env::new();
    write(&env.src.join("leaving/x/1.txt"), b"1");
    let d = start(&env);
    let outside = env.dir.path().join("gone");
    std::fs::rename(env.src.join("leaving"), &outside).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // Writes to the moved-out tree must not appear under the old name.
    write(&outside.join("x/2.txt"), b"2");
    write(&env.src.join("barrier.txt"), b"b");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn hostile_file_names_are_replicated_and_never_interpreted() {
    let env = Env::new();
    let d = start(&env);
    let marker = env.dir.path().join("pwned");
    let names: Vec<Vec<u8>> = vec![
        b"with space.txt".to_vec(),
        b"new\nline.txt".to_vec(),
        b"#hash.txt".to_vec(),
        b";semi.txt".to_vec(),
        b"-dash.txt".to_vec(),
        b"--delete".to_vec(),
        b"bad\xff\xfe.bin".to_vec(),
        b"`touch pwned`".to_vec(),
        format!("$(touch {})", marker.display()).into_bytes(),
        b"quote'dbl\"".to_vec(),
        b"back\\slash".to_vec(),
    ];
    for n in &names {
        // '/' cannot be part of a name: the $(touch /abs) name becomes a path, use its last part.
        let n: Vec<u8> = n
            .iter()
            .map(|b| if *b == b'/' { b'_' } else { *b })
            .collect();
        std::fs::write(env.src.join(OsStr::from_bytes(&n)), &n).unwrap();
    }
    std::fs::create_dir(env.src.join("#dir; $(x)")).unwrap();
    std::fs::write(env.src.join("#dir; $(x)/-f"), b"f").unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert!(
        !marker.exists() && !Path::new("pwned").exists(),
        "a file name was executed"
    );
    // Delete them all again: deletes of such names must work too.
    for e in std::fs::read_dir(&env.src).unwrap().flatten() {
        if e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
        } else {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert!(snapshot(&env.dst).is_empty());
}

#[test]
fn shell_syntax_in_rsync_args_and_names_is_never_executed() {
    let env = Env::new();
    let marker = env.dir.path().join("pwned");
    let m = marker.display();
    // Each argument reaches rsync as one argv entry: here, exclude patterns that match nothing.
    let args = format!(
        "rsync_args = [\"--exclude=`touch {m}`\", \"--exclude=$(touch {m})\", \"--exclude=x; touch {m}\", \"--exclude=| touch {m}\"]"
    );
    let cfg = env.config("", &local_target("local", &env.dst, &args));
    let d = Syncd::start(&cfg, &env.socket);
    write(&env.src.join("a; touch pwned"), b"x");
    write(&env.src.join("$(touch pwned)/`touch pwned`"), b"y");
    d.settle();
    assert!(d.ctl(&["resync"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert!(
        !marker.exists() && !Path::new("pwned").exists() && !env.src.join("pwned").exists(),
        "something was executed"
    );
}

#[test]
fn symlinks_are_replicated_as_symlinks_never_followed() {
    let env = Env::new();
    let outside = env.dir.path().join("secret");
    write(&outside.join("secret.txt"), b"do not copy");
    let d = start(&env);
    write(&env.src.join("real.txt"), b"r");
    std::os::unix::fs::symlink("real.txt", env.src.join("rel-link")).unwrap();
    std::os::unix::fs::symlink(&outside, env.src.join("outside-link")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", env.src.join("dangling")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert!(std::fs::symlink_metadata(env.dst.join("outside-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!env.dst.join("secret.txt").exists());
    // Retarget a link.
    std::fs::remove_file(env.src.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("dangling", env.src.join("rel-link")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn excluded_paths_never_reach_the_target() {
    let env = Env::new();
    write(&env.src.join(".cache/old"), b"cached before start");
    let cfg = env.local_config("exclude = [\"*.swp\", \".cache/\", \"/top-only\"]");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    write(&env.src.join("keep.txt"), b"k");
    write(&env.src.join("x.swp"), b"s");
    write(&env.src.join("d/y.swp"), b"s");
    write(&env.src.join(".cache/new"), b"c");
    write(&env.src.join("top-only"), b"t");
    write(
        &env.src.join("d/top-only"),
        b"kept: anchored pattern matches only at the root",
    );
    d.settle();
    let got = snapshot(&env.dst);
    let names: Vec<String> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["d", "d/top-only", "keep.txt"], "{names:?}");
}

#[test]
fn paused_target_receives_nothing_until_resumed() {
    let env = Env::new();
    let d = start(&env);
    let out = d.ctl(&["pause", "local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.target_status("local")["state"], "paused");
    for i in 0..20 {
        write(&env.src.join(format!("p{i}.txt")), b"paused");
    }
    // Barrier: wait-idle reads every queued event before answering; paused, it cannot be idle.
    assert_eq!(d.wait_idle(1), 4);
    let st = d.target_status("local");
    assert_eq!(st["pending"], 20, "{st}");
    assert!(
        snapshot(&env.dst).is_empty(),
        "a paused target received files"
    );
    assert!(d.ctl(&["resume"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert!(d.target_status("local")["delivered"].as_u64().unwrap() >= 20);
}

#[test]
fn stop_with_pending_paths_then_restart_delivers_them_from_the_journal() {
    let env = Env::new();
    // No startup resync: only the journal can deliver what was pending.
    let cfg = journal_only_config(&env);
    let d = Syncd::start(&cfg, &env.socket);
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..50 {
        write(
            &env.src.join(format!("q/{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    assert_eq!(d.wait_idle(1), 4);
    assert_eq!(d.stop(), Some(0));
    assert!(snapshot(&env.dst).is_empty());
    assert!(!env.socket.exists(), "socket removed at shutdown");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn changes_made_while_down_are_delivered_at_start() {
    let env = Env::new();
    let cfg = env.local_config("");
    write(&env.src.join("stay.txt"), b"s");
    write(&env.src.join("remove-me.txt"), b"r");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_eq!(d.stop(), Some(0));
    write(&env.src.join("while-down.txt"), b"new");
    std::fs::remove_file(env.src.join("remove-me.txt")).unwrap();
    std::fs::write(env.src.join("stay.txt"), b"S").unwrap();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn kill_9_during_a_burst_then_restart_loses_nothing() {
    let env = Env::new();
    let cfg = journal_only_config(&env);
    let d = Syncd::start(&cfg, &env.socket);
    let src = env.src.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..3000 {
            write(
                &src.join(format!("burst/d{}/f{i}.txt", i % 30)),
                format!("file {i}").as_bytes(),
            );
        }
    });
    // Kill once the daemon has delivered part of the burst.
    d.wait_target("local", std::time::Duration::from_secs(20), |t| {
        t["delivered"].as_u64().unwrap_or(0) > 0
    });
    d.kill9();
    writer.join().unwrap();
    // Changes made after the kill produced no events for anyone: the restart runs with the
    // default startup resync, as in production, and must converge exactly.
    let cfg2 = env.local_config("");
    let d = Syncd::start(&cfg2, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(snapshot(&env.dst).len(), 3000 + 30 + 1);
}

#[test]
fn hostile_socket_input_does_not_stop_the_daemon() {
    use std::os::unix::net::UnixStream;
    let env = Env::new();
    let d = start(&env);
    // Random bytes.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    let junk: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&junk);
    drop(s);
    // A frame claiming 4 GB.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    drop(s);
    // A valid frame with a hostile inner length, after a valid hello.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    let hello = syncd_proto::encode_frame(
        &syncd_proto::Request::Hello {
            protocol: syncd_proto::PROTOCOL_VERSION,
        },
        1024,
    )
    .unwrap();
    let _ = s.write_all(&hello);
    let _ = s.write_all(&[0, 0, 0, 11, 2, 1, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0]);
    drop(s);
    // A wrong protocol version.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    let _ = s.write_all(
        &syncd_proto::encode_frame(&syncd_proto::Request::Hello { protocol: 999 }, 1024).unwrap(),
    );
    drop(s);
    // Connects and says nothing (kept open while others are served).
    let silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&env.socket).unwrap())
        .collect();
    write(&env.src.join("after.txt"), b"still serving");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(d.status()["targets"][0]["state"], "running");
    drop(silent);
}

#[test]
fn wait_idle_reports_unknown_target_and_bad_requests_clearly() {
    let env = Env::new();
    let d = start(&env);
    let out = d.ctl(&["pause", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no target named \"nope\"") && err.contains("data/local"),
        "{err}"
    );
    let out = d.ctl(&["resync", "/definitely/not/watched"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside any watched root"));
}

#[test]
fn resync_command_repairs_a_target_changed_behind_syncd() {
    let env = Env::new();
    write(&env.src.join("a/1.txt"), b"1");
    let d = start(&env);
    // Someone damages the target.
    std::fs::remove_file(env.dst.join("a/1.txt")).unwrap();
    write(&env.dst.join("a/extra.txt"), b"x");
    let out = d.ctl(&["resync", env.src.join("a").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    std::fs::remove_file(env.dst.join("a/1.txt")).unwrap();
    assert!(d.ctl(&["resync"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn journaled_paths_survive_kill_9() {
    let env = Env::new();
    // No startup resync: after the crash only the journal knows what is owed.
    let cfg = journal_only_config(&env);
    let d = Syncd::start(&cfg, &env.socket);
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..200 {
        write(
            &env.src.join(format!("j/{i}.txt")),
            format!("{i}").as_bytes(),
        );
    }
    assert_eq!(d.wait_idle(1), 4);
    assert_eq!(d.target_status("local")["pending"], 201);
    d.kill9();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn file_kept_open_and_appended_is_delivered_while_still_open() {
    let env = Env::new();
    let d = start(&env);
    let mut log = std::fs::File::create(env.src.join("app.log")).unwrap();
    log.write_all(b"line 1\n").unwrap();
    // No close: only MODIFY events; the modify window must still push it.
    d.settle();
    assert_eq!(std::fs::read(env.dst.join("app.log")).unwrap(), b"line 1\n");
    log.write_all(b"line 2\n").unwrap();
    d.settle();
    assert_eq!(
        std::fs::read(env.dst.join("app.log")).unwrap(),
        b"line 1\nline 2\n"
    );
    drop(log);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_file_still_being_written_is_pushed_once_at_its_close_not_half_written() {
    let env = Env::new();
    let d = start(&env);
    // 40 writes 25 ms apart (1 s), longer than delay_ms (20) and modify_delay_ms (200) of
    // the test config: only the close may end the wait. The pause is the writer's rhythm (the
    // workload itself), not a wait for syncd.
    let path = env.src.join("big.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..40u8 {
        f.write_all(&[i; 64 * 1024]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    drop(f);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    let out = d.ctl(&["--json", "log"]);
    let pushes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "delivered")
        .filter(|e| {
            e["sample"]
                .as_array()
                .is_some_and(|s| s.iter().any(|p| p == "big.bin"))
        })
        .count();
    assert_eq!(pushes, 1, "pushed while still being written");
}

#[test]
fn several_workers_per_target_deliver_a_burst_exactly() {
    let env = Env::new();
    let cfg = env.config(
        "",
        &local_target("local", &env.dst, "workers = 3\nmax_batch = 50"),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    for i in 0..1500 {
        write(
            &env.src.join(format!("w{}/{i}.txt", i % 15)),
            format!("{i}").repeat(i % 50).as_bytes(),
        );
    }
    for i in (0..1500).step_by(3) {
        std::fs::remove_file(env.src.join(format!("w{}/{i}.txt", i % 15))).unwrap();
    }
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let env = Env::new();
    let cfg = env.local_config("");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    // A bad config is refused and the running one keeps working.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\nbogus_key = 1\n")).unwrap();
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bogus_key") && err.contains("running configuration stays"),
        "{err}"
    );
    write(&env.src.join("still-synced.txt"), b"1");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // A good one with a second target: the new target gets a full sync.
    let dst2 = env.dir.path().join("dst2");
    std::fs::create_dir(&dst2).unwrap();
    std::fs::write(
        &cfg,
        format!("{good}\n{}", local_target("second", &dst2, "")),
    )
    .unwrap();
    let out = d.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.settle();
    assert_same_tree(&env.src, &dst2);
    write(&env.src.join("after-reload.txt"), b"2");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_same_tree(&env.src, &dst2);
    // SIGHUP does the same: remove the second target again.
    std::fs::write(&cfg, &good).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    d.wait_status(std::time::Duration::from_secs(20), |s| {
        s["targets"].as_array().is_some_and(|t| t.len() == 1)
    });
}

#[test]
fn sigterm_right_after_writes_journals_every_event_seen() {
    let env = Env::new();
    // No startup resync: only what was journaled at shutdown can be delivered after it.
    // A long coalescing window: symlinks and hard links (no close_write) wait in memory.
    let cfg = env.config_top(
        "startup_resync = false",
        "delay_ms = 60000",
        &local_target("local", &env.dst, ""),
    );
    let d = Syncd::start(&cfg, &env.socket);
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..300 {
        write(&env.src.join(format!("t{}/{i}.txt", i % 3)), b"x");
        std::os::unix::fs::symlink(
            format!("{i}.txt"),
            env.src.join(format!("t{}/{i}.lnk", i % 3)),
        )
        .unwrap();
    }
    // No wait: events still queued in the kernel or waiting in the coalescing window.
    assert_eq!(d.stop(), Some(0));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn after_kill_9_the_restart_finds_what_was_only_in_memory_and_trusts_no_index() {
    let env = Env::new();
    // A long coalescing window: the creates below wait in memory, never journaled.
    let cfg = env.local_config("delay_ms = 60000");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert!(d.ctl(&["pause"]).status.success());
    // Journaled (a finished change), then held back by the pause.
    for i in 0..30 {
        std::fs::create_dir_all(env.src.join(format!("journaled/{i}"))).unwrap();
    }
    // Seen, but only in memory when syncd dies.
    let mut open = Vec::new();
    for i in 0..30 {
        open.push(std::fs::File::create(env.src.join(format!("in-memory-{i}.txt"))).unwrap());
    }
    assert_eq!(d.wait_idle(1), 4, "the creates wait in memory");
    d.kill9();
    drop(open);
    let restarted = now_ms();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // Killed, syncd cannot tell what a full sync pushed in its last moments: the index does
    // not vouch, and the log says why.
    let owed = owed_since(&d, restarted);
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert!(owed[0].1.contains("did not stop in order"), "{owed:?}");
    // Stopped in order, the next restart is a catch-up again.
    assert_eq!(d.stop(), Some(0));
    let restarted = now_ms();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_eq!(
        d.full_syncs_since(restarted),
        Vec::<serde_json::Value>::new()
    );
    d.wait_event_of("caught-up", restarted);
}

#[test]
fn unclosed_writes_are_journaled_even_under_a_steady_stream_of_events() {
    let env = Env::new();
    let d = start(&env);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (src, flag) = (env.src.clone(), stop.clone());
    let stream = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
            write(
                &src.join(format!("stream/{}.txt", i % 500)),
                format!("{i}").as_bytes(),
            );
            i += 1;
        }
    });
    let mut log = std::fs::File::create(env.src.join("open.log")).unwrap();
    log.write_all(b"written, never closed during the stream\n")
        .unwrap();
    // The 200 ms window of the open file must end while events keep arriving: it reaches
    // the target before the stream stops.
    let found = wait_for_entry(
        &env.dst,
        |n| n == "open.log",
        std::time::Duration::from_secs(20),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stream.join().unwrap();
    assert!(found, "the open file's window never ended under load");
    drop(log);
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn status_counts_one_watch_per_directory_through_creates_moves_and_deletes() {
    let env = Env::new();
    let d = start(&env);
    let watches = |d: &Syncd| d.status()["roots"][0]["watches"].as_u64().unwrap();
    assert_eq!(watches(&d), 1);
    for i in 0..10 {
        std::fs::create_dir_all(env.src.join(format!("d{i}/sub"))).unwrap();
    }
    d.settle();
    assert_eq!(watches(&d), 21);
    for i in 0..5 {
        std::fs::remove_dir_all(env.src.join(format!("d{i}"))).unwrap();
    }
    std::fs::rename(env.src.join("d5"), env.dir.path().join("moved-out")).unwrap();
    std::fs::rename(env.src.join("d6"), env.src.join("d6-renamed")).unwrap();
    d.settle();
    assert_eq!(watches(&d), 9);
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn directory_moved_between_two_roots_reaches_both_targets() {
    let env = Env::new();
    let src2 = env.dir.path().join("src2");
    let dst2 = env.dir.path().join("dst2");
    std::fs::create_dir(&src2).unwrap();
    std::fs::create_dir(&dst2).unwrap();
    write(&env.src.join("travel/inner/a.txt"), b"a");
    let second = format!(
        "[[sync]]\nname = \"second\"\nsource = {src2:?}\ndelay_ms = 20\n{}",
        local_target("local2", &dst2, "")
    );
    let cfg = env.config(
        "",
        &format!("{}\n{second}", local_target("local", &env.dst, "")),
    );
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    std::fs::rename(env.src.join("travel"), src2.join("arrived")).unwrap();
    // Written after the move, through the watch that now belongs to the second root.
    write(&src2.join("arrived/inner/b.txt"), b"b");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_same_tree(&src2, &dst2);
    assert!(dst2.join("arrived/inner/b.txt").exists());
    let st = d.status();
    assert_eq!(st["roots"][0]["watches"], 1);
    assert_eq!(st["roots"][1]["watches"], 3);
    // A path of one root with a target of the other is refused, not silently ignored.
    let out = d.ctl(&["resync", "--target", "local2", env.src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not replicate the root"));
}

/// Do `lose` to the root and wait until syncd reports it gone.
fn lose_root(d: &Syncd, lose: impl FnOnce()) {
    lose();
    d.wait_status(std::time::Duration::from_secs(20), |s| {
        s["roots"][0]["state"] == "unavailable"
    });
}

/// While the root is away nothing reaches the target, not even on an explicit resync, and
/// wait-idle never says idle.
fn assert_held_back(d: &Syncd, env: &Env, before: &BTreeMap<Vec<u8>, Node>) {
    assert!(d.ctl(&["resync"]).status.success());
    assert_eq!(d.wait_idle(2), 4, "not idle while the root is away");
    let st = d.status();
    assert_eq!(st["roots"][0]["state"], "unavailable", "{st}");
    assert_eq!(&snapshot(&env.dst), before, "the target must not change");
}

/// Do `restore`, wait until syncd sees the root back, then a live change and everything made
/// while it was away must arrive.
fn restore_root(d: &Syncd, env: &Env, restore: impl FnOnce()) {
    restore();
    d.wait_status(std::time::Duration::from_secs(20), |s| {
        s["roots"][0]["state"] == "watching"
    });
    write(&env.src.join("after-the-return.txt"), b"live again");
    d.settle();
    assert_eq!(d.status()["roots"][0]["state"], "watching");
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn root_moved_away_or_replaced_is_never_turned_into_deletes_and_resumes_when_back() {
    let env = Env::new();
    for i in 0..20 {
        write(&env.src.join(format!("keep/{i}.txt")), b"precious");
    }
    let d = start(&env);
    let before = snapshot(&env.dst);
    let away = env.dir.path().join("src.old");
    lose_root(&d, || std::fs::rename(&env.src, &away).unwrap());
    // Activity in the moved tree, and an empty directory where the root was.
    write(&away.join("keep/new.txt"), b"written while away");
    std::fs::remove_file(away.join("keep/3.txt")).unwrap();
    std::fs::create_dir(&env.src).unwrap();
    assert_held_back(&d, &env, &before);
    let st = d.status();
    assert!(
        st["roots"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("moved back or remounted")),
        "status says why: {st}"
    );
    assert!(
        st["targets"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("source root")),
        "{st}"
    );
    // The real root comes back: watched again and resynced.
    restore_root(&d, &env, || {
        std::fs::remove_dir(&env.src).unwrap();
        std::fs::rename(&away, &env.src).unwrap();
    });
}

#[test]
fn deleted_root_pushes_no_deletes_until_reload_adopts_a_new_one() {
    let env = Env::new();
    for i in 0..5 {
        write(&env.src.join(format!("{i}.txt")), b"precious");
    }
    let d = start(&env);
    let before = snapshot(&env.dst);
    lose_root(&d, || std::fs::remove_dir_all(&env.src).unwrap());
    assert_held_back(&d, &env, &before);
    // A reload while the root is missing is refused and changes nothing.
    let out = d.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&env.src.display().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&env.dst), before, "the target must not change");
    // Restored from a backup: a new directory, adopted by an explicit reload.
    write(&env.src.join("restored.txt"), b"from the backup");
    assert!(d.ctl(&["reload"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

/// A root that is a bind mount of `fs/` (a tmpfs), so it can be unmounted and mounted again
/// with the same device and inode. Returns the tmpfs, the bind mount and `fs/`.
fn mounted_root(env: &Env) -> (Tmpfs, Tmpfs, std::path::PathBuf) {
    let fs = env.dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let tmpfs = Tmpfs::mount(&fs, "8m");
    let bind = Tmpfs::bind(&fs, &env.src);
    for i in 0..10 {
        write(&env.src.join(format!("m/{i}.txt")), b"on the mount");
    }
    (tmpfs, bind, fs)
}

#[test]
fn unmounted_root_is_never_turned_into_deletes_and_resumes_when_remounted() {
    let env = Env::new();
    let (_fs, mut mounted, fs) = mounted_root(&env);
    let d = start(&env);
    let before = snapshot(&env.dst);
    lose_root(&d, || mounted.unmount());
    // The empty directory under the mountpoint now looks like a root that lost everything.
    write(&env.src.join("under-the-mount.txt"), b"x");
    assert_held_back(&d, &env, &before);
    // Changed while unmounted (through its other mountpoint), then mounted again.
    write(&fs.join("m/while-unmounted.txt"), b"y");
    restore_root(&d, &env, || mounted.mount_again());
}

#[test]
fn restart_while_the_root_is_unmounted_pushes_no_deletes_and_waits_for_the_mount() {
    let env = Env::new();
    let (_fs, mut mounted, fs) = mounted_root(&env);
    let d = start(&env);
    let before = snapshot(&env.dst);
    d.stop();
    // Boot order gone wrong: syncd starts before the filesystem is mounted. The startup full
    // sync would make the target as empty as the mountpoint.
    mounted.unmount();
    let d = Syncd::start(&env.local_config(""), &env.socket);
    assert_held_back(&d, &env, &before);
    let st = d.status();
    assert!(
        st["roots"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not the directory syncd last replicated")),
        "{st}"
    );
    // The mount arrives: replication starts by itself.
    write(&fs.join("m/late.txt"), b"written before the mount");
    restore_root(&d, &env, || mounted.mount_again());
}

#[test]
fn filesystem_mounted_over_the_root_is_refused_without_an_inotify_event() {
    let env = Env::new();
    write(&env.src.join("a.txt"), b"precious");
    let d = start(&env);
    let before = snapshot(&env.dst);
    let other = env.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut over = None;
    lose_root(&d, || over = Some(Tmpfs::bind(&other, &env.src)));
    assert_held_back(&d, &env, &before);
    restore_root(&d, &env, || over.as_mut().unwrap().unmount());
}

#[test]
fn syncctl_log_lists_recent_batches_and_follows_new_ones() {
    use std::io::BufRead;
    let env = Env::new();
    let d = start(&env);
    write(&env.src.join("before.txt"), b"1");
    d.settle();
    let out = d.ctl(&["log"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.contains("data/local delivered") && l.contains("before.txt")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("data/local full-sync ") && l.trim_end().ends_with(": .")),
        "the startup sync of the whole root, named `.`: {text}"
    );
    // Following: the recent events first, then each new batch as it is confirmed.
    let mut follower = std::process::Command::new(bin("syncctl"))
        .arg("--socket")
        .arg(&env.socket)
        .args(["--json", "log", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .unwrap();
    assert!(
        first["kind"].is_string() && first["time_ms"].as_u64().unwrap() > 0,
        "{first}"
    );
    write(&env.src.join("followed.txt"), b"2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("an event for followed.txt within 20 s");
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["kind"] == "delivered" && ev["sample"].to_string().contains("followed.txt") {
            assert_eq!(ev["target"], "data/local");
            assert!(ev["paths"].as_u64().unwrap() >= 1);
            break;
        }
    }
    kill_reap(&mut follower);
    // The daemon is unharmed by a follower that went away.
    write(&env.src.join("after.txt"), b"3");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

/// Start syncd on `cfg` and let it settle: it, and the full syncs it was owed (target, why).
fn start_owed(env: &Env, cfg: &Path) -> (Syncd, Vec<(String, String)>) {
    let t = now_ms();
    let d = Syncd::start(cfg, &env.socket);
    d.settle();
    let owed = owed_since(&d, t);
    (d, owed)
}

/// The `full-sync-owed` events since `since`, as (target, why).
fn owed_since(d: &Syncd, since: u64) -> Vec<(String, String)> {
    d.full_syncs_since(since)
        .iter()
        .filter(|e| e["kind"] == "full-sync-owed")
        .map(|e| {
            (
                e["target"].as_str().unwrap_or("").to_string(),
                e["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_full_sync_at_restart_only_where_the_index_cannot_vouch_and_the_log_says_why() {
    let env = Env::new();
    write(&env.src.join("keep.txt"), b"k");
    write(&env.src.join("skipped.tmp"), b"t");
    let dst2 = env.dir.path().join("dst2");
    let one = local_target("local", &env.dst, "");
    let cfg = env.config("exclude = [\"*.tmp\"]", &one);
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert!(!env.dst.join("skipped.tmp").exists());
    assert_eq!(d.stop(), Some(0));

    // A target added while down: a full sync to it alone.
    let two = format!("{one}{}", local_target("second", &dst2, ""));
    let cfg = env.config("exclude = [\"*.tmp\"]", &two);
    let t = now_ms();
    let (d, owed) = start_owed(&env, &cfg);
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert_eq!(owed[0].0, "data/second");
    assert!(owed[0].1.contains("never finished a full sync"), "{owed:?}");
    assert_eq!(
        d.full_syncs_since(t).len(),
        2,
        "owed and run, for the new target only"
    );
    assert!(dst2.join("keep.txt").exists());
    assert_eq!(d.stop(), Some(0));

    // The exclude list changed while down: what it now includes was never pushed.
    let cfg = env.config("", &two);
    let (d, owed) = start_owed(&env, &cfg);
    assert_eq!(owed.len(), 2, "{owed:?}");
    assert!(
        owed.iter().all(|o| o.1.contains("exclude list changed")),
        "{owed:?}"
    );
    assert_same_tree(&env.src, &env.dst);
    assert_same_tree(&env.src, &dst2);
    assert_eq!(d.stop(), Some(0));

    // A damaged index file: moved aside, rebuilt by a full sync.
    let index = env.state.join("journal/index.redb");
    std::fs::write(&index, vec![0x5a; 4096]).unwrap();
    let (d, owed) = start_owed(&env, &cfg);
    assert_eq!(owed.len(), 2, "{owed:?}");
    assert!(
        owed.iter().all(|o| o.1.contains("no complete index")),
        "{owed:?}"
    );
    assert!(env.state.join("journal/index.redb.damaged").exists());
    assert_eq!(d.stop(), Some(0));

    // Nothing changed: a catch-up, no full sync.
    let t = now_ms();
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_eq!(d.full_syncs_since(t), Vec::<serde_json::Value>::new());
    d.wait_event_of("caught-up", t);
}

#[test]
fn a_damaged_journal_is_told_and_answered_by_a_full_sync() {
    let env = Env::new();
    for i in 0..200 {
        write(&env.src.join(format!("f{i}")), b"before");
    }
    let cfg = env.local_config("");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    for i in 0..50 {
        write(&env.src.join(format!("g{i}")), b"after");
    }
    d.settle();
    assert_eq!(d.stop(), Some(0));
    // 2 KB of noise over sled's log: it drops what follows without a word (the writes the
    // index saw with it).
    let db = env.state.join("journal/db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[100..2148].fill(0x5a);
    std::fs::write(&db, bytes).unwrap();
    let (d, owed) = start_owed(&env, &cfg);
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert!(owed[0].1.contains("the journal lost writes"), "{owed:?}");
    assert!(
        d.log.text().contains("the journal lost writes"),
        "said in the log too"
    );
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_hard_linked_file_written_through_one_name_updates_every_name_at_the_target() {
    let env = Env::new();
    write(&env.src.join("a/one"), b"first");
    std::fs::create_dir_all(env.src.join("b")).unwrap();
    std::fs::hard_link(env.src.join("a/one"), env.src.join("b/two")).unwrap();
    let d = start(&env);
    assert_same_tree(&env.src, &env.dst);
    // Appended through one name: inotify tells only that one.
    std::fs::OpenOptions::new()
        .append(true)
        .open(env.src.join("a/one"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // A third name made while running, then a rewrite through it.
    std::fs::hard_link(env.src.join("b/two"), env.src.join("three")).unwrap();
    d.settle();
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.src.join("three"))
        .unwrap()
        .write_all(b"FIRST")
        .unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}
