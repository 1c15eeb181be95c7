//! What an rsync exit status means for delivery (rsync's errcode.h), read together with the
//! most useful line of its stderr.

use std::process::ExitStatus;

/// How an rsync run ended, as far as delivery is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every listed path is at the target (0, or 24: a vanished source re-journals itself).
    Delivered,
    /// Exit 23: some paths failed; split the batch to find them.
    Partial(String),
    /// The target or the transport failed before anything was transferred; retry the whole
    /// target later.
    TargetDown(String),
    /// The transfer broke off under way (killed, timed out, stream or I/O error): like
    /// `TargetDown`, and the receiver may have left temporary files behind, which only a sync
    /// with `--delete` of the directories involved removes.
    Interrupted(String),
    /// A configuration problem (usage error, auth failure…): retry only at the slowest pace.
    Permanent(String),
    /// The rsync daemon refused the connection at its `max connections`: nothing was
    /// transferred. With other pushes of the same target running, it is their limit, not an
    /// outage.
    Busy(String),
}

impl Outcome {
    /// What went wrong, for people (None when delivered).
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Partial(m)
            | Outcome::TargetDown(m)
            | Outcome::Interrupted(m)
            | Outcome::Permanent(m)
            | Outcome::Busy(m) => Some(m),
        }
    }
}

/// The most useful line of rsync's stderr, for status and logs.
fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.starts_with("@ERROR") || l.contains("failed:") || l.contains("ERROR:"))
        .or_else(|| lines.iter().find(|l| !l.starts_with("rsync error:")))
        .or(lines.first());
    pick.map(|s| s.chars().take(400).collect())
        .unwrap_or_default()
}

/// What rsync says of a single path that retrying will not fix: the target refuses the name
/// (a daemon's `exclude`/`refuse`), the receiver may not write it, or its file system cannot hold
/// the name. Retrying such a path only delays telling the administrator.
const PERMANENT_FOR_A_PATH: &[&str] = &[
    "daemon refused to receive",
    "Permission denied (13)",
    "Operation not permitted (1)",
    "File name too long (36)",
    "Invalid argument (22)",
    "Illegal byte sequence (84)",
];

/// Whether the error of a single path's push (its [`Outcome::Partial`] message) is one that
/// retrying will not fix. A full disk, a lost connection or a vanished file are not.
pub fn permanent_for_a_path(message: &str) -> bool {
    PERMANENT_FOR_A_PATH.iter().any(|m| message.contains(m))
}

/// What rsync says when a directory it must enter or create is a file (or anything but a
/// directory) at the target: a path pushed before its parent's change of type (a file replaced
/// by a directory and things moved into it). Pushing the parent first fixes it; it is neither
/// a full disk nor the target's fault.
const PARENT_NOT_A_DIRECTORY: &[&str] = &["Not a directory (20)", "File exists (17)"];

/// Whether rsync failed because a directory above a path is not a directory at the target
/// (see [`PARENT_NOT_A_DIRECTORY`]).
pub fn parent_not_a_directory(message: &str) -> bool {
    PARENT_NOT_A_DIRECTORY.iter().any(|m| message.contains(m))
}

/// What a receiver says of a file list it refuses because of one of its entries: a
/// `--delete-missing-args` entry to a receiver with the 2025-26 file-list hardening, or a
/// basis deleted under `--fuzzy` (rsync 3.5.0). A batch narrows it down to the paths.
const LIST_REFUSED: &[&str] = &["invalid file mode", "got a block match with no basis file"];

/// How an exit 25's message begins.
const MAX_DELETE_STOPPED: &str = "--max-delete limit stopped deletions";

/// Of an outcome's message, the deletions `--max-delete` stopped (rsync's "Deletions stopped
/// due to --max-delete limit (N skipped)"); None if it did not stop any.
pub fn deletions_skipped(message: &str) -> Option<u64> {
    let rest = message.split_once(MAX_DELETE_STOPPED)?.1;
    let n = rest.rsplit_once(" skipped)")?.0.rsplit_once('(')?.1;
    Some(n.trim().parse().unwrap_or(0))
}

