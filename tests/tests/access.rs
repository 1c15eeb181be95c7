//! Who may use the control socket: root, the daemon's own user, members of `socket_group`;
//! everyone else is refused, by file permissions and again by SO_PEERCRED.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use syncd_tests::*;

const NOBODY: u32 = 65534;

/// syncctl copied where any user can run it (the build directory may not be reachable).
fn public_syncctl(dir: &Path) -> PathBuf {
    let p = dir.join("syncctl");
    std::fs::copy(bin("syncctl"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

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
    let ctl = public_syncctl(env.dir.path());
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
    let ctl = public_syncctl(env.dir.path());
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
