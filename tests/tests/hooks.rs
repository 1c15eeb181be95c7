//! Hooks: `on_batch` gets every delivered path, never through a shell, and never holds up
//! delivery; `on_failure` (in rsync_daemon.rs, next to the refusing module) gets parked paths.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use syncd_tests::*;

/// A hook program recording each run's environment and stdin under `out`; with `out/block`
/// present, a run removes it and hangs without reading its input.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("hook-out");
    std::fs::create_dir_all(&out).unwrap();
    let prog = dir.join("hook.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n\
             out={out}\n\
             if [ -e \"$out/block\" ]; then rm \"$out/block\"; : > \"$out/hanging\"; exec sleep 1000; fi\n\
             n=$$\n\
             env | grep '^SYNCD_' | sort > \"$out/env.$n\"\n\
             cat > \"$out/stdin.$n.tmp\" && mv \"$out/stdin.$n.tmp\" \"$out/stdin.$n\"\n\
             echo \"run $n\"\n",
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, out)
}

/// Every path the hook was given so far (NUL-separated runs), and the environments.
fn recorded(out: &Path) -> (BTreeSet<String>, Vec<String>) {
    let (mut paths, mut envs) = (BTreeSet::new(), Vec::new());
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("stdin.") && !name.ends_with(".tmp") {
            let raw = std::fs::read(e.path()).unwrap();
            for p in raw.split(|b| *b == 0).filter(|p| !p.is_empty()) {
                paths.insert(String::from_utf8_lossy(p).into_owned());
            }
            let pid = &name["stdin.".len()..];
            envs.push(std::fs::read_to_string(out.join(format!("env.{pid}"))).unwrap());
        }
    }
    (paths, envs)
}

fn wait_for_paths(out: &Path, want: &[&str]) -> (BTreeSet<String>, Vec<String>) {
    let all_there = || {
        let (paths, _) = recorded(out);
        want.iter().all(|w| paths.contains(*w))
    };
    let given = wait_for_change_in(out, Duration::from_secs(30), all_there);
    let (paths, envs) = recorded(out);
    assert!(given, "the hook was given {paths:?}, not all of {want:?}");
    (paths, envs)
}

