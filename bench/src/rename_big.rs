//! The "rename big" run: what renaming a large directory, renaming a large file in its
//! directory and moving a file to another directory put on the wire, counted by a relay in
//! front of the rsync daemon (both ways), for each tool and for one plain rsync of the changed
//! paths.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::measure::differing_count;
use crate::restart::Relay;
use crate::tools::Tool;
use crate::Stage;
use syncd_tests::RSYNC_PASSWORD;

/// Sizes in MiB: the renamed directory (20 files), the file renamed in its directory, the
/// file moved to another directory.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub dir: usize,
    pub file: usize,
    pub moved: usize,
}

/// Issue 13's item 1 (≤ 2 MiB on the wire in all, converged ≤ 0.3 s), then its bench.
pub const SIZES: [Sizes; 2] = [
    Sizes {
        dir: 30,
        file: 16,
        moved: 8,
    },
    Sizes {
        dir: 200,
        file: 100,
        moved: 8,
    },
];

/// One tool's figure.
pub struct RenameBigResult {
    pub sizes: Sizes,
    pub tool: String,
    /// Bytes both ways through the relay from the renames to convergence.
    pub bytes: u64,
    /// From the renames until the module equals the source.
    pub converged: Option<Duration>,
}

const MIB: usize = 1 << 20;

/// `big/` (20 files), `big.bin` and `m/moved.bin` of `sz`, each different.
fn populate(src: &Path, sz: Sizes) -> anyhow::Result<()> {
    let mut seed = 1u64;
    let mut data = |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    std::fs::create_dir_all(src.join("big"))?;
    std::fs::create_dir_all(src.join("m"))?;
    std::fs::create_dir_all(src.join("n"))?;
    for i in 0..20 {
        std::fs::write(src.join(format!("big/f{i:02}")), data(sz.dir * MIB / 20))?;
    }
    std::fs::write(src.join("big.bin"), data(sz.file * MIB))?;
    std::fs::write(src.join("m/moved.bin"), data(sz.moved * MIB))?;
    Ok(())
}

/// The three operations, and the paths they touched (what the plain rsync is given).
fn rename(src: &Path) -> anyhow::Result<Vec<&'static str>> {
    std::fs::rename(src.join("big"), src.join("big2"))?;
    std::fs::rename(src.join("big.bin"), src.join("big2.bin"))?;
    std::fs::rename(src.join("m/moved.bin"), src.join("n/moved.bin"))?;
    Ok(vec![
        "big",
        "big2",
        "big.bin",
        "big2.bin",
        "m/moved.bin",
        "n/moved.bin",
    ])
}

/// For each of [`SIZES`]: every tool, then one plain rsync of the changed paths, each from a
/// fresh stage; each tool's log kept in `logs` (named tool-rename-big-MIB.log).
pub fn run(tools: &[Tool], logs: Option<&Path>) -> anyhow::Result<Vec<RenameBigResult>> {
    let mut out = Vec::new();
    for sz in SIZES {
        for tool in tools {
            out.push(one(Some(tool), sz, logs)?);
        }
        out.push(one(None, sz, logs)?);
    }
    Ok(out)
}

fn one(tool: Option<&Tool>, sizes: Sizes, logs: Option<&Path>) -> anyhow::Result<RenameBigResult> {
    let stage = Stage::build("2g", true, |src| populate(src, sizes))?;
    let relay = Relay::start(stage.daemon.port)?;
    let url = format!("rsync://syncuser@127.0.0.1:{}/mod/", relay.port);
    let running = match tool {
        Some(t) => {
            let r = t.start_at(&stage, &url)?;
            r.wait_ready(&stage, Duration::from_secs(300))?;
            Some(r)
        }
        None => None,
    };
    relay.take();
    let t0 = Instant::now();
    let touched = rename(&stage.src)?;
    let converged = match &running {
        Some(_) => wait_converged(&stage, &relay, Duration::from_secs(120)),
        None => {
            let mut c = Command::new("rsync");
            c.args([
                "-a",
                "-r",
                "-0",
                "--files-from=-",
                "--delete-missing-args",
                "--force",
            ])
            .arg(format!("{}/", stage.src.display()))
            .arg(&url)
            .env("RSYNC_PASSWORD", RSYNC_PASSWORD);
            let list: Vec<u8> = touched
                .iter()
                .flat_map(|p| format!("./{p}\0").into_bytes())
                .collect();
            let (ok, _) = crate::measure::run_timed(&mut c, &list)?;
            if !ok {
                bail!("the plain rsync failed");
            }
            Some(t0.elapsed())
        }
    };
    let bytes = relay.take();
    let name = tool.map_or("one plain rsync of the changed paths", |t| t.name());
    if let Some(r) = running {
        let log = r.log.clone();
        r.stop();
        if let Some(dir) = logs {
            let file = format!(
                "{}-rename-big-{}.log",
                name.replace([' ', '='], "-"),
                sizes.dir
            );
            std::fs::copy(log, dir.join(file))?;
        }
    }
    Ok(RenameBigResult {
        sizes,
        tool: name.to_string(),
        bytes,
        converged,
    })
}

/// Until the module has the new names and not the old ones and the relay has been quiet for a
/// second (a tool may still be deleting); then the module must equal the source. (A full
/// comparison while a tool writes would trip over its temporary files.)
fn wait_converged(stage: &Stage, relay: &Relay, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let m = &stage.module;
    let moved = || {
        ["big2/f19", "big2.bin", "n/moved.bin"]
            .iter()
            .all(|p| m.join(p).exists())
            && ["big", "big.bin", "m/moved.bin"]
                .iter()
                .all(|p| !m.join(p).exists())
    };
    let mut converged = None;
    let mut quiet_since = Instant::now();
    let mut last = relay.peek();
    while t0.elapsed() < limit {
        if converged.is_none() && moved() {
            converged = Some(t0.elapsed());
        }
        let now = relay.peek();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        if converged.is_some() && quiet_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    converged.filter(|_| differing_count(&stage.src, &stage.module) == 0)
}

/// The runs as markdown sections, one per [`Sizes`].
pub fn table(rs: &[RenameBigResult]) -> String {
    let mut out = String::new();
    for sz in SIZES {
        let rows: Vec<&RenameBigResult> = rs.iter().filter(|r| r.sizes.dir == sz.dir).collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n## Rename big: a {} MiB directory and a {} MiB file renamed, an {} MiB file moved to another directory\n\n\
             Bytes both ways through a relay in front of the rsync daemon, from the renames until the target equals the source and the relay is quiet for a second.\n\n\
             | tool | bytes on the wire | converged after |\n|---|---|---|\n",
            sz.dir, sz.file, sz.moved
        ));
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                r.tool,
                r.bytes,
                r.converged.map_or("not converged".to_string(), |d| format!(
                    "{:.2} s",
                    d.as_secs_f64()
                ))
            ));
        }
    }
    out
}
