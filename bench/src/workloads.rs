//! The base tree and the workloads. Each workload returns the paths it touched (relative to
//! the source root; deleted and renamed-away paths included), which is what convergence waits
//! for; the final exact comparison covers the whole tree.

use std::path::{Path, PathBuf};

use anyhow::bail;
// Deterministic, so every tool gets the same bytes.
use syncd_tests::soak::Rng;

/// `n` files of 1–10 KB, 100 to a directory, under `base/`.
pub fn base_tree(src: &Path, n: usize) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let dir = src.join(format!("base/d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let size = 1_000 + rng.below(9_001) as usize;
        std::fs::write(dir.join(format!("f{i:07}")), content(&mut rng, size))?;
    }
    Ok(())
}

/// How long the big write's 200 MiB take: `dd bs=1M` onto a disk.
const BIG_WRITE_TIME: std::time::Duration = std::time::Duration::from_millis(1700);

pub enum Workload {
    /// 5,000 files of 10–100 KB in 50 new directories, as fast as one process writes.
    Burst,
    /// `rate` files a second of 10–100 KB for 20 s.
    Steady { rate: u32 },
    /// `mkdir -p` six levels with files at each, a 1,000-file directory moved in, a directory
    /// renamed, a subtree `rm -rf`, 500 deletes.
    TreeOps,
    /// 200 MiB written, then 1 MiB overwritten in the middle (timed: the overwrite).
    BigFile,
    /// The same file written during the run (200 writes of 1 MiB over `BIG_WRITE_TIME`),
    /// closed, then 1 MiB of it rewritten in place: is it pushed half-written?
    BigWrite,
    /// A directory of 100 files and a file renamed.
    Renames,
}

type LagTx<'a> = Option<&'a std::sync::mpsc::Sender<(PathBuf, std::time::Instant)>>;