#[test]
fn on_batch_gets_every_delivered_path_on_stdin_with_its_target_in_the_environment() {
    let env = Env::new();
    let (prog, out) = recorder(env.dir.path());
    let cfg = env.config(
        "",
        &local_target(
            "local",
            &env.dst,
            &format!("on_batch = [{:?}, \"--flag with space\"]", prog),
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    write(&env.src.join("a.txt"), b"a");
    write(&env.src.join("dir/b.txt"), b"b");
    // A name a shell would expand: passed as bytes, never interpreted.
    write(&env.src.join("$(touch pwned) *.txt"), b"c");
    d.settle();
    let (paths, envs) = wait_for_paths(&out, &["a.txt", "dir/b.txt", "$(touch pwned) *.txt"]);
    assert!(!env.dir.path().join("pwned").exists() && !Path::new("pwned").exists());
    assert!(!paths.iter().any(|p| p.is_empty()), "{paths:?}");
    let e = &envs[0];
    for want in [
        "SYNCD_HOOK=batch",
        "SYNCD_ROOT=data",
        "SYNCD_TARGET=local",
        "SYNCD_DROPPED=0",
    ] {
        assert!(e.contains(want), "{want} in {e}");
    }
    assert!(e.contains("SYNCD_PATHS="), "{e}");
}

/// syncd with a recording `on_batch` hook (`hook_timeout_s = timeout_s`) whose first run, for
/// `first.txt`, hangs.
fn with_blocked_first_run(timeout_s: u64) -> (Env, Syncd, PathBuf) {
    let env = Env::new();
    let (prog, out) = recorder(env.dir.path());
    let cfg = env.config(
        "",
        &local_target(
            "local",
            &env.dst,
            &format!("on_batch = [{prog:?}]\nhook_timeout_s = {timeout_s}"),
        ),
    );
    let d = Syncd::start(&cfg, &env.socket);
    // The startup full sync is over: a first.txt it sent would give the hook `.` first.
    d.settle();
    std::fs::write(out.join("block"), b"").unwrap();
    write(&env.src.join("first.txt"), b"1");
    d.settle();
    (env, d, out)
}

#[test]
fn a_hung_hook_never_holds_up_delivery_and_is_killed_at_shutdown() {
    let (env, d, out) = with_blocked_first_run(600);
    let pid = d.child.id();
    assert!(
        wait_for_entry(&out, |n| n == "hanging", Duration::from_secs(20)),
        "the first hook run hangs"
    );
    // Deliveries go on while it hangs.
    for i in 0..20 {
        write(&env.src.join(format!("later/{i}.txt")), b"x");
        d.settle();
    }
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(
        children_named(pid, "sleep"),
        1,
        "still hanging, never a second run"
    );
    assert!(recorded(&out).0.is_empty());
    // At shutdown the hung run is killed, and what it never got is said.
    let log = d.log.clone();
    assert_eq!(d.stop(), Some(0));
    let text = log.text();
    assert!(text.contains("hook run killed"), "{text}");
    assert!(text.contains("paths not passed to the hook"), "{text}");
}

#[test]
fn a_hook_is_killed_at_its_timeout_and_its_next_run_gets_what_came_meanwhile() {
    let (env, d, out) = with_blocked_first_run(1);
    write(&env.src.join("second.txt"), b"2");
    d.settle();
    assert!(d
        .log
        .wait_for("hook ran too long; killed", 0, Duration::from_secs(30))
        .is_some());
    let (paths, _) = wait_for_paths(&out, &["second.txt"]);
    // The killed run's own paths are not passed again: it ran, and ran too long.
    assert!(!paths.contains("first.txt"), "{paths:?}");
}

#[test]
fn a_hook_that_is_not_an_absolute_executable_is_refused_by_check_config() {
    let env = Env::new();
    let plain = env.dir.path().join("not-executable.sh");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plain = format!("[{plain:?}]");
    for (argv, problem) in [
        ("[\"purge\"]", "not an absolute path"),
        ("[]", "empty"),
        ("[\"/nonexistent/hook\"]", "No such file"),
        (plain.as_str(), "not an executable file"),
        ("[\"/tmp\"]", "not an executable file"),
    ] {
        let cfg = env.config(
            "",
            &local_target("local", &env.dst, &format!("on_failure = {argv}")),
        );
        let out = std::process::Command::new(bin("syncd"))
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{argv}: {err}");
        assert!(
            err.contains("on_failure") && err.contains(problem),
            "{argv}: {err}"
        );
    }
}

#[test]
fn on_batch_is_told_the_directory_a_full_sync_changed() {
    let env = Env::new();
    write(
        &env.src.join("before-start.txt"),
        b"made while syncd was down",
    );
    write(&env.src.join("d/x"), b"x");
    let (prog, out) = recorder(env.dir.path());
    let cfg = env.config(
        "",
        &local_target("local", &env.dst, &format!("on_batch = [{prog:?}]")),
    );
    // The startup full sync of the root sends both files: the hook hears of the root.
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    wait_for_paths(&out, &["."]);
    // A full sync of d that finds it up to date tells the hook nothing…
    let resync = |what: &Path| {
        let o = d.ctl(&["resync", what.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d.settle();
    };
    resync(&env.src.join("d"));
    write(&env.src.join("barrier.txt"), b"b");
    d.settle();
    let (paths, _) = wait_for_paths(&out, &["barrier.txt"]);
    assert!(!paths.contains("d"), "{paths:?}");
    // …one that repairs it names d.
    write(&env.dst.join("d/x"), b"damaged at the target");
    resync(&env.src.join("d"));
    wait_for_paths(&out, &["d"]);
    assert_same_tree(&env.src, &env.dst);
}
