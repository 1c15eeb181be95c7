//! The rsync command lines: one base shared by every run (transport, timeouts, excludes, the
//! target's own options), then what a batch or a full sync adds. Never through a shell.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Stdio;

use tokio::process::Command;

use super::Runner;
use crate::config::Dest;

impl Runner {
    /// Every run's command: the transport, the target's own options, the root's excludes.
    fn base_command(&self) -> Command {
        let t = &self.target;
        let mut c = self.transport_command();
        if let Some(n) = t.max_delete {
            c.arg(format!("--max-delete={n}"));
        }
        for pat in self.root.excludes.patterns() {
            c.arg(format!("--exclude={pat}"));
        }
        // After the excludes: a user's own filter rules come later, as they always did.
        c.args(&t.rsync_args);
        c
    }

    /// `rsync -a` with the transport (daemon or ssh options, timeouts, compression), never
    /// through a shell, its stderr piped.
    pub(super) fn transport_command(&self) -> Command {
        let t = &self.target;
        let mut c = Command::new("rsync");
        c.arg("-a")
            .arg("--partial-dir=.rsync-partial")
            .arg(format!("--timeout={}", t.timeout.as_secs()));
        match &t.dest {
            Dest::Daemon { .. } => {
                // Without it every run waits twice on Nagle's algorithm against delayed ACKs in
                // the daemon's handshake: a one-file push to a daemon on loopback took 90-130 ms
                // instead of under 10 ms (measured with rsync 3.5.0; the daemon's own `socket
                // options` does not help).
                c.arg("--sockopts=TCP_NODELAY");
                c.arg(format!("--contimeout={}", t.contimeout.as_secs()));
                if let Some(p) = t.port {
                    c.arg(format!("--port={p}"));
                }
                if let Some(pf) = &t.password_file {
                    let mut a = OsString::from("--password-file=");
                    a.push(pf);
                    c.arg(a);
                }
            }
            Dest::Ssh { .. } => {
                let mut ssh = vec![
                    "ssh".to_string(),
                    "-o".into(),
                    "BatchMode=yes".into(),
                    "-o".into(),
                    format!("ConnectTimeout={}", t.contimeout.as_secs()),
                    "-o".into(),
                    "ServerAliveInterval=15".into(),
                ];
                if let Some(p) = t.port {
                    ssh.push("-p".into());
                    ssh.push(p.to_string());
                }
                ssh.extend(t.ssh_args.iter().cloned());
                c.arg("-e").arg(
                    ssh.iter()
                        .map(|a| quote_for_rsync(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            Dest::Local(_) => {}
        }
        if t.compress {
            c.arg("-z");
        }
        // Children must not inherit systemd's notify socket and watchdog; a run that outlives its deadline or
        // the daemon is killed with it.
        c.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn src_arg(&self, sub: &[u8]) -> OsString {
        let mut s = self.root.source.as_os_str().as_bytes().to_vec();
        if !sub.is_empty() {
            s.push(b'/');
            s.extend_from_slice(sub);
        }
        s.push(b'/');
        OsString::from_vec(s)
    }

    /// The command and the stdin list pushing exactly `list`, the paths planned to exist (see
    /// [`super::plan_path`]): one that vanished meanwhile is skipped (`--ignore-missing-args`;
    /// its deletion journaled itself and goes in a later push). Deletions go with
    /// [`Runner::delete_command`]: `--delete-missing-args` sends rsync's mode-0 "missing"
    /// entries, which receivers with the 2025-26 file-list hardening (Debian's 3.2.7-1+deb12u5,
    /// upstream 3.4.3) refuse with exit 2, "invalid file mode 00" (measured here).
    pub(super) fn batch_command(&self, list: &[Vec<u8>], fuzzy: bool) -> (Command, Vec<u8>) {
        let mut c = self.base_command();
        if fuzzy {
            // Only for a batch carrying a renamed file: the scan of the destination directory
            // for a basis costs per new file and per entry of its directory.
            c.arg("--fuzzy");
        }
        c.args([
            "-I",
            "-0",
            "--files-from=-",
            "--ignore-missing-args",
            "--force",
            // A directory above a listed path is created when missing, never updated: only a
            // push that lists a directory writes its attributes (see dispatch::inflight).
            "--no-implied-dirs",
            // One line per entry sent or deleted: the bytes it took (for the metrics).
            "--out-format=%i %l %b",
        ]);
        self.versions_args(&mut c, b"");
        c.arg(self.src_arg(b""))
            .arg(self.target.dest.rsync_arg(b""));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut input = Vec::with_capacity(list.iter().map(|p| p.len() + 3).sum());
        for p in list {
            input.extend_from_slice(b"./");
            input.extend_from_slice(p);
            input.push(0);
        }
        (c, input)
    }

    /// The command and the stdin rules deleting `list` (paths missing at the source, each
    /// with everything below it) at the target: `--delete` of the directories above them,
    /// narrowed by include rules to exactly those paths (every other entry is excluded, so
    /// protected). Directories are only traversed: their attributes are left as they are
    /// (`--no-perms --no-times --no-owner --no-group`), as a batch leaves a directory it does
    /// not list. A path that exists again when rsync reads it is pushed whole instead.
    pub(super) fn delete_command(&self, list: &[Vec<u8>]) -> (Command, Vec<u8>) {
        let mut c = self.base_command();
        c.args(REMOVAL_ARGS);
        c.arg("--out-format=%i %l %b");
        self.versions_args(&mut c, b"");
        c.args(["--include-from=-", "--exclude=*"]);
        c.arg(self.src_arg(b""))
            .arg(self.target.dest.rsync_arg(b""));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        (c, deletion_rules(list))
    }

    /// Like [`Runner::delete_command`], for syncd's own entries at the target (the rename
    /// probe's directory, old version runs): `names` below the target's `sub`, deleted from
    /// the empty directory `empty`, with the transport only (no excludes, no `rsync_args`).
    pub(super) fn removal_command(
        &self,
        empty: &std::path::Path,
        sub: &[u8],
        names: &[Vec<u8>],
    ) -> (Command, Vec<u8>) {
        let mut c = self.transport_command();
        c.args(REMOVAL_ARGS);
        c.args(["--include-from=-", "--exclude=*"]);
        let mut s = empty.as_os_str().to_owned();
        s.push("/");
        c.arg(s).arg(self.target.dest.rsync_arg(sub));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        (c, deletion_rules(names))
    }

    /// Full `rsync -a --delete` of the root (or its subdirectory `sub`), deleting at most
    /// `max_delete` entries if given (`delete_guard`; the target's own `max_delete` still caps
    /// it).
    pub(super) fn full_command(&self, sub: &[u8], max_delete: Option<u64>) -> Command {
        let mut c = self.full_command_base();
        if let Some(n) = max_delete {
            // After the target's own: rsync takes the last.
            let n = n.min(self.target.max_delete.unwrap_or(u64::MAX));
            c.arg(format!("--max-delete={n}"));
        }
        // A line for every entry, up to date or not: how far the sync is (progress.rs).
        c.args(["-ii", "--out-format=%i %l %b"]);
        if sub.is_empty() {
            self.versions_args(&mut c, sub);
            self.full_command_ends(&mut c, sub);
            return c;
        }
        // A subdirectory is synced from the root, narrowed to it by include rules (every
        // directory above it, then all of it; the rest is excluded, so neither sent nor
        // deleted). rsync then meets each component as an entry of the transfer, never as the
        // start of a path: a component that became a symlink at the source is sent as the
        // symlink, one that is a symlink at the target is replaced, and neither is followed out
        // of the root or the target (`SRC/sub/ DEST/sub/` followed both, and deleted beside the
        // target). And a daemon without chroot would rewrite the symlinks in a transfer rooted
        // below the module that climb out of it (see `no_links_below_the_root`).
        self.versions_args(&mut c, b"");
        // Each name also without the slash: a `/d/` rule matches only a directory, and a
        // component that is a symlink now must be sent as one (else the target's directory of
        // that name is deleted and nothing takes its place).
        for d in crate::fs::parents(sub) {
            c.arg(include_arg(d, b"")).arg(include_arg(d, b"/"));
        }
        c.arg(include_arg(sub, b""))
            .arg(include_arg(sub, b"/***"))
            .arg("--exclude=*");
        c.arg(self.src_arg(b""))
            .arg(self.target.dest.rsync_arg(b""));
        c.stdout(Stdio::piped());
        c
    }

    /// Directory `to`, renamed from `from` at the source, pushed whole (`--delete` inside it)
    /// with the target's copy of `from` as `--link-dest`: unchanged files are hard-linked there
    /// (or copied locally when their attributes differ), so no data crosses the wire for them.
    pub(super) fn move_command(&self, to: &[u8], from: &[u8]) -> Command {
        let mut c = self.full_command_base();
        // `-yy`: a file renamed inside the moved directory finds its old name in the old
        // directory as its basis.
        c.args(["--fuzzy", "--fuzzy"]).arg(link_dest(to, from));
        c.arg("--out-format=%i %l %b");
        self.no_links_below_the_root(&mut c);
        self.versions_args(&mut c, to);
        self.full_command_ends(&mut c, to);
        c
    }

    /// A transfer rooted below the module's root, into a daemon: an rsync daemon without
    /// chroot sanitizes every symlink against its depth in the transfer (`../x` pushed in
    /// `sub/` arrives as `x`, measured with 3.2.7), so symlinks are left out (`--no-links`)
    /// and go with the batches, which are rooted at the root (see `Runner::symlinks_go_apart`).
    fn no_links_below_the_root(&self, c: &mut Command) {
        if self.symlinks_go_apart() {
            c.arg("--no-links");
        }
    }

    /// Whether transfers rooted below the root leave symlinks out (a daemon target).
    pub fn symlinks_go_apart(&self) -> bool {
        matches!(self.target.dest, Dest::Daemon { .. })
    }

    /// Files renamed into directory `dir` from other directories: `names` (relative to `dir`)
    /// pushed into it with each old directory in `from_dirs` (at most 20, rsync's limit) as a
    /// `--link-dest`, and `-yy`: a file that kept its name is linked there, one that did not
    /// takes its old name (same size and time) as the basis.
    pub(super) fn file_moves_command(
        &self,
        dir: &[u8],
        names: &[Vec<u8>],
        from_dirs: &[Vec<u8>],
    ) -> (Command, Vec<u8>) {
        let mut c = self.base_command();
        c.args([
            "-0",
            "--files-from=-",
            "--fuzzy",
            "--fuzzy",
            "--mkpath",
            // Nanosecond mtimes, as a directory move's: a file written again within the same
            // second at the same size is neither skipped at its new name nor linked from its
            // old one (the fuzzer's seeds 2054 and 2120: a swap, then a same-size rewrite).
            "--modify-window=-1",
            "--out-format=%i %l %b",
        ]);
        self.no_links_below_the_root(&mut c);
        for d in from_dirs {
            c.arg(link_dest(dir, d));
        }
        self.versions_args(&mut c, dir);
        c.arg(self.src_arg(dir))
            .arg(self.target.dest.rsync_arg(dir));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut input = Vec::new();
        for n in names {
            input.extend_from_slice(b"./");
            input.extend_from_slice(n);
            input.push(0);
        }
        (c, input)
    }

    /// With the target's `versions`: `--backup`, and a `--backup-dir` where what this run
    /// replaces or deletes below `sub` is kept, as `VERSIONS/<UTC time of the run>/sub/PATH`
    /// at the target root (a relative backup directory is taken from the destination
    /// directory, so it climbs out of `sub` first, like [`link_dest`]).
    fn versions_args(&self, c: &mut Command, sub: &[u8]) {
        let Some(v) = &self.target.versions else {
            return;
        };
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut a = b"--backup-dir=".to_vec();
        a.extend_from_slice(&climb_out_of(sub));
        a.extend_from_slice(v.as_bytes());
        a.push(b'/');
        a.extend_from_slice(stamp.as_bytes());
        if !sub.is_empty() {
            a.push(b'/');
            a.extend_from_slice(sub);
        }
        c.arg("--backup").arg(OsString::from_vec(a));
    }

    /// What a full sync and a verify share before their own options.
    pub(super) fn full_command_base(&self) -> Command {
        let mut c = self.base_command();
        // Nanosecond mtime comparison: a same-size rewrite within one second (made while syncd
        // was down, say) is not skipped, and unchanged files still are.
        c.args(["--delete", "--force", "--modify-window=-1"]);
        c
    }

    /// The source and destination of a full sync (or verify) of `sub`, and its output piped.
    pub(super) fn full_command_ends(&self, c: &mut Command, sub: &[u8]) {
        if !sub.is_empty() {
            c.arg("--mkpath");
        }
        c.arg(self.src_arg(sub))
            .arg(self.target.dest.rsync_arg(sub));
        c.stdout(Stdio::piped());
    }
}

/// What a run that only deletes adds to `rsync -a`: `--delete` (`-a` recurses), a directory
/// replaced by a file or the reverse removed whole, and no attribute of a traversed directory
/// written.
const REMOVAL_ARGS: &[&str] = &[
    "-0",
    "--delete",
    "--force",
    "--no-perms",
    "--no-times",
    "--no-owner",
    "--no-group",
];

/// The include rules (NUL-separated, for `--include-from=- -0` followed by `--exclude=*`)
/// that let a recursive `--delete` reach exactly the paths of `list` and everything below
/// them: each directory above a path (`/a/`, `/a/b/`), the path itself (`/a/b/c`) and its
/// contents (`/a/b/c/**`: without it rsync keeps a non-empty directory, "cannot delete
/// non-empty directory", and exits 0). Anchored, so a name matches only where it is.
pub(super) fn deletion_rules(list: &[Vec<u8>]) -> Vec<u8> {
    let mut dirs = std::collections::BTreeSet::new();
    for p in list {
        dirs.extend(crate::fs::parents(p));
    }
    let mut out = Vec::new();
    for d in &dirs {
        anchored_rule(&mut out, d, b"/");
    }
    for p in list {
        anchored_rule(&mut out, p, b"");
        anchored_rule(&mut out, p, b"/**");
    }
    out
}

/// `--include=/PATH` + `suffix`, matching `path` literally (see [`anchored_rule`]).
fn include_arg(path: &[u8], suffix: &[u8]) -> OsString {
    let mut rule = Vec::new();
    anchored_rule(&mut rule, path, suffix);
    rule.pop();
    let mut a = b"--include=".to_vec();
    a.extend_from_slice(&rule);
    OsString::from_vec(a)
}

/// Append the rule `/PATH` + `suffix` (NUL-terminated) matching `path` literally. rsync reads a
/// backslash as an escape only in a pattern that has a wildcard: then every `*`, `?`, `[` and
/// `\` of the path is escaped, else none is.
fn anchored_rule(out: &mut Vec<u8>, path: &[u8], suffix: &[u8]) {
    let wild = path.iter().chain(suffix).any(|b| b"*?[".contains(b));
    out.push(b'/');
    for &b in path {
        if wild && b"*?[\\".contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.extend_from_slice(suffix);
    out.push(0);
}

/// `--link-dest` naming `from` for a push into `to` (both relative to the root): rsync takes
/// an alternate directory relative to the destination directory, so it climbs out of `to`
/// first. Relative, it works the same for a local directory, a daemon module (chrooted or
/// not) and ssh.
fn link_dest(to: &[u8], from: &[u8]) -> OsString {
    let mut a = b"--link-dest=".to_vec();
    a.extend_from_slice(&climb_out_of(to));
    a.extend_from_slice(from);
    OsString::from_vec(a)
}

/// `../` once per component of `dir` (relative to the root): from `dir` back to the root.
fn climb_out_of(dir: &[u8]) -> Vec<u8> {
    let depth = match dir.is_empty() {
        true => 0,
        false => dir.iter().filter(|b| **b == b'/').count() + 1,
    };
    b"../".repeat(depth)
}

/// Quote one argument for rsync's own `-e` splitting (it honours single quotes).
fn quote_for_rsync(a: &str) -> String {
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_dest_climbs_out_of_the_destination_directory() {
        let cases: &[(&str, &str, &str)] = &[
            ("b", "a", "--link-dest=../a"),
            ("x/b", "a", "--link-dest=../../a"),
            ("b", "x/y/a", "--link-dest=../x/y/a"),
            ("", "x/a", "--link-dest=x/a"),
            ("x/b", "", "--link-dest=../../"),
        ];
        for (to, from, want) in cases {
            assert_eq!(
                link_dest(to.as_bytes(), from.as_bytes()),
                *want,
                "{to} ← {from}"
            );
        }
    }

    #[test]
    fn deletion_rules_reach_exactly_the_paths_and_what_is_below_them() {
        let rules = |ps: &[&str]| {
            let ps: Vec<Vec<u8>> = ps.iter().map(|p| p.as_bytes().to_vec()).collect();
            let r = deletion_rules(&ps);
            String::from_utf8(r)
                .unwrap()
                .split_terminator('\0')
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rules(&["a/b/c", "a/x", "top"]),
            [
                "/a/",
                "/a/b/",
                "/a/b/c",
                "/a/b/c/**",
                "/a/x",
                "/a/x/**",
                "/top",
                "/top/**"
            ]
        );
        // Literal names: wildcards and backslashes are escaped where the rule has a wildcard.
        assert_eq!(
            rules(&["w*/b\\s"]),
            ["/w\\*/", "/w\\*/b\\\\s", "/w\\*/b\\\\s/**"]
        );
        assert_eq!(rules(&["b\\s"]), ["/b\\s", "/b\\\\s/**"]);
    }

    #[test]
    fn ssh_arguments_are_quoted_for_rsync() {
        assert_eq!(quote_for_rsync("-p"), "-p");
        assert_eq!(quote_for_rsync("/a b/key"), "'/a b/key'");
    }
}
