//! A seed's rounds against the real daemon: a fresh source and target of one kind (a local
//! directory, an rsync daemon module with and without chroot, ssh), the real `syncd` started on
//! them, each round's operations applied with no wait between them, then `syncctl wait-idle`
//! and an exact comparison. A failure carries everything needed to understand and replay it:
//! the seed, the round, every round's operations, the differences, wait-idle's answer,
//! `syncctl status` and `syncctl failed`, and the tail of syncd's log.
//!
//! With `Settings::kill`, syncd is killed with SIGKILL at moments drawn from the seed (within a
//! round, some operations then happening while it is down; or right after a round's operations,
//! pushes in flight) and started again on the same state directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{compare, excluded_tmp, Model, Op, Rng, Round};
use crate::{Env, RsyncDaemon, Sshd, Syncd};

/// Where a seed's target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A local directory.
    Local,
    /// A module of an rsync daemon on 127.0.0.1 with `use chroot = yes`.
    DaemonChroot,
    /// A module with `use chroot = no` (rsync sanitizes symlink targets there).
    DaemonNoChroot,
    /// `user@127.0.0.1:path` through a real sshd.
    Ssh,
}

impl TargetKind {
    /// Every kind, in the order the summary prints them.
    pub const ALL: [TargetKind; 4] = [
        TargetKind::Local,
        TargetKind::DaemonChroot,
        TargetKind::DaemonNoChroot,
        TargetKind::Ssh,
    ];

    /// Its name on a command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::DaemonChroot => "daemon-chroot",
            TargetKind::DaemonNoChroot => "daemon-nochroot",
            TargetKind::Ssh => "ssh",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The test of `tests/tests/fuzz.rs` that runs this kind.
    pub fn test(self) -> &'static str {
        match self {
            TargetKind::Local => "random_operations_converge_on_a_local_target",
            TargetKind::DaemonChroot => "random_operations_converge_on_a_chrooted_daemon_module",
            TargetKind::DaemonNoChroot => {
                "random_operations_converge_on_a_daemon_module_without_chroot"
            }
            TargetKind::Ssh => "random_operations_converge_on_an_ssh_target",
        }
    }

    /// The command that runs `seed` of this kind again.
    pub fn replay(self, seed: u64) -> String {
        format!(
            "SYNCD_FUZZ_SEED={seed} cargo test -p syncd-tests --test fuzz {} -- --exact",
            self.test()
        )
    }
}

/// A fresh source, a target of one kind and syncd's configuration (`exclude = ["*.tmp"]`).
pub struct Site {
    /// The server a daemon or ssh target needs (stopped on drop).
    _daemon: Option<RsyncDaemon>,
    _sshd: Option<Sshd>,
    /// The target's directory on this machine.
    pub dst: PathBuf,
    /// syncd's configuration file.
    pub cfg: PathBuf,
    /// A daemon without chroot rewrites any symlink that leaves the module (`../../x` from
    /// `d/`), whatever syncd does: such links are not compared there.
    pub clips_escaping_links: bool,
    /// Declared last: the temp dir goes after the server that serves from it.
    pub env: Env,
}

impl Site {
    /// Set up a target of `kind` (starting its server) and the configuration.
    pub fn new(kind: TargetKind) -> Site {
        let env = Env::new();
        let server_dir = env.dir.path().join("server");
        std::fs::create_dir(&server_dir).unwrap();
        let module = env.dir.path().join("module");
        let root = "exclude = [\"*.tmp\"]";
        let (mut daemon, mut sshd) = (None, None);
        let (dst, target) = match kind {
            TargetKind::Local => (env.dst.clone(), crate::local_target("t", &env.dst, "")),
            TargetKind::DaemonChroot | TargetKind::DaemonNoChroot => {
                std::fs::create_dir(&module).unwrap();
                let extra = if kind == TargetKind::DaemonNoChroot {
                    "use chroot = no\n"
                } else {
                    "use chroot = yes\n"
                };
                let rd = daemon.insert(RsyncDaemon::start(&server_dir, &module, extra));
                (module.clone(), rd.target("t", ""))
            }
            TargetKind::Ssh => {
                std::fs::create_dir(&module).unwrap();
                let s = sshd.insert(Sshd::start(&server_dir));
                (module.clone(), s.target("t", &module))
            }
        };
        let cfg = env.config(root, &target);
        Site {
            _daemon: daemon,
            _sshd: sshd,
            dst,
            cfg,
            clips_escaping_links: kind == TargetKind::DaemonNoChroot,
            env,
        }
    }
}

