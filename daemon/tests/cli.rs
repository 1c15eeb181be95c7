//! The `syncd` command line: configuration errors name the key, the value and the fix, and a
//! bad configuration never starts anything; a second daemon is refused; forking works.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn syncd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncd"));
    c.stdin(Stdio::null());
    c
}

fn syncctl(socket: &Path, args: &[&str]) -> Output {
    // syncctl is another package's binary: next to ours in the target directory.
    let bin = Path::new(env!("CARGO_BIN_EXE_syncd")).with_file_name("syncctl");
    Command::new(bin)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("syncd-cli")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        Setup { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a config: `root` lines go into [[sync]], `target` lines into [[sync.target]].
    fn config(&self, top: &str, root: &str, target: &str) -> PathBuf {
        let text = format!(
            "state_dir = {:?}\nsocket = {:?}\n{top}\n[[sync]]\nsource = {:?}\n{root}\n[[sync.target]]\n{target}\n",
            self.p("state"),
            self.p("run/s.sock"),
            self.p("src"),
        );
        let path = self.p("syncd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn local_dest(&self) -> String {
        format!("dest = {:?}", self.p("dst"))
    }

    /// Start a second daemon with `top` lines (and a root and target of its own): it must be
    /// refused; returns its message.
    fn second_start(&self, top: &str) -> String {
        let cfg = self.p("second.toml");
        std::fs::write(
            &cfg,
            format!(
                "{top}[[sync]]\nsource = {:?}\n[[sync.target]]\ndest = {:?}\n",
                self.p("src"),
                self.p("dst2")
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
    fn assert_rejected(&self, cfg: &Path, needles: &[&str]) {
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
            assert!(
                !self.p("run/s.sock").exists(),
                "nothing may start half-configured"
            );
        }
    }
}

#[test]
fn valid_config_is_accepted_by_check_config() {
    let s = Setup::new();
    let cfg = s.config("", "", &s.local_dest());
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
    let s = Setup::new();
    let cfg = s.config("", "delay_msec = 5", &s.local_dest());
    s.assert_rejected(&cfg, &["unknown field `delay_msec`"]);
}

#[test]
fn missing_source_names_key_value_and_fix() {
    let s = Setup::new();
    std::fs::remove_dir(s.p("src")).unwrap();
    let cfg = s.config("", "", &s.local_dest());
    s.assert_rejected(&cfg, &["sync[0].source", "/src", "create the directory"]);
}

#[test]
fn password_file_readable_by_others_is_refused() {
    let s = Setup::new();
    let pf = s.p("pw");
    std::fs::write(&pf, "secret\n").unwrap();
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = s.config(
        "",
        "",
        &format!("dest = \"u@127.0.0.1::m\"\npassword_file = {pf:?}"),
    );
    s.assert_rejected(
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
    let s = Setup::new();
    for (dest, why) in [
        ("host::", "missing module"),
        ("@host:x", "empty user"),
        ("", "empty destination"),
    ] {
        let cfg = s.config("", "", &format!("dest = {dest:?}"));
        s.assert_rejected(&cfg, &["sync[0].target[0].dest", why]);
    }
}

#[test]
fn other_bad_values_name_the_allowed_range() {
    let s = Setup::new();
    let cases: Vec<(String, String, &str)> = vec![
        (
            String::new(),
            format!("{}\nworkers = 99", s.local_dest()),
            "allowed: 1 to 16",
        ),
        (
            String::new(),
            format!("{}\nrsync_args = [\"/etc\"]", s.local_dest()),
            "starting with '-'",
        ),
        (
            "name = \"bad name!\"".into(),
            s.local_dest(),
            "sync[0].name",
        ),
        (
            String::new(),
            format!("{}\nport = 873", s.local_dest()),
            "has no port",
        ),
        ("exclude = [\"\"]".into(), s.local_dest(), "empty pattern"),
    ];
    for (root, target, needle) in cases {
        let cfg = s.config("", &root, &target);
        s.assert_rejected(&cfg, &[needle]);
    }
    // Not TOML at all.
    std::fs::write(s.p("syncd.toml"), "[[sync]\nsource=").unwrap();
    s.assert_rejected(&s.p("syncd.toml"), &["syncd.toml", "TOML parse error"]);
    // No targets.
    std::fs::write(
        s.p("syncd.toml"),
        format!("[[sync]]\nsource = {:?}\n", s.p("src")),
    )
    .unwrap();
    s.assert_rejected(&s.p("syncd.toml"), &["sync[0].target", "add at least one"]);
}

#[test]
fn quick_mode_rejects_a_bad_target() {
    let s = Setup::new();
    let out = syncd()
        .arg("--source")
        .arg(s.p("src"))
        .args(["--target", "h::"])
        .arg("--state-dir")
        .arg(s.p("state"))
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing module"));
}

#[test]
fn forks_into_the_background_and_a_second_daemon_is_refused() {
    let s = Setup::new();
    let cfg = s.config("", "", &s.local_dest());
    // Without --foreground the launcher returns only once the daemon is ready.
    let out = syncd().arg("--config").arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sock = s.p("run/s.sock");
    let st = syncctl(&sock, &["--json", "status"]);
    assert!(
        st.status.success(),
        "daemon answers right after the launcher exits"
    );
    let json = String::from_utf8_lossy(&st.stdout);
    let pid: i32 = std::fs::read_to_string(s.p("state/syncd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(json.contains(&format!("\"pid\":{pid}")), "{json}");
    // Forked, it logs to state_dir/syncd.log.
    let log = std::fs::read_to_string(s.p("state/syncd.log")).unwrap();
    assert!(log.contains("syncd ready"), "{log}");
    // The socket is private.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().mode() & 0o077,
        0,
        "socket must not be group/other accessible"
    );
    assert_eq!(
        std::fs::metadata(s.p("run")).unwrap().mode() & 0o077,
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
    assert!(syncctl(&sock, &["stop"]).status.success());
    // The daemon is not our child: wait for its pidfile lock to be released.
    let f = std::fs::File::open(s.p("state/syncd.pid")).unwrap();
    f.lock().unwrap();
    assert!(!sock.exists(), "socket removed at exit");
}

#[test]
fn second_daemon_sharing_only_the_state_dir_or_only_the_socket_is_refused() {
    let s = Setup::new();
    let cfg = s.config("", "", &s.local_dest());
    let mut first = syncd()
        .arg("--config")
        .arg(&cfg)
        .arg("--foreground")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sock = s.p("run/s.sock");
    // Ready once it says so (a dead daemon ends the stream and fails the test).
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(first.stderr.take().unwrap()));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("syncd ready"))),
        "first daemon never became ready"
    );
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let pid = first.id().to_string();
    // Same state directory, its own pidfile and socket.
    let err = s.second_start(&format!(
        "state_dir = {:?}\nsocket = {:?}\npidfile = {:?}\n",
        s.p("state"),
        s.p("run2/s.sock"),
        s.p("other.pid"),
    ));
    assert!(
        err.contains("already running") && err.contains(&pid),
        "{err}"
    );
    assert!(
        err.contains("syncd.lock"),
        "names the state directory's lock: {err}"
    );
    // Same socket, its own state directory.
    let err = s.second_start(&format!(
        "state_dir = {:?}\nsocket = {:?}\n",
        s.p("state2"),
        sock
    ));
    assert!(
        err.contains("already serving") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    // The first one is untouched.
    assert!(syncctl(&sock, &["status"]).status.success());
    assert!(syncctl(&sock, &["stop"]).status.success());
    first.wait().unwrap();
}

#[test]
fn daemon_start_failure_reaches_the_terminal() {
    let s = Setup::new();
    // The socket path's parent is a file: the daemon cannot bind, after forking.
    std::fs::write(s.p("run"), "not a dir").unwrap();
    let cfg = s.config("", "", &s.local_dest());
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
    let s = Setup::new();
    let cfg = s.config("", "", &s.local_dest());
    let notify_path = s.p("notify.sock");
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
    assert!(syncctl(&s.p("run/s.sock"), &["status"]).status.success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 at shutdown");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
