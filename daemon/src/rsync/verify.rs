//! Verifying a target: a dry run (`-n`) of the full sync's command, whose itemized lines
//! (`-ii --out-format='%i %l %b %n'`: one per entry, up to date or not, so the progress counts
//! like a full sync's) are turned into the differing paths. Changes nothing at either side.
//!
//! - Directory modification times are not compared (`--omit-dir-times`): a push into a
//!   directory sets its time at the target to the time of the push, so they differ after any
//!   change and would hide real drift.
//! - Paths are as rsync prints them: unprintable bytes escaped as `\#ooo` (octal).
//! - At most [`LISTED`] paths are listed per target; the rest are counted.

use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

use syncd_proto::{DriftKind, DriftPath};

use super::exit::{classify, Outcome};
use super::progress::{FullProgress, OutLine};
use super::Runner;

/// Most differing paths listed per target.
pub const LISTED: usize = 10_000;

/// What one verify run found.
#[derive(Debug)]
pub struct Verified {
    /// `Delivered`: the comparison ran to its end.
    pub outcome: Outcome,
    pub paths: Vec<DriftPath>,
    pub more: u64,
}

impl Runner {
    /// Compare the root (or its directory `sub`) with the target; `checksum`: by content.
    /// `progress` counts the entries compared.
    pub async fn verify(&self, sub: &[u8], checksum: bool, progress: &FullProgress) -> Verified {
        let mut c = self.verify_command(sub, checksum);
        match c.spawn() {
            Ok(child) => read_drift(child, sub, progress).await,
            Err(e) => Verified {
                outcome: Outcome::TargetDown(format!("cannot start rsync: {e}")),
                paths: Vec::new(),
                more: 0,
            },
        }
    }

    fn verify_command(&self, sub: &[u8], checksum: bool) -> Command {
        let mut c = self.full_command_base();
        c.args([
            "--dry-run",
            "--omit-dir-times",
            "-ii",
            "--out-format=%i %l %b %n",
        ]);
        if checksum {
            c.arg("--checksum");
        }
        self.full_command_ends(&mut c, sub);
        c
    }
}

/// Read the child's lines into differing paths (root-relative), then its exit.
async fn read_drift(
    mut child: tokio::process::Child,
    sub: &[u8],
    progress: &FullProgress,
) -> Verified {
    let errs = super::run::errs(child.stderr.take());
    let out = child.stdout.take();
    let lines = async {
        let (mut paths, mut more) = (Vec::new(), 0u64);
        if let Some(out) = out {
            let mut lines = tokio::io::BufReader::new(out).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                if let Some(l) = OutLine::parse(&line) {
                    progress.record(&l);
                }
                let Some(d) = drift_of(&line, sub) else {
                    continue;
                };
                if paths.len() < LISTED {
                    paths.push(d);
                } else {
                    more += 1;
                }
            }
        }
        (paths, more)
    };
    let ((paths, more), err, status) = tokio::join!(lines, errs, child.wait());
    let outcome = match status {
        Ok(s) => classify(s, &String::from_utf8_lossy(&err)),
        Err(e) => Outcome::TargetDown(format!("waiting for rsync failed: {e}")),
    };
    Verified {
        outcome,
        paths,
        more,
    }
}

/// One line (`YXcstpoguax LEN BYTES name`, or `*deleting   LEN BYTES name`) as a differing
/// path below `sub`; `None` for an up-to-date entry or any other line.
pub fn drift_of(line: &[u8], sub: &[u8]) -> Option<DriftPath> {
    // The change string is 11 wide (padded with spaces), then one space before each field.
    let (item, rest) = (line.get(..11)?, line.get(11..)?);
    let rest = rest.strip_prefix(b" ")?;
    let mut fields = rest.splitn(3, |b| *b == b' ');
    let (_len, _bytes, name) = (fields.next()?, fields.next()?, fields.next()?);
    let item = item.trim_ascii_end();
    let kind = if item == b"*deleting" {
        DriftKind::Extra
    } else {
        kind_of(item)?
    };
    let name = name.strip_suffix(b"/").unwrap_or(name);
    let name = if name == b"." { &b""[..] } else { name };
    if name.is_empty() && !matches!(kind, DriftKind::Attributes | DriftKind::Missing) {
        // The directory compared itself: missing, or its attributes.
        return None;
    }
    let mut path = sub.to_vec();
    if !name.is_empty() {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
    }
    Some(DriftPath {
        path: path.into(),
        kind,
        itemized: String::from_utf8_lossy(item).into_owned(),
    })
}

/// What an itemized change string says differs; `None` when nothing does.
fn kind_of(item: &[u8]) -> Option<DriftKind> {
    let (&update, rest) = item.split_first()?;
    let (&file_type, attrs) = rest.split_first()?;
    if !matches!(update, b'<' | b'>' | b'c' | b'h' | b'.') || !b"fdLDS".contains(&file_type) {
        return None;
    }
    if !attrs.is_empty() && attrs.iter().all(|b| *b == b'+') {
        return Some(DriftKind::Missing);
    }
    let at = |i: usize| attrs.get(i).copied().unwrap_or(b'.');
    Some(match () {
        // Another size says more than "another checksum" (which --checksum then also shows).
        _ if at(1) == b's' => DriftKind::Size,
        _ if at(0) == b'c' => DriftKind::Content,
        _ if matches!(at(2), b't' | b'T') => DriftKind::Time,
        _ if attrs.iter().any(|b| b.is_ascii_alphabetic()) => DriftKind::Attributes,
        // Sent with nothing flagged: a transfer forced for another reason (another type).
        _ if update != b'.' => DriftKind::Content,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str, sub: &str) -> Option<(String, DriftKind)> {
        drift_of(line.as_bytes(), sub.as_bytes())
            .map(|d| (String::from_utf8_lossy(&d.path).into_owned(), d.kind))
    }

    #[test]
    fn itemized_lines_become_differing_paths() {
        use DriftKind::*;
        let s = |p: &str, k| Some((p.to_string(), k));
        let cases = [
            (">f+++++++++ 3 3 a/new.txt", "", s("a/new.txt", Missing)),
            ("cd+++++++++ 4096 0 a/dir/", "", s("a/dir", Missing)),
            ("cL+++++++++ 1 0 link", "", s("link", Missing)),
            ("*deleting   0 0 a/extra.txt", "", s("a/extra.txt", Extra)),
            ("*deleting   0 0 gone/", "sub", s("sub/gone", Extra)),
            (">fc.t...... 3 3 changed", "", s("changed", Content)),
            (">f.st...... 3 3 grown", "", s("grown", Size)),
            ("<fcst...... 3 3 grown", "", s("grown", Size)),
            (">f..t...... 3 3 touched", "", s("touched", Time)),
            (".f...p..... 3 0 chmodded", "", s("chmodded", Attributes)),
            (".d...p..... 4096 0 ./", "", s("", Attributes)),
            ("cLc.t...... 1 0 retargeted", "", s("retargeted", Content)),
            (">f.st...... 3 3 f", "d/e", s("d/e/f", Size)),
            (">f.st...... 3 3  lead space", "", s(" lead space", Size)),
            (".f          3 0 same", "", None),
            (".d          4096 0 ./", "", None),
            ("cd+++++++++ 4096 0 ./", "sub", s("sub", Missing)),
            ("with space name", "", None),
            ("sending incremental file list", "", None),
            ("", "", None),
        ];
        for (line, sub, want) in cases {
            assert_eq!(one(line, sub), want, "{line:?}");
        }
    }
}