/// How seeds run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds per seed.
    pub rounds: u32,
    /// Operations per round (about: an action is finished once started).
    pub ops: usize,
    /// `wait-idle --timeout` after each round, seconds.
    pub idle_timeout_s: u32,
    /// Kill syncd with SIGKILL at moments drawn from the seed, and start it again.
    pub kill: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rounds: 3,
            ops: 25,
            idle_timeout_s: 60,
            kill: false,
        }
    }
}

/// What went wrong in a seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The round after which it was seen.
    pub round: u32,
    /// What is wrong: wait-idle's answer and the differences (or the fuzzer's own error).
    pub problem: String,
    /// syncctl status, syncctl failed and the tail of syncd's log.
    pub detail: String,
}

/// What one seed did and found.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub kind: TargetKind,
    pub seed: u64,
    /// The rounds run (or meant to be).
    pub rounds: Vec<Round>,
    /// Rounds that ended in a comparison.
    pub rounds_run: u32,
    /// Operations applied.
    pub ops_run: usize,
    /// Pushes awaited in flight: (seen in flight, awaited).
    pub in_flight: (u32, u32),
    /// When syncd was killed and restarted.
    pub kills: Vec<String>,
    pub failure: Option<Failure>,
    pub took: Duration,
}

impl SeedRun {
    /// The whole story of a failure (empty without one): seed, round, how to replay, the
    /// problem, every round's operations, then syncd's side.
    pub fn report(&self, replay: &str) -> String {
        let Some(f) = &self.failure else {
            return String::new();
        };
        let shown = self.rounds.get(..=f.round as usize).unwrap_or(&self.rounds);
        format!(
            "fuzz: {kind} target, seed {seed}: failed after round {round} (of {n})\n\
             replay: {replay}\n\n{problem}\n\n\
             operations (one round after another; wait-idle and a comparison after each):\n{script}\n\
             {kills}{detail}",
            kind = self.kind.name(),
            seed = self.seed,
            round = f.round,
            n = self.rounds.len(),
            problem = f.problem,
            script = Round::script(shown),
            kills = if self.kills.is_empty() { String::new() } else { format!("kill -9 of syncd: {}\n\n", self.kills.join("; ")) },
            detail = f.detail,
        )
    }
}

/// Run `seed` (its rounds generated by [`Round::all`]) against a fresh target of `kind`.
pub fn run_seed(kind: TargetKind, seed: u64, s: &Settings) -> SeedRun {
    run_rounds(kind, seed, Round::all(seed, s.rounds, s.ops), s)
}

/// Run given rounds against a fresh target of `kind` (`seed` draws the kill moments). An
/// operation the model finds invalid (a script edited or shrunk by hand) is skipped.
pub fn run_rounds(kind: TargetKind, seed: u64, rounds: Vec<Round>, s: &Settings) -> SeedRun {
    let started = Instant::now();
    let site = Site::new(kind);
    let mut run = SeedRun {
        kind,
        seed,
        rounds,
        rounds_run: 0,
        ops_run: 0,
        in_flight: (0, 0),
        kills: Vec::new(),
        failure: None,
        took: Duration::ZERO,
    };
    let mut r = Runner {
        site: &site,
        d: Some(Syncd::start(&site.cfg, &site.env.socket)),
        model: Model::new(),
        log_from: 0,
    };
    if let Err(problem) = r.settle(s) {
        run.failure = Some(r.failure(0, format!("the empty start did not converge: {problem}")));
    }
    for i in 0..run.rounds.len() {
        if run.failure.is_some() {
            break;
        }
        let round = run.rounds[i].clone();
        if let Err(f) = r.round(i as u32, &round, s, &mut run) {
            run.failure = Some(f);
        }
    }
    run.took = started.elapsed();
    run
}

/// A seed under way: the site, the running syncd (None while killed), the model.
struct Runner<'a> {
    site: &'a Site,
    d: Option<Syncd>,
    model: Model,
    /// The first line of syncd's log of this round.
    log_from: usize,
}

/// When syncd is killed within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPlan {
    None,
    /// SIGKILL before operation `kill`, started again before operation `restart` (or after the
    /// last one).
    Within {
        kill: usize,
        restart: usize,
    },
    /// SIGKILL right after the round's operations (its pushes in flight), started again.
    After,
}

