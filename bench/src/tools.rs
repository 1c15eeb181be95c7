//! The tools under test, each started in its own process group with the rsync shim first on PATH.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use syncd_tests::RSYNC_PASSWORD;

use crate::Stage;

pub enum Tool {
    Syncd,
    /// `inotifywait -mrq -e create,close_write,delete ./ | while read; do rsync -az --delete ./ DEST; done`
    Script,
    /// lsyncd with `default.rsync`, at its default delay or at `delay`.
    Lsyncd {
        delay: Option<u32>,
    },
}

impl Tool {
    pub fn parse(s: &str) -> anyhow::Result<Tool> {
        Ok(match s {
            "syncd" => Tool::Syncd,
            "script" => Tool::Script,
            "lsyncd" => Tool::Lsyncd { delay: None },
            "lsyncd-delay1" => Tool::Lsyncd { delay: Some(1) },
            other => bail!("unknown tool {other:?}: syncd, script, lsyncd, lsyncd-delay1"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Tool::Syncd => "syncd",
            Tool::Script => "script",
            Tool::Lsyncd { delay: None } => "lsyncd",
            Tool::Lsyncd { delay: Some(_) } => "lsyncd delay=1",
        }
    }

    pub fn start(&self, stage: &Stage) -> anyhow::Result<Running> {
        self.start_at(stage, &stage.url())
    }

    /// Start the tool replicating into `url` (the module, or a relay in front of it).
    pub fn start_at(&self, stage: &Stage, url: &str) -> anyhow::Result<Running> {
        let dir = stage.dir.path();
        let log = dir.join(format!("{}.log", self.name().replace([' ', '='], "-")));
        let mut cmd = match self {
            Tool::Syncd => {
                let mut c = Command::new(sibling("syncd")?);
                c.arg("--foreground")
                    .arg("--source")
                    .arg(&stage.src)
                    .arg("--target")
                    .arg(url)
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .arg("--socket")
                    .arg(dir.join("syncd.sock"))
                    .env("RSYNC_PASSWORD", RSYNC_PASSWORD);
                c
            }
            Tool::Script => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg("cd \"$SRC\" && inotifywait -mrq -e create,close_write,delete ./ | while read; do rsync -az --delete ./ \"$DEST\"; done")
                    .env("SRC", &stage.src)
                    .env("DEST", url)
                    .env("RSYNC_PASSWORD", RSYNC_PASSWORD);
                c
            }
            Tool::Lsyncd { delay } => {
                let conf = dir.join("lsyncd.conf.lua");
                let delay = delay.map(|d| format!("delay = {d},\n")).unwrap_or_default();
                std::fs::write(
                    &conf,
                    format!(
                        "settings {{ nodaemon = true, insist = true, logfile = {log:?}, statusFile = {status:?} }}\n\
                         sync {{ default.rsync, source = {src:?}, target = {url:?},\n{delay}\
                         rsync = {{ binary = {bin:?}, password_file = {pf:?} }} }}\n",
                        log = log.display().to_string(),
                        status = dir.join("lsyncd.status").display().to_string(),
                        src = format!("{}/", stage.src.display()),
                        url = url,
                        bin = stage.rsyncs.shim_dir.join("rsync").display().to_string(),
                        pf = stage.daemon.password_file.display().to_string(),
                    ),
                )?;
                let mut c = Command::new("lsyncd");
                c.arg(conf);
                c
            }
        };
        let logf = std::fs::File::create(&log)?;
        cmd.env("PATH", stage.rsyncs.path_env())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.name()))?;
        let pgid = child.id() as i32;
        Ok(Running {
            child,
            pgid,
            log,
            syncctl: matches!(self, Tool::Syncd).then(|| dir.join("syncd.sock")),
            lsyncd: matches!(self, Tool::Lsyncd { .. }),
        })
    }
}

/// A binary next to this one (the release build of the workspace).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not built: cargo build --release --workspace",
            p.display()
        );
    }
    Ok(p)
}

pub struct Running {
    child: Child,
    pub pgid: i32,
    pub log: PathBuf,
    syncctl: Option<PathBuf>,
    lsyncd: bool,
}

impl Running {
    /// Ready: every directory of the source watched, the start-up sync (if any) done, and no
    /// rsync running in the group.
    pub fn wait_ready(&self, stage: &Stage, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let dirs = count_dirs(&stage.src);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tool_says = match (&self.syncctl, self.lsyncd) {
                (Some(sock), _) => {
                    log.contains("syncd ready")
                        && Command::new(sibling("syncctl")?)
                            .arg("--socket")
                            .arg(sock)
                            .args(["wait-idle", "--timeout", "1"])
                            .output()?
                            .status
                            .success()
                }
                (None, true) => log.contains("finished."),
                (None, false) => true,
            };
            if tool_says && inotify_watches(self.pgid) >= dirs && !rsync_running(self.pgid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not ready after {timeout:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether an rsync of this tool is running.
    pub fn rsync_running(&self) -> bool {
        rsync_running(self.pgid)
    }

    /// Highest peak RSS among the group's processes other than rsync (the daemon itself).
    pub fn peak_rss_kib(&self) -> u64 {
        group(self.pgid)
            .into_iter()
            .filter(|(_, comm)| comm != "rsync" && comm != "sh")
            .map(|(pid, _)| syncd_tests::peak_rss_kib(pid as u32))
            .max()
            .unwrap_or(0)
    }

    /// Current RSS summed over the group's processes other than rsync.
    pub fn rss_kib(&self) -> u64 {
        group(self.pgid)
            .into_iter()
            .filter(|(_, comm)| comm != "rsync" && comm != "sh")
            .map(|(pid, _)| syncd_tests::rss_kib(pid as u32))
            .sum()
    }

    /// SIGTERM the group, SIGKILL what is left after 10 s, reap.
    pub fn stop(mut self) {
        use nix::sys::signal::{killpg, Signal};
        let pg = nix::unistd::Pid::from_raw(self.pgid);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !group(self.pgid).is_empty() && Instant::now() < deadline {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// (pid, command name) of every process in group `pgid`.
fn group(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some((head, rest)), Some(open)) = (stat.rsplit_once(')'), stat.find('(')) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // A zombie keeps its group until reaped; it holds nothing.
        if f.first() == Some(&"Z") {
            continue;
        }
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            out.push((pid, head[open + 1..].to_string()));
        }
    }
    out
}

fn rsync_running(pgid: i32) -> bool {
    group(pgid).iter().any(|(_, c)| c == "rsync")
}

/// inotify watches held by the group's processes (from /proc/PID/fdinfo).
fn inotify_watches(pgid: i32) -> usize {
    let mut n = 0;
    for (pid, _) in group(pgid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_inotify = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().contains("inotify"));
            if is_inotify {
                let info = std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .unwrap_or_default();
                n += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count();
            }
        }
    }
    n
}

fn count_dirs(root: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += 1;
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}
