//! What /proc says of a process: open files, children, memory.

use std::path::Path;

/// Processes with a file open under `dir`: "pid state cmdline -> file" (for failure reports).
pub fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(fds) = std::fs::read_dir(p.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target.starts_with(dir) {
                let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
                let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
                let state = status
                    .lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or("");
                let ppid = status
                    .lines()
                    .find(|l| l.starts_with("PPid:"))
                    .unwrap_or("");
                out.push(format!(
                    "{} {state} {ppid} {} -> {}",
                    e.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmd).replace('\0', " "),
                    target.display()
                ));
            }
        }
    }
    out
}

/// Processes named `comm` whose parent is `ppid`.
pub fn children_named(ppid: u32, comm: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid …
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
            let parent = rest.split_whitespace().nth(1).unwrap_or("");
            name == comm && parent == ppid.to_string()
        })
        .count()
}

/// Resident set size of process `pid` in KiB (VmRSS), or 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident set size of process `pid` in KiB (VmHWM), or 0 when it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
