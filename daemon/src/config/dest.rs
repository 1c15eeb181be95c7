//! Destinations: a local directory, an rsync daemon (`host::module`, `rsync://`) or ssh
//! (`host:path`), parsed by rsync's own rules, and the argument rsync is given for each.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where a target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A local directory.
    Local(PathBuf),
    /// `[user@]host::module[/path]` or `rsync://[user@]host[:port]/module[/path]`.
    Daemon {
        user: Option<String>,
        host: String,
        module: String,
        path: String,
        /// Port given in an `rsync://` URL.
        port: Option<u16>,
    },
    /// `[user@]host:path` through ssh.
    Ssh {
        user: Option<String>,
        host: String,
        path: String,
    },
}

/// How to write a destination, appended to every parse error.
const HELP: &str = "use a local directory, [user@]host::module[/path], rsync://[user@]host[:port]/module[/path] or [user@]host:path";

/// A destination that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestError {
    #[error("empty destination: {HELP}")]
    Empty,
    #[error("empty user before '@': {HELP}")]
    EmptyUser,
    #[error("missing host: {HELP}")]
    MissingHost,
    #[error("invalid host {0:?}: {HELP}")]
    InvalidHost(String),
    #[error("missing module after the host: {HELP}")]
    MissingModule,
    #[error("invalid port {0:?}: {HELP}")]
    InvalidPort(String),
}

/// `[user@]host` → (user, host).
fn split_user(hostpart: &str) -> Result<(Option<String>, String), DestError> {
    let (user, host) = match hostpart.rsplit_once('@') {
        Some(("", _)) => return Err(DestError::EmptyUser),
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, hostpart),
    };
    if host.is_empty() {
        return Err(DestError::MissingHost);
    }
    if host.contains(['/', ' ']) {
        return Err(DestError::InvalidHost(host.to_string()));
    }
    Ok((user, host.to_string()))
}

/// The module/path part of a daemon destination, shared by the `::` and URL forms.
fn daemon(hostpart: &str, modpath: &str, port: Option<u16>) -> Result<Dest, DestError> {
    let (user, host) = split_user(hostpart)?;
    let (module, path) = modpath.split_once('/').unwrap_or((modpath, ""));
    if module.is_empty() {
        return Err(DestError::MissingModule);
    }
    Ok(Dest::Daemon {
        user,
        host,
        module: module.to_string(),
        path: path.trim_end_matches('/').to_string(),
        port,
    })
}

/// `rsync://[user@]host[:port]/module[/path]`, the scheme already taken off.
fn rsync_url(rest: &str) -> Result<Dest, DestError> {
    let (hostport, modpath) = rest.split_once('/').unwrap_or((rest, ""));
    let (hostpart, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| DestError::InvalidPort(p.to_string()))?,
            ),
        ),
        None => (hostport, None),
    };
    daemon(hostpart, modpath, port)
}

impl Dest {
    /// Parse a DEST as written on the command line or in the config.
    pub fn parse(s: &str) -> Result<Dest, DestError> {
        if s.is_empty() {
            return Err(DestError::Empty);
        }
        if let Some(rest) = s.strip_prefix("rsync://") {
            return rsync_url(rest);
        }
        if let Some((hostpart, rest)) = s.split_once("::") {
            if hostpart.contains('/') {
                return Ok(Dest::Local(PathBuf::from(s)));
            }
            return daemon(hostpart, rest, None);
        }
        if let Some((hostpart, path)) = s.split_once(':') {
            // rsync's own rule: a colon after a slash is part of a local path.
            if !hostpart.contains('/') {
                let (user, host) = split_user(hostpart)?;
                return Ok(Dest::Ssh {
                    user,
                    host,
                    path: path.to_string(),
                });
            }
        }
        Ok(Dest::Local(PathBuf::from(s)))
    }

    /// The destination argument for rsync, with the trailing slash that means "into".
    pub fn rsync_arg(&self, sub: &[u8]) -> OsString {
        let mut out = match self {
            Dest::Local(p) => p.as_os_str().as_bytes().to_vec(),
            Dest::Daemon {
                user,
                host,
                module,
                path,
                ..
            } => {
                let mut s = String::new();
                if let Some(u) = user {
                    s.push_str(u);
                    s.push('@');
                }
                s.push_str(host);
                s.push_str("::");
                s.push_str(module);
                if !path.is_empty() {
                    s.push('/');
                    s.push_str(path);
                }
                s.into_bytes()
            }
            Dest::Ssh { user, host, path } => {
                let mut s = String::new();
                if let Some(u) = user {
                    s.push_str(u);
                    s.push('@');
                }
                s.push_str(host);
                s.push(':');
                s.push_str(path);
                s.into_bytes()
            }
        };
        if !sub.is_empty() {
            if !out.ends_with(b"/") && !out.ends_with(b":") {
                out.push(b'/');
            }
            out.extend_from_slice(sub);
        }
        if !out.ends_with(b"/") && !out.ends_with(b":") {
            out.push(b'/');
        }
        std::os::unix::ffi::OsStringExt::from_vec(out)
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.rsync_arg(b"");
        let s = String::from_utf8_lossy(s.as_bytes());
        f.write_str(s.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_forms_parse() {
        assert_eq!(
            Dest::parse("/backup").unwrap(),
            Dest::Local("/backup".into())
        );
        assert_eq!(
            Dest::parse("u@127.0.0.1::mod/sub/").unwrap(),
            Dest::Daemon {
                user: Some("u".into()),
                host: "127.0.0.1".into(),
                module: "mod".into(),
                path: "sub".into(),
                port: None,
            }
        );
        assert_eq!(
            Dest::parse("rsync://u@127.0.0.1:8873/mod/a/b").unwrap(),
            Dest::Daemon {
                user: Some("u".into()),
                host: "127.0.0.1".into(),
                module: "mod".into(),
                path: "a/b".into(),
                port: Some(8873),
            }
        );
        assert!(Dest::parse("rsync://h:notaport/m").is_err());
        assert!(Dest::parse("rsync://h/").is_err());
        assert_eq!(
            Dest::parse("localhost:/srv/x").unwrap(),
            Dest::Ssh {
                user: None,
                host: "localhost".into(),
                path: "/srv/x".into()
            }
        );
        assert_eq!(Dest::parse("./a:b").unwrap(), Dest::Local("./a:b".into()));
        assert!(Dest::parse("host::").is_err());
        assert!(Dest::parse("::mod").is_err());
        assert!(Dest::parse("@host:path").is_err());
        assert!(Dest::parse("").is_err());
    }

    #[test]
    fn rsync_arg_has_trailing_slash_and_subdir() {
        let d = Dest::parse("u@h::m").unwrap();
        assert_eq!(d.rsync_arg(b""), OsString::from("u@h::m/"));
        assert_eq!(d.rsync_arg(b"a/b"), OsString::from("u@h::m/a/b/"));
        let s = Dest::parse("h:").unwrap();
        assert_eq!(s.rsync_arg(b""), OsString::from("h:"));
        assert_eq!(s.rsync_arg(b"x"), OsString::from("h:x/"));
    }
}