/// Map an rsync exit status to what it means for delivery (rsync's errcode.h).
pub fn classify(status: ExitStatus, stderr: &str) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let detail = summarize(stderr);
    let code = match status.code() {
        Some(c) => c,
        None => {
            let sig = status.signal().unwrap_or(0);
            return Outcome::Interrupted(format!(
                "rsync was killed by signal {sig}; nothing in the batch counts as delivered"
            ));
        }
    };
    let msg = |what: &str| {
        if detail.is_empty() {
            format!("rsync exit {code}: {what}")
        } else {
            format!("rsync exit {code}: {what}: {detail}")
        }
    };
    match code {
        0 | 24 => Outcome::Delivered,
        23 => Outcome::Partial(msg("some files were not transferred")),
        // A file list refused for one of its entries: the paths, not the server.
        2 if LIST_REFUSED.iter().any(|m| stderr.contains(m)) => {
            Outcome::Partial(msg("the receiver refused an entry of the file list"))
        }
        11 if stderr.contains("mkdir") && parent_not_a_directory(stderr) => Outcome::Partial(msg(
            "a directory above the path is not a directory at the target yet",
        )),
        1 => Outcome::Permanent(msg(
            "syntax or usage error (check rsync_args, password_file)",
        )),
        2 | 4 => Outcome::Permanent(msg(
            "protocol incompatibility or option refused by the server",
        )),
        5 if stderr.contains("max connections") => Outcome::Busy(msg("server busy")),
        5 => Outcome::Permanent(msg(
            "cannot start the rsync daemon session (authentication or module)",
        )),
        25 => Outcome::Permanent(format!(
            "rsync exit 25: {MAX_DELETE_STOPPED}: {}",
            stderr
                .lines()
                .find(|l| l.contains("Deletions stopped"))
                .unwrap_or(&detail)
                .trim()
        )),
        126 | 127 => Outcome::Permanent(msg("remote shell could not be run")),
        255 if stderr.contains("Permission denied")
            || stderr.contains("Host key verification failed") =>
        {
            Outcome::Permanent(msg("ssh refused the login"))
        }
        255 if [
            "Connection refused",
            "Could not resolve",
            "No route to host",
            "Connection timed out",
        ]
        .iter()
        .any(|m| stderr.contains(m)) =>
        {
            Outcome::TargetDown(msg("ssh could not connect"))
        }
        // Exit 10 is also what a connection lost mid-transfer gives.
        10 if ["failed to connect", "Connection refused", "getaddrinfo"]
            .iter()
            .any(|m| stderr.contains(m)) =>
        {
            Outcome::TargetDown(msg("connection failed"))
        }
        10 => Outcome::Interrupted(msg("connection lost")),
        11 => Outcome::Interrupted(msg("file I/O error (target disk full?)")),
        12 => Outcome::Interrupted(msg("error in the rsync protocol data stream")),
        20 => Outcome::Interrupted(msg("interrupted")),
        30 => Outcome::Interrupted(msg("timeout in data send/receive")),
        35 => Outcome::TargetDown(msg("timeout waiting for the daemon connection")),
        _ => Outcome::Interrupted(msg("transfer failed")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_retrying_a_path_cannot_fix_is_told_apart() {
        use super::permanent_for_a_path as permanent;
        // rsync 3.5.0, against a daemon module with `exclude = refused_*`, and one that runs
        // as a user who may not write there.
        assert!(permanent(
            "rsync exit 23: some files were not transferred: ERROR: daemon refused to receive file \"refused_a\""
        ));
        assert!(permanent(
            "rsync exit 23: some files were not transferred: rsync: [receiver] mkstemp \".ok.dAOTQ8\" (in m) failed: Permission denied (13)"
        ));
        assert!(permanent(
            "rsync: [receiver] open \"x\" failed: File name too long (36)"
        ));
        for transient in [
            "rsync: [receiver] write failed on \"x\" (in m): No space left on device (28)",
            "rsync: [receiver] write failed on \"x\": Disk quota exceeded (122)",
            "file has vanished: \"/src/x\"",
            "rsync exit 23: some files were not transferred",
        ] {
            assert!(!permanent(transient), "{transient}");
        }
    }

    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn st(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn errors_of_syncds_own_order_are_the_paths_not_the_target() {
        // rsync 3.2.7: a push into `X/f/` (--mkpath) where the target has `X/f` as a file.
        let mkdir = "rsync: [Receiver] mkdir \"/t/X/f/\" failed: File exists (17)\nrsync error: error in file IO (code 11) at main.c(800) [Receiver=3.2.7]\n";
        let Outcome::Partial(m) = classify(st(11), mkdir) else {
            panic!("a parent that is a file is the path's problem");
        };
        assert!(
            !m.contains("disk full") && parent_not_a_directory(&m),
            "{m}"
        );
        // A file list the receiver refuses for one entry (Debian's 3.2.7-1+deb12u5, rsync
        // 3.5.0 with a basis deleted under --fuzzy).
        for list in [
            "invalid file mode 00 for d/x [Receiver]\nrsync error: protocol incompatibility (code 2) at flist.c(874) [Receiver=3.2.7]\n",
            "got a block match with no basis file\nrsync error: protocol incompatibility (code 2)\n",
        ] {
            let o = classify(st(2), list);
            assert!(matches!(&o, Outcome::Partial(m) if !m.contains("refused by the server")), "{o:?}");
        }
        // Other exits 11 and 2 are still what they were.
        assert!(matches!(
            classify(st(11), "rsync: write failed on \"x\": No space left on device (28)"),
            Outcome::Interrupted(m) if m.contains("disk full")
        ));
        assert!(matches!(
            classify(st(2), "rsync: on remote machine: --fuzzy: unknown option"),
            Outcome::Permanent(_)
        ));
    }

    #[test]
    fn the_deletions_max_delete_stopped_are_read_from_rsyncs_message() {
        // rsync 3.5.0, `--delete --max-delete=3` with 10 extra files at the destination.
        let stderr = "Deletions stopped due to --max-delete limit (7 skipped)\nrsync error: the --max-delete limit stopped deletions (code 25) at main.c(1394) [sender=3.5.0]\n";
        let Outcome::Permanent(m) = classify(st(25), stderr) else {
            panic!("exit 25 is permanent");
        };
        assert_eq!(deletions_skipped(&m), Some(7), "{m}");
        assert_eq!(
            deletions_skipped("rsync exit 23: some files were not transferred"),
            None
        );
    }

    #[test]
    fn exit_codes_are_classified() {
        assert_eq!(classify(st(0), ""), Outcome::Delivered);
        assert_eq!(classify(st(24), "file has vanished"), Outcome::Delivered);
        assert!(matches!(classify(st(23), ""), Outcome::Partial(_)));
        assert!(matches!(
            classify(
                st(10),
                "rsync: failed to connect to 127.0.0.1: Connection refused (111)"
            ),
            Outcome::TargetDown(_)
        ));
        // The same code for a connection lost mid-transfer: leftovers possible.
        assert!(matches!(
            classify(st(10), "rsync: [sender] write error: Broken pipe (32)"),
            Outcome::Interrupted(_)
        ));
        assert!(matches!(classify(st(30), ""), Outcome::Interrupted(_)));
        assert!(matches!(
            classify(st(255), "Broken pipe"),
            Outcome::Interrupted(_)
        ));
        assert!(
            matches!(classify(st(5), "@ERROR: auth failed on module m"), Outcome::Permanent(m) if m.contains("auth failed"))
        );
        assert!(matches!(
            classify(st(5), "@ERROR: max connections (1) reached"),
            Outcome::Busy(_)
        ));
        assert!(matches!(
            classify(st(255), "Permission denied (publickey)"),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            classify(st(255), "Connection refused"),
            Outcome::TargetDown(_)
        ));
        // Killed by SIGKILL: never delivered.
        assert!(
            matches!(classify(ExitStatus::from_raw(9), ""), Outcome::Interrupted(m) if m.contains("signal 9"))
        );
    }
}
