//! Who may use the control socket: root, the daemon's own user, members of `socket_group`;
//! everyone else is refused, by file permissions and again by SO_PEERCRED.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use syncd_tests::*;

const NOBODY: u32 = 65534;

fn as_user(syncctl: &Path, socket: &Path, uid: u32, gid: u32) -> Output {
    // std drops supplementary groups when it changes the uid.
    Command::new(syncctl)
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// Let other users traverse the test directory (tempdirs are 0700).
fn open_up(env: &Env) {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn other_users_are_refused_by_permissions_and_by_peer_credentials() {
    let env = Env::new();
    open_up(&env);
    let d = Syncd::start(&env.local_config(""), &env.socket);
    let run_dir = env.socket.parent().unwrap();
    assert_eq!(std::fs::metadata(run_dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&env.socket).unwrap().mode() & 0o077, 0);
    let ctl = public_bin("syncctl", env.dir.path());
    let out = as_user(&ctl, &env.socket, NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    // Even with the file permissions opened up by mistake, the daemon checks who connects.
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_user(&ctl, &env.socket, NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only root, the daemon's user or socket_group"),
        "{err}"
    );
    // Root still gets in, and the daemon is unharmed.
    assert!(d.ctl(&["status"]).status.success());
}

struct TempGroup(String);

impl TempGroup {
    fn create() -> TempGroup {
        let name = format!("syncdt{}", std::process::id());
        let st = Command::new("groupadd")
            .arg(&name)
            .status()
            .expect("groupadd");
        assert!(st.success(), "groupadd {name} failed (root needed)");
        TempGroup(name)
    }

    fn gid(&self) -> u32 {
        nix::unistd::Group::from_name(&self.0)
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).status();
    }
}

#[test]
fn members_of_socket_group_are_allowed() {
    let group = TempGroup::create();
    let env = Env::new();
    open_up(&env);
    let cfg = env.config_top(
        &format!("socket_group = {:?}", group.0),
        "",
        &local_target("local", &env.dst, ""),
    );
    let d = Syncd::start(&cfg, &env.socket);
    let run_dir = env.socket.parent().unwrap();
    let (dm, sm) = (
        std::fs::metadata(run_dir).unwrap(),
        std::fs::metadata(&env.socket).unwrap(),
    );
    assert_eq!(dm.mode() & 0o777, 0o750);
    assert_eq!(sm.mode() & 0o777, 0o660);
    assert_eq!(sm.gid(), group.gid());
    let ctl = public_bin("syncctl", env.dir.path());
    let out = as_user(&ctl, &env.socket, NOBODY, group.gid());
    assert!(
        out.status.success(),
        "a group member is served: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_user(&ctl, &env.socket, NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(1), "a non-member is refused");
    assert!(d.ctl(&["status"]).status.success());
}

/// Hand the test tree to `nobody` so syncd can run as that user.
fn give_to_nobody(env: &Env) {
    open_up(env);
    std::fs::create_dir_all(&env.state).unwrap();
    let run = env.socket.parent().unwrap();
    std::fs::create_dir_all(run).unwrap();
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in [&env.src, &env.dst, &env.state, &run.to_path_buf()] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

#[test]
fn unreadable_source_file_is_reported_failed_and_the_rest_of_its_batch_delivered() {
    let env = Env::new();
    give_to_nobody(&env);
    let cfg = env.config("", &local_target("local", &env.dst, "max_attempts = 2"));
    let d = Syncd::start_as(&cfg, &env.socket, env.dir.path(), NOBODY, NOBODY);
    d.settle();
    // One batch: twenty readable files and one only root can read.
    assert!(d.ctl(&["pause"]).status.success());
    for i in 0..20 {
        write(&env.src.join(format!("batch/{i}.txt")), b"readable");
    }
    let secret = env.src.join("batch/secret.txt");
    write(&secret, b"root only");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(d.wait_idle(1), 4);
    assert!(d.ctl(&["resume"]).status.success());
    assert_eq!(d.wait_idle(60), 3, "idle with a failed path");
    let failed = d.ctl(&["failed"]);
    let listed = String::from_utf8_lossy(&failed.stdout);
    assert!(
        listed.contains("batch/secret.txt") && listed.contains("Permission denied"),
        "the path and rsync's reason: {listed}"
    );
    assert_eq!(
        listed.lines().filter(|l| l.contains("batch/")).count(),
        1,
        "only that path: {listed}"
    );
    for i in 0..20 {
        assert_eq!(
            std::fs::read(env.dst.join(format!("batch/{i}.txt"))).unwrap(),
            b"readable"
        );
    }
    assert!(!env.dst.join("batch/secret.txt").exists());
    // Made readable: the change is seen and the path delivered.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn state_directory_the_daemon_cannot_use_is_a_clear_error_at_start() {
    let env = Env::new();
    give_to_nobody(&env);
    // Root's directory, closed to others.
    std::os::unix::fs::chown(&env.state, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&env.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = env.local_config("");
    let exe = public_bin("syncd", env.dir.path());
    let out = Command::new(&exe)
        .arg("--foreground")
        .arg("--config")
        .arg(&cfg)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state directory")
            && err.contains("Permission denied")
            && err.contains("state_dir"),
        "{err}"
    );
    assert!(!env.socket.exists());
}
