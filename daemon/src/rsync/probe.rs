//! Whether a target hard-links from a relative `--link-dest`, tried rather than assumed: rsync
//! builds differ (3.4.3 silently sent every file again for a relative `--link-dest` into a
//! `use chroot = no` daemon, rsync #915; relative basis paths broke over ssh in the same
//! release, #928; `rrsync` 3.4 refused it, #1037; some backports fail "verification").
//!
//! The probe does at the target what a move does: a directory `PROBE/a` with one file of
//! [`PROBE_BYTES`] is pushed, then pushed again as `PROBE/b` with `--link-dest=../a`, and rsync's
//! `--stats` says how much of it crossed as literal data; then `PROBE` is deleted (listed
//! alone by an include rule, so nothing else can be touched).

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::exit::{classify, Outcome};
use super::Runner;

/// The start of the probe's directory name at the target root; the rest is 64 random bits
/// drawn for each probe, so it is never a name the source has (a fixed
/// `syncd-rename-probe` was: the probe deleted the user's directory of that name at the
/// target, and a `versions` of that name with every version kept in it).
pub const PROBE_PREFIX: &str = "syncd-probe-";
/// The name of older releases' probe, and rsync's partial directory: reserved too.
const RESERVED: [&str; 2] = ["syncd-rename-probe", ".rsync-partial"];

/// Whether `name` (at the target root) is one syncd uses itself.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(PROBE_PREFIX) || RESERVED.contains(&name)
}
/// The probe file's size: far above what checksums and file lists take.
const PROBE_BYTES: usize = 256 * 1024;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDest {
    /// The second push linked the file: renames move.
    Works,
    /// It did not (the reason): renames are plain pushes at this target.
    Fails(String),
}

impl Runner {
    /// Try a relative `--link-dest` at the target; `Err` when the target could not be reached
    /// (nothing was decided: try again later).
    pub async fn probe_link_dest(&self) -> Result<LinkDest, Outcome> {
        if let Some(r) = self.local_root_missing() {
            return Err(r.outcome);
        }
        let tmp = tempfile::Builder::new()
            .prefix("syncd-probe")
            .tempdir()
            .map_err(|e| Outcome::TargetDown(format!("cannot make the probe's directory: {e}")))?;
        let dir = format!("{PROBE_PREFIX}{:016x}", rand::random::<u64>());
        let res = self.probe_in(tmp.path(), &dir).await;
        // Whatever the probe found, nothing of it stays at the target.
        let cleaned = self.remove_probe(tmp.path(), &dir).await;
        let found = res?;
        cleaned?;
        Ok(found)
    }

    async fn probe_in(&self, tmp: &Path, dir: &str) -> Result<LinkDest, Outcome> {
        let a = tmp.join(dir).join("a");
        std::fs::create_dir_all(&a)
            .and_then(|_| std::fs::write(a.join("probe-data"), probe_data()))
            .map_err(|e| Outcome::TargetDown(format!("cannot write the probe: {e}")))?;
        let mut first = self.probe_command(&a, dir, "a");
        first.arg("--mkpath");
        if let Some(e) = output(first).await?.1 {
            return Ok(LinkDest::Fails(e));
        }
        let b = tmp.join(dir).join("b");
        std::fs::rename(&a, &b)
            .map_err(|e| Outcome::TargetDown(format!("cannot rename the probe: {e}")))?;
        let mut second = self.probe_command(&b, dir, "b");
        second.args(["--stats", "--link-dest=../a"]);
        let (stdout, failed) = output(second).await?;
        if let Some(e) = failed {
            return Ok(LinkDest::Fails(format!(
                "rsync --link-dest=../a failed: {e}"
            )));
        }
        Ok(match literal_bytes(&stdout) {
            Some(n) if n < (PROBE_BYTES / 4) as u64 => LinkDest::Works,
            Some(n) => LinkDest::Fails(format!(
                "a relative --link-dest sent the data again ({n} bytes of {PROBE_BYTES} literal)"
            )),
            None => LinkDest::Fails("rsync --stats printed no literal data count".into()),
        })
    }

    /// `rsync -a SRC/ DEST/DIR/SUB/` with the target's transport and options, without the
    /// root's excludes (they could skip the probe's own file).
    fn probe_command(&self, src: &Path, dir: &str, sub: &str) -> Command {
        let mut c = self.transport_command();
        c.args(&self.target.rsync_args);
        let mut s = src.as_os_str().to_owned();
        s.push("/");
        c.arg(s).arg(
            self.target
                .dest
                .rsync_arg(format!("{dir}/{sub}").as_bytes()),
        );
        c.stdout(Stdio::piped());
        c
    }

    /// Delete the probe's `dir` at the target, from an empty source (see
    /// `Runner::removal_command`): only that name, which no one else has.
    async fn remove_probe(&self, tmp: &Path, dir: &str) -> Result<(), Outcome> {
        let empty = tmp.join("empty");
        std::fs::create_dir_all(&empty)
            .map_err(|e| Outcome::TargetDown(format!("cannot clean up the probe: {e}")))?;
        let (c, rules) = self.removal_command(&empty, b"", &[dir.as_bytes().to_vec()]);
        let run = super::run::run(c, Some(rules), None, Some(self.target.push_deadline)).await;
        match run.outcome {
            Outcome::Delivered | Outcome::Partial(_) | Outcome::Permanent(_) => Ok(()),
            other => Err(other),
        }
    }
}

/// Run `c` to its end: its stdout, and what went wrong if it failed at the target (`Err` when
/// the target could not be reached).
async fn output(mut c: Command) -> Result<(Vec<u8>, Option<String>), Outcome> {
    c.stderr(Stdio::piped());
    let out = c
        .output()
        .await
        .map_err(|e| Outcome::TargetDown(format!("cannot start rsync: {e}")))?;
    match classify(out.status, &String::from_utf8_lossy(&out.stderr)) {
        Outcome::Delivered => Ok((out.stdout, None)),
        Outcome::Partial(e) | Outcome::Permanent(e) => Ok((out.stdout, Some(e))),
        other => Err(other),
    }
}

/// rsync's `--stats` line `Literal data: 262,144 bytes`.
fn literal_bytes(stats: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(stats).lines().find_map(|l| {
        let n = l.strip_prefix("Literal data:")?.trim();
        let digits: String = n
            .split_whitespace()
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

/// Bytes that no compression or delta can shrink much: literal data shows in full.
fn probe_data() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PROBE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_data_count_is_read_from_rsyncs_stats() {
        let stats = b"Number of files: 2 (reg: 1, dir: 1)\nTotal file size: 262,144 bytes\nLiteral data: 262,144 bytes\nMatched data: 0 bytes\n";
        assert_eq!(literal_bytes(stats), Some(262_144));
        assert_eq!(literal_bytes(b"Literal data: 0 bytes\n"), Some(0));
        assert_eq!(literal_bytes(b"nothing\n"), None);
    }
}
