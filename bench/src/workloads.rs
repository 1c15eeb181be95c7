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

pub enum Workload {
    /// 5,000 files of 10–100 KB in 50 new directories, as fast as one process writes.
    Burst,
    /// A directory of 100 files and a file renamed.
    Renames,
}

impl Workload {
    pub fn parse(s: &str) -> anyhow::Result<Workload> {
        Ok(match s {
            "burst" => Workload::Burst,
            "renames" => Workload::Renames,
            other => bail!("unknown workload {other:?}: burst, renames"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Workload::Burst => "burst",
            Workload::Renames => "renames",
        }
    }

    /// Set up what the workload needs before the tool starts.
    pub fn prepare(&self, src: &Path) -> anyhow::Result<()> {
        if let Workload::Renames = self {
            let mut rng = Rng(7);
            std::fs::create_dir_all(src.join("ren/dir"))?;
            for i in 0..100 {
                std::fs::write(
                    src.join(format!("ren/dir/f{i:03}")),
                    content(&mut rng, 5_000),
                )?;
            }
            std::fs::write(src.join("ren/file.txt"), content(&mut rng, 20_000))?;
        }
        Ok(())
    }

    /// Run it; returns the touched paths.
    pub fn run(&self, src: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut touched = Vec::new();
        match self {
            Workload::Burst => {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d);
                for d in 0..50 {
                    let dir = PathBuf::from(format!("burst/d{d:02}"));
                    std::fs::create_dir_all(src.join(&dir))?;
                    touched.push(dir);
                }
                touched.insert(0, PathBuf::from("burst"));
                for i in 0..5_000 {
                    let p = PathBuf::from(format!("burst/d{:02}/f{i:05}.bin", i % 50));
                    let size = 10_000 + rng.below(90_001) as usize;
                    std::fs::write(src.join(&p), content(&mut rng, size))?;
                    touched.push(p);
                }
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
