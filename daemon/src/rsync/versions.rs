//! The versions a target keeps (`versions = NAME`): one directory per rsync run under `NAME/`
//! at the target root, named by the run's UTC time (RFC 3339, milliseconds). Listed with
//! `rsync --list-only`, deleted by include rules from an empty source: the same for a
//! local directory, a daemon module and ssh, with no shell at the target.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use super::exit::{classify, Outcome};
use super::Runner;

impl Runner {
    /// The run directories under the target's versions directory (none when it does not exist
    /// yet). `Err`: the target could not be asked.
    pub async fn version_runs(&self) -> Result<Vec<String>, Outcome> {
        let Some(v) = &self.target.versions else {
            return Ok(Vec::new());
        };
        let mut c = self.transport_command();
        // One level: the runs, not every file kept in them (`-a` recurses).
        c.args(["--list-only", "--no-recursive", "--dirs"])
            .arg(self.target.dest.rsync_arg(v.as_bytes()));
        Ok(run_names(&String::from_utf8_lossy(&listing(c).await?)))
    }

    /// Delete the run directories `runs` (names under the versions directory) at the target.
    pub async fn delete_version_runs(&self, runs: &[String]) -> Result<(), Outcome> {
        let Some(v) = &self.target.versions else {
            return Ok(());
        };
        let empty = tempfile::Builder::new()
            .prefix("syncd-prune")
            .tempdir()
            .map_err(|e| Outcome::TargetDown(format!("cannot make an empty directory: {e}")))?;
        let runs: Vec<Vec<u8>> = runs.iter().map(|r| r.as_bytes().to_vec()).collect();
        let (c, list) = self.removal_command(empty.path(), v.as_bytes(), &runs);
        let run = super::run::run(c, Some(list), None, Some(self.target.push_deadline)).await;
        match run.outcome {
            Outcome::Delivered => Ok(()),
            other => Err(other),
        }
    }
}

impl Runner {
    /// The kept versions of `rel` (a path relative to the root): every run directory that holds
    /// it, oldest first, with its size. One `rsync --list-only -r` filtered down to that path.
    pub async fn versions_of(&self, rel: &[u8]) -> Result<Vec<(String, u64)>, Outcome> {
        let Some(v) = &self.target.versions else {
            return Ok(Vec::new());
        };
        let mut c = self.transport_command();
        c.args(["--list-only", "--prune-empty-dirs"]);
        c.args(path_filters(rel))
            .arg("--exclude=*")
            .arg(self.target.dest.rsync_arg(v.as_bytes()));
        let listing = listing(c).await?;
        let mut found: Vec<(String, u64)> = listed(&listing)
            .filter_map(|(size, symlink, name)| {
                let slash = name.iter().position(|&b| b == b'/')?;
                let (run, path) = (&name[..slash], &name[slash + 1..]);
                // A symlink is listed as `NAME -> TARGET`.
                let is_rel = path == rel
                    || (symlink && path.starts_with(rel) && path[rel.len()..].starts_with(b" -> "));
                is_rel.then(|| (String::from_utf8_lossy(run).into_owned(), size))
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

/// `--include`s that let a recursive listing of the versions directory reach `rel` in every
/// run directory (`/*/`) and nothing else (with a final `--exclude=*`): its wildcards escaped,
/// its bytes as they are.
fn path_filters(rel: &[u8]) -> Vec<OsString> {
    let mut escaped = Vec::with_capacity(rel.len());
    for &b in rel {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            escaped.push(b'\\');
        }
        escaped.push(b);
    }
    let include = |pattern: &[u8]| {
        let mut a = b"--include=/*/".to_vec();
        a.extend_from_slice(pattern);
        OsString::from_vec(a)
    };
    let mut out = vec![include(b"")];
    let parts: Vec<&[u8]> = escaped.split(|&b| b == b'/').collect();
    for i in 1..parts.len() {
        let mut dir = parts[..i].join(&b'/');
        dir.push(b'/');
        out.push(include(&dir));
    }
    out.push(include(&escaped));
    out
}

/// What the `rsync --list-only` command `c` printed; empty when the versions directory does
/// not exist yet.
async fn listing(mut c: tokio::process::Command) -> Result<Vec<u8>, Outcome> {
    c.stdout(Stdio::piped());
    let out = c
        .output()
        .await
        .map_err(|e| Outcome::TargetDown(format!("cannot start rsync: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match classify(out.status, &stderr) {
        Outcome::Delivered => Ok(out.stdout),
        Outcome::Partial(_) if stderr.contains("No such file or directory") => Ok(Vec::new()),
        Outcome::Partial(e) => Err(Outcome::Permanent(e)),
        other => Err(other),
    }
}

/// The entries of an `rsync --list-only` listing that are not directories: size, whether a
/// symlink, and name (rsync's `\#ooo` escapes turned back into bytes).
fn listed(listing: &[u8]) -> impl Iterator<Item = (u64, bool, Vec<u8>)> + '_ {
    listing
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"d"))
        .filter_map(|l| {
            let mut rest = l;
            let mut fields = Vec::new();
            for _ in 0..4 {
                rest = rest.trim_ascii_start();
                let end = rest.iter().position(|&b| b == b' ')?;
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let size = std::str::from_utf8(fields[1])
                .ok()?
                .replace(',', "")
                .parse()
                .ok()?;
            Some((size, l.starts_with(b"l"), unescape(rest.trim_ascii_start())))
        })
}

/// A name as rsync prints it: bytes that are not printable (or not valid in its locale), and a
/// `\` that starts what looks like an escape, are written `\#ooo` (octal).
fn unescape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let esc = name.get(i..i + 5).filter(|e| {
            e[0] == b'\\' && e[1] == b'#' && e[2..].iter().all(|d| (b'0'..=b'7').contains(d))
        });
        match esc {
            Some(e) => {
                let byte = e[2..].iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(byte as u8);
                i += 5;
            }
            None => {
                out.push(name[i]);
                i += 1;
            }
        }
    }
    out
}

/// The names of the directories `rsync --list-only DIR/` lists (`.`, DIR itself, left out):
/// `drwxr-xr-x   4,096 2026/12/04 18:05:00 NAME`.
fn run_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|n| *n != ".")
        .map(str::to_string)
        .collect()
}

