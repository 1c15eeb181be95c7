//! The `syncd` command line: configuration errors name the key, the value and the fix, and a
//! bad configuration never starts anything; a second daemon is refused; forking works.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use syncd_tests::*;

fn syncd() -> Command {
    let mut c = Command::new(bin("syncd"));
    c.stdin(Stdio::null());
    c
}

fn p(env: &Env, rel: &str) -> PathBuf {
    env.dir.path().join(rel)
}

/// A config of one root (`root` lines) and its target sections.
fn config(env: &Env, top: &str, root: &str, targets: &str) -> PathBuf {
    env.config_top(top, root, targets)
}

/// The local target into `dst/`, with `extra` lines.
fn local(env: &Env, extra: &str) -> String {
    local_target("local", &env.dst, extra)
}

/// Start a second daemon with `top` lines (and a root and target of its own): it must be
/// refused; returns its message.
fn second_start(env: &Env, top: &str) -> String {
    let cfg = p(env, "second.toml");
    std::fs::write(
        &cfg,
        format!(
            "{top}[[sync]]\nsource = {:?}\n[[sync.target]]\ndest = {:?}\n",
            env.src,
            p(env, "dst2")
        ),
    )
    .unwrap();
    let out = syncd()
        .arg("--config")
        .arg(&cfg)
        .arg("--foreground")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// `syncd check-config` and a real start must both fail with a message containing `needles`.
fn assert_rejected(env: &Env, cfg: &Path, needles: &[&str]) {
    for args in [vec!["check-config"], vec!["--foreground"]] {
        let out = syncd()
            .arg("--config")
            .arg(cfg)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} must fail: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: message lacks {n:?}: {err}");
        }
        assert!(!env.socket.exists(), "nothing may start half-configured");
    }
}

#[test]
fn valid_config_is_accepted_by_check_config() {
    let env = Env::new();
    let cfg = config(&env, "", "", &local(&env, ""));
    let out = syncd()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 root(s), 1 target(s)"));
}

#[test]
fn unknown_key_is_named() {
    let env = Env::new();
    let cfg = config(&env, "", "delay_msec = 5", &local(&env, ""));
    assert_rejected(&env, &cfg, &["unknown field `delay_msec`"]);
}

#[test]
fn missing_source_names_key_value_and_fix() {
    let env = Env::new();
    std::fs::remove_dir(&env.src).unwrap();
    let cfg = config(&env, "", "", &local(&env, ""));
    assert_rejected(
        &env,
        &cfg,
        &["sync[0].source", "/src", "create the directory"],
    );
}

#[test]
fn password_file_readable_by_others_is_refused() {
    let env = Env::new();
    let pf = p(&env, "pw");
    std::fs::write(&pf, "secret\n").unwrap();
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config(
        &env,
        "",
        "",
        &format!("[[sync.target]]\ndest = \"u@127.0.0.1::m\"\npassword_file = {pf:?}"),
    );
    assert_rejected(
        &env,
        &cfg,
        &[
            "sync[0].target[0].password_file",
            "readable by others",
            "chmod 600",
        ],
    );
    assert!(!String::from_utf8_lossy(
        &syncd()
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap()
            .stderr
    )
    .contains("secret"));
}

#[test]
fn unparsable_dest_is_named() {
    let env = Env::new();
    for (dest, why) in [
        ("host::", "missing module"),
        ("@host:x", "empty user"),
        ("", "empty destination"),
    ] {
        let cfg = config(&env, "", "", &format!("[[sync.target]]\ndest = {dest:?}\n"));
        assert_rejected(&env, &cfg, &["sync[0].target[0].dest", why]);
    }
}

#[test]
fn other_bad_values_name_the_allowed_range() {
    let env = Env::new();
    let cases: Vec<(String, String, &str)> = vec![
        (
            String::new(),
            local(&env, "workers = 99"),
            "allowed: 1 to 16",
        ),
        (
            String::new(),
            local(&env, "rsync_args = [\"/etc\"]"),
            "starting with '-'",
        ),
        (
            "name = \"bad name!\"".into(),
            local(&env, ""),
            "sync[0].name",
        ),
        (String::new(), local(&env, "port = 873"), "has no port"),
        ("exclude = [\"\"]".into(), local(&env, ""), "empty pattern"),
    ];
    for (root, target, needle) in cases {
        let cfg = env.config(&root, &target);
        assert_rejected(&env, &cfg, &[needle]);
    }
    // Not TOML at all.
    std::fs::write(p(&env, "syncd.toml"), "[[sync]\nsource=").unwrap();
    assert_rejected(
        &env,
        &p(&env, "syncd.toml"),
        &["syncd.toml", "TOML parse error"],
    );
    // No targets.
    std::fs::write(
        p(&env, "syncd.toml"),
        format!("[[sync]]\nsource = {:?}\n", env.src),
    )
    .unwrap();
    assert_rejected(
        &env,
        &p(&env, "syncd.toml"),
        &["sync[0].target", "add at least one"],
    );
}

