//! A real sshd on 127.0.0.1 with its own host key and an authorized key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;

/// A real sshd on 127.0.0.1 with its own host key and an authorized client key.
pub struct Sshd {
    pub child: Child,
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub log: Log,
    conf: PathBuf,
}

impl Sshd {
    /// Start sshd in `dir` (keys, config and pid file there); panics when it is not installed.
    pub fn start(dir: &Path) -> Sshd {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd missing: apt-get install openssh-server (tests/run does)"
        );
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        for k in [&host_key, &client_key] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen failed");
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_ed25519.pub"), &auth).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\nLogLevel INFO\n",
                hk = host_key.display(),
                auth = auth.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let (child, log) = spawn(&conf);
        Sshd {
            child,
            port,
            client_key,
            known_hosts,
            log,
            conf,
        }
    }

    /// Kill sshd: the target is down (connections refused).
    pub fn stop(&mut self) {
        kill_reap(&mut self.child);
    }

    /// Start sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        (self.child, self.log) = spawn(&self.conf);
    }

    /// A target section for `user@127.0.0.1:path`.
    pub fn target(&self, name: &str, path: &Path) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        format!(
            "[[sync.target]]\nname = {name:?}\ndest = \"{user}@127.0.0.1:{path}\"\nport = {port}\nssh_args = [\"-i\", {key:?}, \"-o\", \"UserKnownHostsFile={kh}\", \"-o\", \"StrictHostKeyChecking=yes\"]\nretry_initial_ms = 200\nretry_max_ms = 5000\n",
            path = path.display(),
            port = self.port,
            key = self.client_key,
            kh = self.known_hosts.display(),
        )
    }
}

/// Run sshd on `conf` until it listens.
fn spawn(conf: &Path) -> (Child, Log) {
    let mut child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sshd");
    let log = Log::follow(child.stderr.take().unwrap(), "sshd");
    if log
        .wait_for("Server listening", 0, Duration::from_secs(15))
        .is_none()
    {
        kill_reap(&mut child);
        panic!("sshd did not start:\n{}", log.text());
    }
    (child, log)
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_reap(&mut self.child);
    }
}
