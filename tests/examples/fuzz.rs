//! The convergence fuzzer at length: many seeds against each kind of target, optionally with
//! `kill -9` of syncd at random moments (within rounds, some operations then happening while it
//! is down, and right after a round's operations), optionally shrinking each failure to a short
//! operation list. Not in CI (minutes). Run as root after `cargo build --workspace` (or
//! `--release`, with `SYNCD_BIN=target/release/syncd SYNCCTL_BIN=target/release/syncctl`):
//!
//! `cargo run -p syncd-tests --example fuzz -- [SEEDS] [KIND...] [--first N] [--rounds R] [--ops N] [--kill] [--shrink] [--shrink-tries N] [--idle-timeout S] [--replay FILE]`
//!
//! KIND: local, daemon-chroot, daemon-nochroot, ssh (default: all four). Seeds run are
//! `--first`..`--first`+SEEDS-1 (default 1..=20). `--replay FILE` runs the rounds of a script
//! (as a failure prints them: `# round N` lines, then one operation per line) instead of seeds.
//! `--shrink` drops rounds and operations while a fresh run still fails (each candidate run up
//! to `--shrink-tries` times, default 3: many failures depend on timing), and prints the short
//! script left. Each failure's full report goes to stderr as it happens; at the end one summary line per
//! kind (seeds × rounds × operations run, failures) and every failing seed with its operations.
//! Exit 1 when anything failed.

use std::time::Instant;

use syncd_tests::fuzz::{run_rounds, run_seed, shrink, Round, SeedRun, Settings, TargetKind};

struct Args {
    seeds: u64,
    first: u64,
    kinds: Vec<TargetKind>,
    settings: Settings,
    shrink: bool,
    /// Runs of each candidate while shrinking (a failure that comes and goes needs several).
    shrink_tries: u32,
    replay: Option<Vec<Round>>,
    replay_file: String,
}

fn usage(why: &str) -> ! {
    eprintln!("{why}\nusage: fuzz [SEEDS] [local|daemon-chroot|daemon-nochroot|ssh...] [--first N] [--rounds R] [--ops N] [--kill] [--shrink] [--shrink-tries N] [--idle-timeout S] [--replay FILE]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut a = Args {
        seeds: 20,
        first: 1,
        kinds: Vec::new(),
        settings: Settings::default(),
        shrink: false,
        shrink_tries: 3,
        replay: None,
        replay_file: String::new(),
    };
    let mut it = std::env::args().skip(1);
    let num = |it: &mut dyn Iterator<Item = String>, what: &str| -> u64 {
        it.next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage(&format!("{what} needs a number")))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--first" => a.first = num(&mut it, "--first"),
            "--rounds" => a.settings.rounds = num(&mut it, "--rounds") as u32,
            "--ops" => a.settings.ops = num(&mut it, "--ops") as usize,
            "--idle-timeout" => a.settings.idle_timeout_s = num(&mut it, "--idle-timeout") as u32,
            "--kill" => a.settings.kill = true,
            "--shrink" => a.shrink = true,
            "--shrink-tries" => a.shrink_tries = num(&mut it, "--shrink-tries") as u32,
            "--replay" => {
                let f = it.next().unwrap_or_else(|| usage("--replay needs a file"));
                let text =
                    std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
                a.replay =
                    Some(Round::parse(&text).unwrap_or_else(|e| usage(&format!("{f}: {e}"))));
                a.replay_file = f;
            }
            s if s.parse::<u64>().is_ok() => a.seeds = s.parse().expect("checked"),
            s => match TargetKind::parse(s) {
                Some(k) => a.kinds.push(k),
                None => usage(&format!("unknown argument {s:?}")),
            },
        }
    }
    if a.kinds.is_empty() {
        a.kinds = TargetKind::ALL.to_vec();
    }
    a
}

/// One seed (or the replayed rounds), a panic of the harness (syncd never ready, say) counted
/// as a failure of that seed.
fn one(kind: TargetKind, seed: u64, a: &Args) -> Result<SeedRun, String> {
    std::panic::catch_unwind(|| match &a.replay {
        Some(rounds) => run_rounds(kind, seed, rounds.clone(), &a.settings),
        None => run_seed(kind, seed, &a.settings),
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into())
    })
}

