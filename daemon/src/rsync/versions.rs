//! The versions a target keeps (`versions = NAME`): one directory per rsync run under `NAME/`
//! at the target root, named by the run's UTC time (RFC 3339, milliseconds). Listed with
//! `rsync --list-only`, deleted as missing listed paths from an empty source: the same for a
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
        Ok(run_names(&listing(c).await?))
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
        let mut src = empty.path().as_os_str().to_os_string();
        src.push("/");
        let mut c = self.transport_command();
        c.args(["-0", "--files-from=-", "--delete-missing-args", "--force"])
            .arg(src)
            .arg(self.target.dest.rsync_arg(b""));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        let list: Vec<u8> = runs
            .iter()
            .flat_map(|r| format!("./{v}/{r}\0").into_bytes())
            .collect();
        let list = OsString::from_vec(list).into_vec();
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
        let rel = String::from_utf8_lossy(rel).into_owned();
        let escaped: String = rel
            .chars()
            .flat_map(|ch| match ch {
                '*' | '?' | '[' | '\\' => vec!['\\', ch],
                _ => vec![ch],
            })
            .collect();
        c.arg("--include=/*/");
        let parts: Vec<&str> = escaped.split('/').collect();
        for i in 1..parts.len() {
            c.arg(format!("--include=/*/{}/", parts[..i].join("/")));
        }
        c.arg(format!("--include=/*/{escaped}"))
            .arg("--exclude=*")
            .arg(self.target.dest.rsync_arg(v.as_bytes()));
        let listing = listing(c).await?;
        let mut found: Vec<(String, u64)> = listed(&listing)
            .filter_map(|(size, name)| {
                let (run, path) = name.split_once('/')?;
                (path == rel).then(|| (run.to_string(), size))
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

/// What the `rsync --list-only` command `c` printed; empty when the versions directory does
/// not exist yet.
async fn listing(mut c: tokio::process::Command) -> Result<String, Outcome> {
    c.stdout(Stdio::piped());
    let out = c
        .output()
        .await
        .map_err(|e| Outcome::TargetDown(format!("cannot start rsync: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match classify(out.status, &stderr) {
        Outcome::Delivered => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Outcome::Partial(_) if stderr.contains("No such file or directory") => Ok(String::new()),
        Outcome::Partial(e) => Err(Outcome::Permanent(e)),
        other => Err(other),
    }
}

/// The entries of an `rsync --list-only` listing that are not directories: size and name.
fn listed(listing: &str) -> impl Iterator<Item = (u64, &str)> {
    listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            let mut rest = l;
            let mut fields = Vec::new();
            for _ in 0..4 {
                rest = rest.trim_start();
                let end = rest.find(' ')?;
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let size = fields[1].replace(',', "").parse().ok()?;
            Some((size, rest.trim_start()))
        })
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
        let got: Vec<(u64, &str)> = listed(listing).collect();
        assert_eq!(got, [(1234, "2026-12-04T18:05:00.123Z/a b.txt")]);
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
