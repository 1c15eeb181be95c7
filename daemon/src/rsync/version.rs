//! The startup probe of the installed rsync: `--ignore-missing-args` needs 3.1.0 or newer.

/// Why the installed rsync cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "rsync is not installed (not found on PATH): install it, e.g. `apt-get install rsync`"
    )]
    NotInstalled,
    #[error("cannot run rsync --version: {0}")]
    CannotRun(std::io::Error),
    #[error("cannot read the rsync version from: {0}")]
    Unreadable(String),
    #[error("rsync {0} is too old: syncd needs 3.1.0 or newer (--ignore-missing-args)")]
    TooOld(String),
}

/// `rsync --version` → (major, minor, patch), checked at startup.
pub fn probe_rsync() -> Result<(u32, u32, u32), VersionError> {
    let out = std::process::Command::new("rsync")
        .arg("--version")
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VersionError::NotInstalled
            } else {
                VersionError::CannotRun(e)
            }
        })?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// The version in the first lines of `rsync --version`, refused when older than 3.1.0.
fn parse_version(text: &str) -> Result<(u32, u32, u32), VersionError> {
    let ver = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| VersionError::Unreadable(text.lines().next().unwrap_or("").to_string()))?;
    let mut it = ver
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let v = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    if v < (3, 1, 0) {
        return Err(VersionError::TooOld(ver.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_old_ones_refused() {
        let ok = parse_version("rsync  version 3.2.7  protocol version 31\nCopyright").unwrap();
        assert_eq!(ok, (3, 2, 7));
        assert_eq!(
            parse_version("rsync  version v3.4.1dev").unwrap(),
            (3, 4, 1)
        );
        let old = parse_version("rsync  version 3.0.9  protocol version 30").unwrap_err();
        assert_eq!(
            old.to_string(),
            "rsync 3.0.9 is too old: syncd needs 3.1.0 or newer (--ignore-missing-args)"
        );
        assert!(matches!(
            parse_version("openrsync: protocol 29"),
            Err(VersionError::Unreadable(_))
        ));
    }
}