/// Shrink a failure (without kills: they would make it come and go); the script found and
/// what it does.
fn shrunk(kind: TargetKind, run: &SeedRun, a: &Args) -> String {
    let failed = run.failure.as_ref().map_or(0, |f| f.round as usize);
    let rounds = run.rounds[..=failed.min(run.rounds.len() - 1)].to_vec();
    let settings = Settings {
        kill: false,
        idle_timeout_s: a.settings.idle_timeout_s.min(20),
        ..a.settings.clone()
    };
    let mut tries = 0;
    let small = shrink(
        kind,
        run.seed,
        rounds,
        &settings,
        a.shrink_tries,
        |c, failed| {
            tries += 1;
            let n: usize = c.iter().map(|r| r.ops.len()).sum();
            eprintln!(
                "  shrink try {tries}: {n} operations in {} rounds: {}",
                c.len(),
                if failed { "fails" } else { "passes" }
            );
        },
    );
    // Once more, to tell what the small script does (timing may make it pass this time).
    let again = run_rounds(kind, run.seed, small.clone(), &settings);
    let what = again.failure.map_or_else(
        || "(passed when run once more: a failure that comes and goes)".to_string(),
        |f| f.problem,
    );
    format!("{}{what}\n", Round::script(&small))
}

/// How to run `seed` of `kind` again: the test when the settings are its own, else this
/// example with the same settings.
fn replay_command(kind: TargetKind, seed: u64, a: &Args) -> String {
    let d = Settings::default();
    let s = &a.settings;
    if a.replay.is_none() && !s.kill && (s.rounds, s.ops) == (d.rounds, d.ops) {
        return kind.replay(seed);
    }
    let mut cmd = format!("cargo run -p syncd-tests --example fuzz -- {}", kind.name());
    match a.replay {
        Some(_) => cmd.push_str(&format!(" --replay {} --first {seed}", a.replay_file)),
        None => cmd.push_str(&format!(
            " 1 --first {seed} --rounds {} --ops {}",
            s.rounds, s.ops
        )),
    }
    if s.kill {
        cmd.push_str(" --kill");
    }
    cmd
}

fn main() {
    let a = parse_args();
    let seeds: Vec<u64> = if a.replay.is_some() {
        vec![a.first]
    } else {
        (a.first..a.first + a.seeds).collect()
    };
    let mut summary = Vec::new();
    let mut failures = Vec::new();
    for &kind in &a.kinds {
        let started = Instant::now();
        let (mut rounds, mut ops, mut failed, mut seen, mut awaited, mut kills) =
            (0, 0, Vec::new(), 0, 0, 0);
        for &seed in &seeds {
            let replay = replay_command(kind, seed, &a);
            match one(kind, seed, &a) {
                Ok(run) => {
                    rounds += run.rounds_run;
                    ops += run.ops_run;
                    seen += run.in_flight.0;
                    awaited += run.in_flight.1;
                    kills += run.kills.len();
                    eprintln!(
                        "{} seed {seed}: {} ({:.1} s)",
                        kind.name(),
                        if run.failure.is_some() {
                            "FAILED"
                        } else {
                            "ok"
                        },
                        run.took.as_secs_f64()
                    );
                    if let Some(f) = &run.failure {
                        eprintln!("{}", run.report(&replay));
                        let mut entry = format!(
                            "{} seed {seed}, round {}:\n{}\n{}",
                            kind.name(),
                            f.round,
                            f.problem,
                            Round::script(
                                run.rounds.get(..=f.round as usize).unwrap_or(&run.rounds)
                            )
                        );
                        if a.shrink {
                            entry.push_str(&format!("shrunk to:\n{}", shrunk(kind, &run, &a)));
                        }
                        failures.push(entry);
                        failed.push(seed);
                    }
                }
                Err(panic) => {
                    eprintln!("{} seed {seed}: the harness panicked: {panic}", kind.name());
                    failures.push(format!(
                        "{} seed {seed}: the harness panicked: {panic}",
                        kind.name()
                    ));
                    failed.push(seed);
                }
            }
        }
        summary.push(format!(
            "{}: {} seeds × {} rounds × ~{} ops: {rounds} rounds, {ops} operations run, {} failed{}; {seen} of {awaited} pushes seen in flight; {kills} kill -9; {:.0} s",
            kind.name(),
            seeds.len(),
            a.settings.rounds,
            a.settings.ops,
            failed.len(),
            if failed.is_empty() { String::new() } else { format!(" (seeds {})", failed.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")) },
            started.elapsed().as_secs_f64()
        ));
    }
    println!("{}", summary.join("\n"));
    for f in &failures {
        println!("\n{f}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
