//! A real rsync daemon on 127.0.0.1: its own port, module and secrets file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;

/// A real rsync daemon on 127.0.0.1 with module `mod`, user `syncuser`, its own secrets file.
pub struct RsyncDaemon {
    pub child: Option<Child>,
    pub port: u16,
    pub module_path: PathBuf,
    pub password_file: PathBuf,
    pub conf: PathBuf,
    pub log: Log,
}

/// The password the fixture's rsync daemon accepts.
pub const RSYNC_PASSWORD: &str = "s3cret-Pw";

impl RsyncDaemon {
    /// Start a daemon serving `module_path`; `module_extra` lines go into the module section.
    pub fn start(dir: &Path, module_path: &Path, module_extra: &str) -> RsyncDaemon {
        Self::start_on(dir, module_path, module_extra, free_port())
    }

    /// Like [`RsyncDaemon::start`] on a given port.
    pub fn start_on(dir: &Path, module_path: &Path, module_extra: &str, port: u16) -> RsyncDaemon {
        let secrets = dir.join("rsyncd.secrets");
        std::fs::write(&secrets, format!("syncuser:{RSYNC_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let password_file = dir.join("rsync.password");
        std::fs::write(&password_file, format!("{RSYNC_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = dir.join("rsyncd.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        write!(
            f,
            "pid file = {dir}/rsyncd.pid\nuse chroot = yes\nmax connections = 20\n\n[mod]\npath = {module}\nread only = false\nmunge symlinks = no\nuid = root\ngid = root\nauth users = syncuser\nsecrets file = {secrets}\n{module_extra}\n",
            dir = dir.display(),
            module = module_path.display(),
            secrets = secrets.display(),
        )
        .unwrap();
        let mut d = RsyncDaemon {
            child: None,
            port,
            module_path: module_path.to_path_buf(),
            password_file,
            conf,
            log: Log::default(),
        };
        d.restart();
        d
    }

    /// (Re)start on the same port.
    pub fn restart(&mut self) {
        let mut child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", self.conf.display()))
            .arg(format!("--port={}", self.port))
            .arg("--address=127.0.0.1")
            .arg("--log-file=/dev/stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsync --daemon");
        self.log = Log::follow(child.stderr.take().unwrap(), "rsyncd");
        self.child = Some(child);
        if self
            .log
            .wait_for("listening on port", 0, Duration::from_secs(15))
            .is_none()
        {
            panic!("rsync daemon did not start:\n{}", self.log.text());
        }
    }

    /// Stop the daemon (kill and reap).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_reap(&mut c);
        }
    }

    /// Kill the daemon *and* the processes it forked for running transfers (they would
    /// otherwise finish on their own): a crash of the whole server.
    pub fn crash(&mut self) {
        let conf = format!("--config={}", self.conf.display());
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == conf.as_bytes()))
            })
            .collect();
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.stop();
    }

    /// DEST for syncd.
    pub fn dest(&self) -> String {
        "syncuser@127.0.0.1::mod".to_string()
    }

    /// A target section pointing at this daemon; `extra` lines override the defaults.
    pub fn target(&self, name: &str, extra: &str) -> String {
        let defaults = format!(
            "name = {name:?}\ndest = {dest:?}\nport = {port}\npassword_file = {pf:?}\ncontimeout_s = 2\ntimeout_s = 10\nretry_initial_ms = 200\nretry_max_ms = 1000",
            dest = self.dest(),
            port = self.port,
            pf = self.password_file,
        );
        format!("[[sync.target]]\n{}\n", merge_keys(&defaults, extra))
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}
