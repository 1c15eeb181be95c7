//! The real `syncd` in a temp dir: started, waited on (`wait-idle`, its log), stopped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::*;

/// A running `syncd --foreground`.
pub struct Syncd {
    pub child: Child,
    pub log: Log,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Syncd {
    /// Start syncd on `config` and wait for "syncd ready".
    pub fn start(config: &Path, socket: &Path) -> Syncd {
        Self::start_with_env(config, socket, &[])
    }

    /// Start with extra environment (a fault-injecting PATH, say).
    pub fn start_with_env(config: &Path, socket: &Path, env: &[(&str, &OsStr)]) -> Syncd {
        Self::start_from(Command::new(bin("syncd")), config, socket, env)
    }

    /// Start as user `uid`/`gid`, from a copy of the binary in `dir` (which that user can
    /// reach; the build directory may not be).
    pub fn start_as(config: &Path, socket: &Path, dir: &Path, uid: u32, gid: u32) -> Syncd {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(public_bin("syncd", dir));
        cmd.uid(uid).gid(gid);
        Self::start_from(cmd, config, socket, &[])
    }

    fn start_from(mut cmd: Command, config: &Path, socket: &Path, env: &[(&str, &OsStr)]) -> Syncd {
        cmd.arg("--foreground")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SYNCD_TEST_LOG: another filter for a run being looked into (`syncd::rsync::run=trace`
        // logs every rsync's command and list).
        let filter = std::env::var("SYNCD_TEST_LOG").unwrap_or_else(|_| "info,syncd=debug".into());
        cmd.env("SYNCD_LOG", filter);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_retrying(&mut cmd);
        let log = Log::follow(child.stderr.take().unwrap(), "syncd");
        let s = Syncd {
            child,
            log,
            socket: socket.to_path_buf(),
            config: config.to_path_buf(),
        };
        if s.log
            .wait_for("syncd ready", 0, Duration::from_secs(30))
            .is_none()
        {
            let dir = config.parent().unwrap_or(Path::new("/"));
            panic!(
                "syncd did not become ready:\n{}\nprocesses with files open under {}:\n{}",
                s.log.text(),
                dir.display(),
                holders(dir).join("\n")
            );
        }
        s
    }

    /// Run syncctl against this daemon.
    pub fn ctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        ctl(&self.socket, args)
    }

    /// `syncctl wait-idle --timeout T`: the exit code.
    pub fn wait_idle(&self, timeout_s: u32) -> i32 {
        let out = self.ctl(&["wait-idle", "--timeout", &timeout_s.to_string()]);
        out.status.code().unwrap_or(-1)
    }

    /// Wait idle and require exit 0 (everything delivered, nothing failed).
    pub fn settle(&self) {
        let out = self.ctl(&["wait-idle", "--timeout", "60"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "wait-idle: {}{}\nstatus: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&self.ctl(&["status"]).stdout),
            self.log.text()
        );
    }

    /// `syncctl --json status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["--json", "status"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// One target's status object by name.
    pub fn target_status(&self, name: &str) -> serde_json::Value {
        let s = self.status();
        s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .expect("target in status")
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().ok()?;
        st.code()
    }

    /// SIGKILL and reap: a crash.
    pub fn kill9(mut self) {
        kill_reap(&mut self.child);
    }
}

impl Drop for Syncd {
    fn drop(&mut self) {
        // SIGTERM first so syncd kills its own rsync children; SIGKILL if it does not exit.
        terminate(&mut self.child, Duration::from_secs(15));
    }
}