impl KillPlan {
    fn draw(seed: u64, round: u32, ops: usize) -> KillPlan {
        let mut rng = Rng::new(seed, 1_000_000 + u64::from(round));
        match rng.below(10) {
            0..=3 => KillPlan::None,
            4..=6 => {
                let kill = rng.below(ops.max(1));
                KillPlan::Within {
                    kill,
                    restart: rng.range(kill, ops),
                }
            }
            _ => KillPlan::After,
        }
    }
}

impl Runner<'_> {
    fn src(&self) -> &Path {
        &self.site.env.src
    }

    fn round(
        &mut self,
        i: u32,
        round: &Round,
        s: &Settings,
        run: &mut SeedRun,
    ) -> Result<(), Failure> {
        self.log_from = self.d.as_ref().map_or(0, |d| d.log.len());
        let plan = if s.kill {
            KillPlan::draw(run.seed, i, round.ops.len())
        } else {
            KillPlan::None
        };
        for (k, op) in round.ops.iter().enumerate() {
            if let KillPlan::Within { kill, restart } = plan {
                if k == kill {
                    self.kill();
                }
                if k == restart {
                    self.restart();
                    run.kills.push(format!(
                        "round {i}: before its operation {}, started again before {}",
                        kill + 1,
                        restart + 1
                    ));
                }
            }
            if self.model.apply(op).is_err() {
                continue;
            }
            if let Op::AwaitPush { path } = op {
                if self.d.is_some() {
                    run.in_flight.1 += 1;
                    run.in_flight.0 += u32::from(self.await_push(path));
                }
                continue;
            }
            if let Err(e) = op.apply(self.src()) {
                return Err(self.failure(
                    i,
                    format!(
                        "fuzzer bug: `{op}` (operation {} of the round) failed on the source: {e}",
                        k + 1
                    ),
                ));
            }
            run.ops_run += 1;
        }
        match plan {
            KillPlan::Within { kill, restart } if restart >= round.ops.len() => {
                self.restart();
                run.kills.push(format!(
                    "round {i}: before its operation {}, started again after the last",
                    kill + 1
                ));
            }
            KillPlan::After => {
                self.kill();
                self.restart();
                run.kills
                    .push(format!("round {i}: right after its last operation"));
            }
            _ => {}
        }
        let settled = self.settle(s);
        if let Err(e) = self.model.check(self.src()) {
            return Err(self.failure(
                i,
                format!("fuzzer bug: the source is not what the model says:\n{e}"),
            ));
        }
        run.rounds_run += 1;
        settled.map_err(|problem| self.failure(i, problem))
    }

    /// wait-idle, then the comparison; the problem when either fails.
    fn settle(&self, s: &Settings) -> Result<(), String> {
        let d = self.d.as_ref().expect("syncd runs at the end of a round");
        let out = d.ctl(&["wait-idle", "--timeout", &s.idle_timeout_s.to_string()]);
        let code = out.status.code().unwrap_or(-1);
        let escaping = match self.site.clips_escaping_links {
            true => escaping_links(self.src()),
            false => Default::default(),
        };
        let diff = compare(self.src(), &self.site.dst, |p: &[u8]| {
            excluded_tmp(p) || escaping.contains(p)
        });
        if code == 0 && diff.is_ok() {
            return self.watches_every_directory(d);
        }
        let meaning = match code {
            0 => "idle",
            3 => "idle with failed paths",
            4 => "timed out",
            5 => "deletions held",
            _ => "error",
        };
        Err(format!(
            "wait-idle --timeout {}: exit {code} ({meaning}) {}{}\ndifferences between source and target:\n{}",
            s.idle_timeout_s,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            diff.err().unwrap_or_else(|| "(none)".into())
        ))
    }

    /// Whether syncd watches exactly the source's directories that are not excluded (and the
    /// root), as the watcher promises: a lost watch loses every later change below it, which
    /// the comparison would only see once something changes there. Checked on the status
    /// stream until it holds or 5 s went by (a watch of a directory removed may be let go a
    /// moment after the idle answer).
    fn watches_every_directory(&self, d: &Syncd) -> Result<(), String> {
        let dirs = crate::snapshot(self.src())
            .iter()
            .filter(|(p, n)| matches!(n, crate::Node::Dir) && !excluded_tmp(p))
            .count() as u64;
        let watches = |v: &serde_json::Value| v["roots"][0]["watches"].as_u64();
        let mut status = crate::Statuses::new(&d.socket);
        let deadline = Instant::now() + Duration::from_secs(5);
        if status
            .find(deadline, |v| watches(v) == Some(dirs + 1))
            .is_some()
        {
            return Ok(());
        }
        let now = watches(&d.status()).map_or("an unknown number of".into(), |n| n.to_string());
        Err(format!(
            "wait-idle: idle, and the target is exactly the source, but syncd watches {now} \
             directories where the source has {} (the root and {dirs} not excluded): a change \
             below one that is not watched would never reach the target",
            dirs + 1
        ))
    }

    fn kill(&mut self) {
        if let Some(d) = self.d.take() {
            d.kill9();
        }
    }

    fn restart(&mut self) {
        if self.d.is_none() {
            self.d = Some(Syncd::start(&self.site.cfg, &self.site.env.socket));
            self.log_from = 0;
        }
    }

    /// Wait until the target shows rsync's temporary file of `path` (its push under way);
    /// false when the push was over before it was seen, or nothing came within 5 s.
    fn await_push(&self, path: &str) -> bool {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let len = std::fs::symlink_metadata(self.src().join(path)).map_or(0, |m| m.len());
        await_temp_file(&self.site.dst.join(dir), name, len, Duration::from_secs(5))
    }

    /// syncd's log since the round began (since its start if it was restarted): the first 60
    /// and the last 30 lines when longer (a target retrying repeats itself), all of it with
    /// `SYNCD_FUZZ_WHOLE_LOG=1` (with `SYNCD_TEST_LOG=info,syncd=debug,syncd::rsync::run=trace`,
    /// every rsync's command and list).
    fn round_log(&self, d: &Syncd) -> String {
        let text = d.log.text();
        let lines: Vec<&str> = text.lines().skip(self.log_from).collect();
        if lines.len() <= 90 || std::env::var_os("SYNCD_FUZZ_WHOLE_LOG").is_some() {
            return lines.join("\n");
        }
        format!(
            "{}\n[… {} lines …]\n{}",
            lines[..60].join("\n"),
            lines.len() - 90,
            lines[lines.len() - 30..].join("\n")
        )
    }

    fn failure(&self, round: u32, problem: String) -> Failure {
        let detail = match &self.d {
            None => "(syncd not running)".to_string(),
            Some(d) => {
                let text = |args: &[&str]| {
                    let o = d.ctl(args);
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                };
                format!(
                    "syncctl status:\n{}\nsyncctl failed:\n{}\nsyncd log since the round began:\n{}",
                    text(&["status"]),
                    text(&["failed"]),
                    self.round_log(d)
                )
            }
        };
        Failure {
            round,
            problem,
            detail,
        }
    }
}

