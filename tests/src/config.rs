//! Config builders: a source, a target and a state directory in a temp dir, and the TOML.

use std::path::{Path, PathBuf};

/// A temp directory with `src/`, `dst/`, `state/` and a config writer.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// Fresh directories.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("syncd-t")
            .tempdir_in("/tmp")
            .unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let state = dir.path().join("state");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let socket = dir.path().join("run/syncd.sock");
        Env {
            dir,
            src,
            dst,
            state,
            socket,
        }
    }

    /// Write a config with one root (`extra_root` lines go into `[[sync]]`) and the given target
    /// sections; returns its path.
    pub fn config(&self, extra_root: &str, targets: &str) -> PathBuf {
        self.config_top("", extra_root, targets)
    }

    /// Like [`Env::config`] with extra top-level lines.
    pub fn config_top(&self, top: &str, extra_root: &str, targets: &str) -> PathBuf {
        let text = format!(
            "{top}\n\n[[sync]]\n{root}\n{targets}",
            top = merge_keys(
                &format!(
                    "state_dir = {:?}\nsocket = {:?}\ngrace_period_s = 5",
                    self.state, self.socket
                ),
                top
            ),
            root = merge_keys(
                &format!(
                    "name = \"data\"\nsource = {:?}\ndelay_ms = 20\nmodify_delay_ms = 200",
                    self.src
                ),
                extra_root
            ),
        );
        let p = self.dir.path().join("syncd.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A config with one local target `local` into `dst/`.
    pub fn local_config(&self, extra_root: &str) -> PathBuf {
        self.config(extra_root, &local_target("local", &self.dst, ""))
    }
}

/// A `[[sync.target]]` section for a local directory; `extra` lines override the defaults.
pub fn local_target(name: &str, dest: &Path, extra: &str) -> String {
    let defaults =
        format!("name = {name:?}\ndest = {dest:?}\nretry_initial_ms = 100\nretry_max_ms = 1000");
    format!("[[sync.target]]\n{}\n", merge_keys(&defaults, extra))
}

/// An `on_failure` (or `on_batch`) program in `dir` that appends to `dir/told` the paths it is
/// given, one per line, then `$SYNCD_HOOK $SYNCD_TARGET $SYNCD_ERROR`; returns (program, told).
pub fn hook_recorder(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let told = dir.join("told");
    let prog = dir.join("alert.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n{{ tr '\\0' '\\n'; echo \"$SYNCD_HOOK $SYNCD_TARGET $SYNCD_ERROR\"; }} >> {}\n",
            told.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, told)
}

/// `key = value` lines of `defaults` not set in `extra`, then `extra`.
pub fn merge_keys(defaults: &str, extra: &str) -> String {
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let mut out: Vec<&str> = defaults
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .collect();
    out.extend(extra.lines());
    out.join("\n")
}