impl Workload {
    pub fn parse(s: &str) -> anyhow::Result<Workload> {
        Ok(match s {
            "burst" => Workload::Burst,
            "steady200" => Workload::Steady { rate: 200 },
            "steady2000" => Workload::Steady { rate: 2000 },
            "treeops" => Workload::TreeOps,
            "bigfile" => Workload::BigFile,
            "bigwrite" => Workload::BigWrite,
            "renames" => Workload::Renames,
            other => bail!(
                "unknown workload {other:?}: burst, steady200, steady2000, treeops, bigfile, bigwrite, renames"
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Workload::Burst => "burst",
            Workload::Steady { rate: 200 } => "steady 200 files/s",
            Workload::Steady { .. } => "steady 2,000 files/s",
            Workload::TreeOps => "tree ops",
            Workload::BigFile => "big file",
            Workload::BigWrite => "big write",
            Workload::Renames => "renames",
        }
    }

    /// Whether per-file lag is measured.
    pub fn tracks_lag(&self) -> bool {
        matches!(self, Workload::Steady { .. })
    }

    /// Set up what the workload needs before the tool starts (and before the target is made
    /// equal to the source).
    pub fn prepare(&self, src: &Path) -> anyhow::Result<()> {
        let mut rng = Rng(7);
        match self {
            Workload::Renames => {
                std::fs::create_dir_all(src.join("ren/dir"))?;
                for i in 0..100 {
                    std::fs::write(
                        src.join(format!("ren/dir/f{i:03}")),
                        content(&mut rng, 5_000),
                    )?;
                }
                std::fs::write(src.join("ren/file.txt"), content(&mut rng, 20_000))?;
            }
            Workload::TreeOps => {
                // Outside the root: the directory to move in.
                let outside = src.with_file_name("outside/incoming");
                std::fs::create_dir_all(&outside)?;
                for i in 0..1_000 {
                    std::fs::write(outside.join(format!("f{i:04}")), content(&mut rng, 2_000))?;
                }
                for d in ["ops/rename-me", "ops/remove-me/a/b", "ops/deletes"] {
                    std::fs::create_dir_all(src.join(d))?;
                }
                for i in 0..100 {
                    std::fs::write(
                        src.join(format!("ops/rename-me/f{i:03}")),
                        content(&mut rng, 3_000),
                    )?;
                    std::fs::write(
                        src.join(format!("ops/remove-me/a/b/f{i:03}")),
                        content(&mut rng, 3_000),
                    )?;
                }
                for i in 0..500 {
                    std::fs::write(
                        src.join(format!("ops/deletes/f{i:03}")),
                        content(&mut rng, 1_000),
                    )?;
                }
            }
            Workload::BigFile => {
                let mut f = std::fs::File::create(src.join("big.bin"))?;
                use std::io::Write;
                for _ in 0..200 {
                    f.write_all(&content(&mut rng, 1 << 20))?;
                }
            }
            Workload::Burst | Workload::Steady { .. } | Workload::BigWrite => {}
        }
        Ok(())
    }

    /// Run it; returns the touched paths. Steady workloads report each file as written on `lag`.
    pub fn run(&self, src: &Path, lag: LagTx) -> anyhow::Result<Vec<PathBuf>> {
        let mut touched = Vec::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        match self {
            Workload::Burst => {
                touched.push(PathBuf::from("burst"));
                for d in 0..50 {
                    let dir = PathBuf::from(format!("burst/d{d:02}"));
                    std::fs::create_dir_all(src.join(&dir))?;
                    touched.push(dir);
                }
                for i in 0..5_000 {
                    let p = PathBuf::from(format!("burst/d{:02}/f{i:05}.bin", i % 50));
                    let size = 10_000 + rng.below(90_001) as usize;
                    std::fs::write(src.join(&p), content(&mut rng, size))?;
                    touched.push(p);
                }
            }
            Workload::Steady { rate } => {
                let start = std::time::Instant::now();
                let total = rate * 20;
                touched.push(PathBuf::from("steady"));
                for d in 0..20 {
                    let dir = PathBuf::from(format!("steady/d{d:02}"));
                    std::fs::create_dir_all(src.join(&dir))?;
                    touched.push(dir);
                }
                for i in 0..total {
                    // Paced: file i is due at i / rate seconds.
                    let due = start + std::time::Duration::from_secs_f64(i as f64 / *rate as f64);
                    if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let p = PathBuf::from(format!("steady/d{:02}/f{i:06}.bin", i % 20));
                    let size = 10_000 + rng.below(90_001) as usize;
                    std::fs::write(src.join(&p), content(&mut rng, size))?;
                    if let Some(tx) = lag {
                        let _ = tx.send((p.clone(), std::time::Instant::now()));
                    }
                    touched.push(p);
                }
            }
            Workload::TreeOps => {
                // mkdir -p six levels, files at each.
                let mut d = PathBuf::from("ops/deep");
                for level in 0..6 {
                    d = d.join(format!("l{level}"));
                    std::fs::create_dir_all(src.join(&d))?;
                    for i in 0..10 {
                        let p = d.join(format!("f{i}"));
                        std::fs::write(src.join(&p), content(&mut rng, 4_000))?;
                        touched.push(p);
                    }
                    touched.push(d.clone());
                }
                touched.push(PathBuf::from("ops/deep"));
                // A 1,000-file directory moved in from outside the root.
                std::fs::rename(
                    src.with_file_name("outside/incoming"),
                    src.join("ops/incoming"),
                )?;
                touched.push(PathBuf::from("ops/incoming"));
                for i in 0..1_000 {
                    touched.push(PathBuf::from(format!("ops/incoming/f{i:04}")));
                }
                // A directory renamed.
                std::fs::rename(src.join("ops/rename-me"), src.join("ops/renamed"))?;
                for d in ["ops/rename-me", "ops/renamed"] {
                    touched.push(PathBuf::from(d));
                    for i in 0..100 {
                        touched.push(PathBuf::from(format!("{d}/f{i:03}")));
                    }
                }
                // A subtree removed.
                std::fs::remove_dir_all(src.join("ops/remove-me"))?;
                touched.push(PathBuf::from("ops/remove-me"));
                for i in 0..100 {
                    touched.push(PathBuf::from(format!("ops/remove-me/a/b/f{i:03}")));
                }
                // 500 deletes.
                for i in 0..500 {
                    let p = PathBuf::from(format!("ops/deletes/f{i:03}"));
                    std::fs::remove_file(src.join(&p))?;
                    touched.push(p);
                }
            }
            Workload::BigWrite => {
                use std::io::Write;
                // Paced like `dd bs=1M` onto a disk (200 MiB in 1.7 s), not at tmpfs speed: the
                // tool sees a file that stays open and keeps growing.
                let t0 = std::time::Instant::now();
                let mut f = std::fs::File::create(src.join("big.bin"))?;
                for i in 1..=200u32 {
                    f.write_all(&content(&mut rng, 1 << 20))?;
                    let due = t0 + BIG_WRITE_TIME * i / 200;
                    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                }
                drop(f);
                rewrite_big_file(src, &mut rng)?;
                touched.push(PathBuf::from("big.bin"));
            }
            Workload::BigFile => {
                rewrite_big_file(src, &mut rng)?;
                touched.push(PathBuf::from("big.bin"));
            }
            Workload::Renames => {
                std::fs::rename(src.join("ren/dir"), src.join("ren/dir2"))?;
                std::fs::rename(src.join("ren/file.txt"), src.join("ren/file2.txt"))?;
                for d in ["ren/dir", "ren/dir2"] {
                    touched.push(PathBuf::from(d));
                    for i in 0..100 {
                        touched.push(PathBuf::from(format!("{d}/f{i:03}")));
                    }
                }
                touched.push(PathBuf::from("ren/file.txt"));
                touched.push(PathBuf::from("ren/file2.txt"));
            }
        }
        Ok(touched)
    }
}

fn content(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(size);
    v
}

/// 1 MiB in the middle of `big.bin` rewritten in place.
fn rewrite_big_file(src: &Path, rng: &mut Rng) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))?;
    f.seek(SeekFrom::Start(100 << 20))?;
    f.write_all(&content(rng, 1 << 20))?;
    Ok(())
}
