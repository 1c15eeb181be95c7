//! The socket itself: created in a private directory with a umask applied before `bind`, so it
//! is never reachable with looser permissions; and who may connect (SO_PEERCRED: root, the
//! daemon's own uid, or a member of `socket_group`).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Socket setup failures: fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create socket directory {dir}: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("another syncd{pid} is already serving {path}; stop it first (syncctl --socket {path} stop)", pid = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { path: PathBuf, pid: Option<i32> },
    #[error("cannot bind control socket {path}: {error}")]
    Bind {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct Access {
    pub uid: u32,
    pub group: Option<(u32, Vec<String>)>,
}

impl Access {
    /// Access for the daemon's uid and an optional group name.
    pub fn new(group: Option<&str>) -> Access {
        let group = group
            .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| (g.gid.as_raw(), g.mem));
        Access {
            uid: nix::unistd::geteuid().as_raw(),
            group,
        }
    }

    pub(super) fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.uid {
            return true;
        }
        let Some((g, members)) = &self.group else {
            return false;
        };
        if gid == *g {
            return true;
        }
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .is_some_and(|u| members.contains(&u.name))
    }
}

/// Bind the control socket. The caller holds the pidfile lock, so a leftover socket file that
/// nobody answers on is stale and may be removed.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ControlError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let gid = group
        .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
        .map(|g| g.gid);
    if !dir.exists() {
        let dir_err = |error| ControlError::Dir {
            dir: dir.to_path_buf(),
            error,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(if gid.is_some() { 0o750 } else { 0o700 })
            .create(dir)
            .map_err(dir_err)?;
        // Group members must be able to reach the socket.
        if gid.is_some() {
            nix::unistd::chown(dir, None, gid).map_err(|e| dir_err(e.into()))?;
        }
    } else if let Some(gid) = gid {
        // A private directory made for us (systemd's RuntimeDirectory=: owned by our user, no
        // access for others) becomes the group's, so its members can reach the socket. Any
        // other directory (/run itself, somebody else's) keeps what its owner gave it.
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(dir) {
            if m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o007 == 0
                && m.gid() != gid.as_raw()
            {
                let dir_err = |error| ControlError::Dir {
                    dir: dir.to_path_buf(),
                    error,
                };
                nix::unistd::chown(dir, None, Some(gid)).map_err(|e| dir_err(e.into()))?;
                let mode = (m.mode() & 0o700) | 0o050;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(dir_err)?;
            }
        }
    }
    if let Ok(live) = std::os::unix::net::UnixStream::connect(path) {
        let pid = nix::sys::socket::getsockopt(&live, nix::sys::socket::sockopt::PeerCredentials)
            .ok()
            .map(|c| c.pid());
        return Err(ControlError::InUse {
            path: path.to_path_buf(),
            pid,
        });
    }
    let _ = std::fs::remove_file(path);
    let mask = if group.is_some() { 0o007 } else { 0o077 };
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    let res = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = res.map_err(|error| ControlError::Bind {
        path: path.to_path_buf(),
        error,
    })?;
    if gid.is_some() {
        let bind_err = |error| ControlError::Bind {
            path: path.to_path_buf(),
            error,
        };
        nix::unistd::chown(path, None, gid).map_err(|e| bind_err(e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    }
    Ok(listener)
}