/// Wait (inotify, with a deadline) until `dir` holds rsync's temporary file for `name`
/// (`.NAME.XXXXXX`): true; false once `name` is there with `len` bytes (the transfer ended
/// unseen), at the deadline, or when `dir` cannot be watched.
fn await_temp_file(dir: &Path, name: &str, len: u64, timeout: Duration) -> bool {
    let temp = format!(".{name}.");
    let mut seen = None;
    let mut look = || {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&temp) {
                seen = Some(true);
            } else if n == name && e.metadata().is_ok_and(|m| m.len() == len) {
                seen = Some(false);
            }
            if seen.is_some() {
                return true;
            }
        }
        false
    };
    let _ = crate::try_wait_for_change_in(dir, timeout, &mut look);
    seen == Some(true)
}

/// The smallest rounds found that still fail on `kind`: whole rounds, then ever smaller runs
/// of operations are dropped while a fresh run still fails (any failure, in one of `attempts`
/// runs). `tried` is told each candidate's outcome. Timing makes some failures come and go, so
/// the result is small, not necessarily minimal.
pub fn shrink(
    kind: TargetKind,
    seed: u64,
    mut rounds: Vec<Round>,
    s: &Settings,
    attempts: u32,
    mut tried: impl FnMut(&[Round], bool),
) -> Vec<Round> {
    // A candidate runs without the operations it made invalid (a write into a directory no
    // longer created), up to `attempts` times until it fails; it replaces the rounds when it
    // does.
    let mut fails = |rounds: &mut Vec<Round>, candidate: Vec<Round>| {
        let candidate = valid_only(candidate);
        let failed = (0..attempts.max(1)).any(|_| {
            let r = run_rounds(kind, seed, candidate.clone(), s);
            r.failure
                .is_some_and(|f| !f.problem.starts_with("fuzzer bug"))
        });
        tried(&candidate, failed);
        if failed {
            *rounds = candidate;
        }
        failed
    };
    // Whole rounds first (the last one stays: it is where the failure shows).
    let mut i = 0;
    while i + 1 < rounds.len() {
        let mut c = rounds.clone();
        c.remove(i);
        if !fails(&mut rounds, c) {
            i += 1;
        }
    }
    // Then operations, in chunks halved down to one, across all rounds.
    let total = |r: &[Round]| r.iter().map(|x| x.ops.len()).sum::<usize>();
    let mut chunk = total(&rounds).div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < total(&rounds) {
            let c = without(&rounds, at, chunk);
            if !fails(&mut rounds, c) {
                at += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    rounds
}

/// `rounds` without the operations their model refuses, and without empty rounds.
fn valid_only(rounds: Vec<Round>) -> Vec<Round> {
    let mut model = Model::new();
    rounds
        .into_iter()
        .map(|r| Round {
            ops: r
                .ops
                .into_iter()
                .filter(|op| model.apply(op).is_ok())
                .collect(),
        })
        .filter(|r| !r.ops.is_empty())
        .collect()
}

/// `rounds` without the `n` operations starting at flat index `at`.
fn without(rounds: &[Round], at: usize, n: usize) -> Vec<Round> {
    let mut i = 0;
    rounds
        .iter()
        .map(|r| Round {
            ops: r
                .ops
                .iter()
                .filter(|_| {
                    let keep = i < at || i >= at + n;
                    i += 1;
                    keep
                })
                .cloned()
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_plans_come_from_the_seed_and_stay_within_the_round() {
        let mut kinds = [0; 3];
        for seed in 0..200 {
            let p = KillPlan::draw(seed, 1, 25);
            assert_eq!(p, KillPlan::draw(seed, 1, 25));
            match p {
                KillPlan::None => kinds[0] += 1,
                KillPlan::Within { kill, restart } => {
                    assert!(kill < 25 && (kill..=25).contains(&restart));
                    kinds[1] += 1;
                }
                KillPlan::After => kinds[2] += 1,
            }
        }
        assert!(kinds.iter().all(|k| *k > 20), "{kinds:?}");
    }

    #[test]
    fn a_shrunk_candidate_loses_the_operations_it_made_invalid() {
        let rounds =
            Round::parse("# round 0\nwrite d/a 1 0x1\nmkdir -p e\n# round 1\nmv d/a e/a\n")
                .unwrap();
        assert_eq!(
            Round::script(&valid_only(rounds)),
            "# round 0\nmkdir -p e\n"
        );
    }

    #[test]
    fn without_drops_a_run_of_operations_across_rounds() {
        let rounds = Round::parse("# round 0\nrm a\nrm b\n# round 1\nrm c\nrm d\n").unwrap();
        let left = Round::script(&without(&rounds, 1, 2));
        assert_eq!(left, "# round 0\nrm a\n# round 1\nrm d\n");
    }
}

/// The symlinks below `root` whose target, read from the link's directory, leaves `root` (or
/// is absolute).
fn escaping_links(root: &std::path::Path) -> std::collections::HashSet<Vec<u8>> {
    crate::snapshot(root)
        .into_iter()
        .filter_map(|(p, n)| match n {
            crate::Node::Symlink(to) if escapes(&p, &to) => Some(p),
            _ => None,
        })
        .collect()
}

/// Whether symlink `rel` (relative to the root) pointing at `target` leaves the root.
fn escapes(rel: &[u8], target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return true;
    }
    let mut depth = rel.iter().filter(|b| **b == b'/').count() as i64;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod escape_tests {
    #[test]
    fn a_link_escapes_the_root_when_its_target_climbs_above_it() {
        assert!(super::escapes(b"d3/l2", b"../../d1/d1/d3"));
        assert!(!super::escapes(b"d2/d1/l2", b"../../d1/d1/d3"));
        assert!(super::escapes(b"l", b"/etc"));
        assert!(!super::escapes(b"l", b"f0"));
        assert!(super::escapes(b"l", b".."));
    }
}