#[test]
fn quick_mode_rejects_a_bad_target() {
    let env = Env::new();
    let out = syncd()
        .arg("--source")
        .arg(env.src)
        .args(["--target", "h::"])
        .arg("--state-dir")
        .arg(env.state)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing module"));
}

#[test]
fn forks_into_the_background_and_a_second_daemon_is_refused() {
    let env = Env::new();
    let cfg = config(&env, "", "", &local(&env, ""));
    // Without --foreground the launcher returns only once the daemon is ready.
    let out = syncd().arg("--config").arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sock = env.socket.clone();
    let st = ctl(&sock, &["--json", "status"]);
    assert!(
        st.status.success(),
        "daemon answers right after the launcher exits"
    );
    let json = String::from_utf8_lossy(&st.stdout);
    let pid: i32 = std::fs::read_to_string(env.state.join("syncd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(json.contains(&format!("\"pid\":{pid}")), "{json}");
    // Forked, it logs to state_dir/syncd.log.
    let log = std::fs::read_to_string(env.state.join("syncd.log")).unwrap();
    assert!(log.contains("syncd ready"), "{log}");
    // The socket is private.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().mode() & 0o077,
        0,
        "socket must not be group/other accessible"
    );
    assert_eq!(
        std::fs::metadata(p(&env, "run")).unwrap().mode() & 0o077,
        0,
        "socket dir must be private"
    );
    // A second daemon on the same state dir is refused, naming the running one.
    let second = syncd()
        .arg("--config")
        .arg(&cfg)
        .arg("--foreground")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains(&pid.to_string()),
        "{err}"
    );
    // Stop it.
    assert!(ctl(&sock, &["stop"]).status.success());
    // The daemon is not our child: wait for its pidfile lock to be released.
    let f = std::fs::File::open(env.state.join("syncd.pid")).unwrap();
    f.lock().unwrap();
    assert!(!sock.exists(), "socket removed at exit");
}

#[test]
fn second_daemon_sharing_only_the_state_dir_or_only_the_socket_is_refused() {
    let env = Env::new();
    let cfg = config(&env, "", "", &local(&env, ""));
    let first = Syncd::start(&cfg, &env.socket);
    let sock = env.socket.clone();
    let pid = first.child.id().to_string();
    // Same state directory, its own pidfile and socket.
    let err = second_start(
        &env,
        &format!(
            "state_dir = {:?}\nsocket = {:?}\npidfile = {:?}\n",
            env.state,
            p(&env, "run2/s.sock"),
            p(&env, "other.pid"),
        ),
    );
    assert!(
        err.contains("already running") && err.contains(&pid),
        "{err}"
    );
    assert!(
        err.contains("syncd.lock"),
        "names the state directory's lock: {err}"
    );
    // Same socket, its own state directory.
    let err = second_start(
        &env,
        &format!("state_dir = {:?}\nsocket = {:?}\n", p(&env, "state2"), sock),
    );
    assert!(
        err.contains("already serving") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    // The first one is untouched.
    assert!(ctl(&sock, &["status"]).status.success());
    assert_eq!(first.stop(), Some(0));
}

#[test]
fn daemon_start_failure_reaches_the_terminal() {
    let env = Env::new();
    // The socket path's parent is a file: the daemon cannot bind, after forking.
    std::fs::write(p(&env, "run"), "not a dir").unwrap();
    let cfg = config(&env, "", "", &local(&env, ""));
    let out = syncd().arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("socket"),
        "the launcher prints the daemon's reason: {err}"
    );
}

#[test]
fn foreground_daemon_notifies_systemd_when_ready_and_when_stopping() {
    let env = Env::new();
    let cfg = config(&env, "", "", &local(&env, ""));
    let notify_path = p(&env, "notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut child = syncd()
        .arg("--config")
        .arg(&cfg)
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Ready means serving: the socket answers now.
    assert!(ctl(&env.socket, &["status"]).status.success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 at shutdown");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