/// Of the run directories `runs`, those of runs older than `keep` at `now`; a name that is
/// not a run's time (put there by hand) is left alone.
pub fn expired(runs: &[String], now: SystemTime, keep: Duration) -> Vec<String> {
    let Some(limit) = now.checked_sub(keep) else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| humantime::parse_rfc3339(r).is_ok_and(|t| t < limit))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_directories_are_read_from_rsyncs_listing() {
        let listing = "drwxr-xr-x          4,096 2026/12/04 18:05:00 .\n\
                       drwxr-xr-x          4,096 2026/12/04 18:05:00 2026-12-04T18:05:00.123Z\n\
                       -rw-r--r--             12 2026/12/04 18:05:00 stray-file\n\
                       drwxr-xr-x          4,096 2026/11/01 10:00:00 2026-11-01T10:00:00.000Z\n";
        assert_eq!(
            run_names(listing),
            ["2026-12-04T18:05:00.123Z", "2026-11-01T10:00:00.000Z"]
        );
    }

    #[test]
    fn files_are_read_from_a_listing_with_their_size_and_whole_name() {
        let listing = "drwxr-xr-x          4,096 2026/12/04 18:05:00 .\n\
                       -rw-r--r--          1,234 2026/12/04 18:05:00 2026-12-04T18:05:00.123Z/a b.txt\n";
        let got: Vec<(u64, bool, Vec<u8>)> = listed(listing.as_bytes()).collect();
        assert_eq!(
            got,
            [(1234, false, b"2026-12-04T18:05:00.123Z/a b.txt".to_vec())]
        );
    }

    #[test]
    fn rsyncs_escapes_are_turned_back_into_the_names_bytes() {
        let listing =
            b"-rw-r--r--              9 2026/12/04 18:05:00 r/odd \\#377\\#012\\#134#101 *.txt\n\
                        lrwxrwxrwx              3 2026/12/04 18:05:00 r/link -> a\\#b\n";
        let got: Vec<(u64, bool, Vec<u8>)> = listed(listing).collect();
        assert_eq!(
            got,
            [
                (9, false, b"r/odd \xff\n\\#101 *.txt".to_vec()),
                (3, true, b"r/link -> a\\#b".to_vec())
            ]
        );
        assert_eq!(unescape(b"\\#1"), b"\\#1", "not an escape: too short");
    }

    #[test]
    fn the_filters_reach_one_path_in_every_run_with_its_wildcards_escaped() {
        let got = path_filters(b"d*/x\xff?");
        let want: Vec<&[u8]> = vec![
            b"--include=/*/",
            b"--include=/*/d\\*/",
            b"--include=/*/d\\*/x\xff\\?",
        ];
        assert_eq!(
            got,
            want.into_iter()
                .map(|w| OsString::from_vec(w.to_vec()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn only_runs_older_than_the_limit_expire() {
        let now = humantime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let runs: Vec<String> = [
            "2026-11-04T11:59:59.999Z",
            "2026-11-04T12:00:00.001Z",
            "2026-12-04T11:00:00.000Z",
            "kept-by-hand",
        ]
        .map(String::from)
        .to_vec();
        let thirty_days = Duration::from_secs(30 * 86_400);
        assert_eq!(
            expired(&runs, now, thirty_days),
            ["2026-11-04T11:59:59.999Z"]
        );
    }
}
