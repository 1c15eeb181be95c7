//! Randomized file-system operations (fixed seeds, so a failure replays): whatever the mix of
//! creates, rewrites, appends, truncates, renames of files and directories, deletes of files
//! and trees, symlinks and deep mkdirs, the target ends up identical to the source.

use std::path::{Path, PathBuf};

use syncd_tests::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every entry under `root` (relative), directories included.
fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                dirs.push(r.clone());
                stack.push(r);
            } else {
                files.push(r);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn random_ops(src: &Path, rng: &mut Rng, ops: usize) {
    for i in 0..ops {
        let (files, dirs) = entries(src);
        let pick_dir = |rng: &mut Rng| -> PathBuf {
            if dirs.is_empty() || rng.below(4) == 0 {
                PathBuf::new()
            } else {
                dirs[rng.below(dirs.len())].clone()
            }
        };
        match rng.below(12) {
            0..=2 => {
                let d = pick_dir(rng);
                let size = rng.below(3000);
                let _ = std::fs::write(
                    src.join(d).join(format!("f{i}")),
                    vec![b'a' + (i % 26) as u8; size],
                );
            }
            3 if !files.is_empty() => {
                // Same-size rewrite: rsync's quick check would miss it.
                let f = &files[rng.below(files.len())];
                if let Ok(old) = std::fs::read(src.join(f)) {
                    let _ = std::fs::write(
                        src.join(f),
                        old.iter().map(|b| b.wrapping_add(1)).collect::<Vec<u8>>(),
                    );
                }
            }
            4 if !files.is_empty() => {
                use std::io::Write;
                let f = &files[rng.below(files.len())];
                if let Ok(mut h) = std::fs::OpenOptions::new().append(true).open(src.join(f)) {
                    let _ = h.write_all(b"appended");
                }
            }
            5 if !files.is_empty() => {
                let f = &files[rng.below(files.len())];
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(src.join(f));
            }
            6 if !files.is_empty() => {
                let f = &files[rng.below(files.len())];
                let to = pick_dir(rng).join(format!("mv{i}"));
                let _ = std::fs::rename(src.join(f), src.join(to));
            }
            7 if !dirs.is_empty() => {
                let d = &dirs[rng.below(dirs.len())];
                let to = pick_dir(rng).join(format!("dmv{i}"));
                // Renaming a directory into itself fails: harmless.
                let _ = std::fs::rename(src.join(d), src.join(to));
            }
            8 if !files.is_empty() => {
                let _ = std::fs::remove_file(src.join(&files[rng.below(files.len())]));
            }
            9 if !dirs.is_empty() && rng.below(3) == 0 => {
                let _ = std::fs::remove_dir_all(src.join(&dirs[rng.below(dirs.len())]));
            }
            10 => {
                let d = pick_dir(rng).join(format!("n{i}/m/k"));
                if std::fs::create_dir_all(src.join(&d)).is_ok() {
                    let _ = std::fs::write(src.join(&d).join("deep"), format!("{i}"));
                }
            }
            11 => {
                let d = pick_dir(rng);
                let _ = std::os::unix::fs::symlink(
                    format!("../target-{i}"),
                    src.join(d).join(format!("l{i}")),
                );
            }
            _ => {}
        }
    }
}

fn run_seed(seed: u64) {
    let env = Env::new();
    let cfg = env.local_config("");
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let mut rng = Rng(seed);
    for _round in 0..3 {
        random_ops(&env.src, &mut rng, 400);
        d.settle();
        assert_same_tree(&env.src, &env.dst);
    }
}

#[test]
fn random_operations_converge_seed_1() {
    run_seed(0x9e37_79b9_7f4a_7c15);
}

#[test]
fn random_operations_converge_seed_2() {
    run_seed(0xdead_beef_cafe_f00d);
}

#[test]
fn random_operations_converge_seed_3() {
    run_seed(42);
}

#[test]
fn random_operations_converge_on_an_rsync_daemon_target() {
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let cfg = env.config("", &rd.target("d1", "workers = 2\nmax_batch = 100"));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    let mut rng = Rng(7);
    for _round in 0..3 {
        random_ops(&env.src, &mut rng, 400);
        d.settle();
        assert_same_tree(&env.src, &module);
    }
}
