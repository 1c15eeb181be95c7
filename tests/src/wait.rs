//! Waits on a condition with a deadline: inotify on a directory, a pidfd; never a bare sleep.

use std::path::Path;
use std::time::{Duration, Instant};

/// Wait until an entry whose name satisfies `pred` appears in `dir` (already there counts), by
/// watching the directory with inotify; false after `timeout`.
pub fn wait_for_entry(dir: &Path, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    let mut ino = inotify::Inotify::init().expect("inotify");
    ino.watches()
        .add(
            dir,
            inotify::WatchMask::CREATE | inotify::WatchMask::MOVED_TO,
        )
        .expect("watch");
    let present = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| pred(&e.file_name().to_string_lossy()))
    };
    if present(dir) {
        return true;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            ino.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        if let Ok(evs) = ino.read_events(&mut buf) {
            for ev in evs {
                if ev.name.is_some_and(|n| pred(&n.to_string_lossy())) {
                    return true;
                }
            }
        }
    }
}

/// Wait until `cond` holds, checking it again whenever something in `dir` changes (an entry
/// created, written, moved in or removed: inotify); false after `timeout`. For conditions on
/// files a process writes (its log, a hook's output).
pub fn wait_for_change_in(dir: &Path, timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    try_wait_for_change_in(dir, timeout, cond).expect("inotify watch on the directory")
}

/// Like [`wait_for_change_in`], `None` when `dir` cannot be watched (gone, say).
pub fn try_wait_for_change_in(
    dir: &Path,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<bool> {
    use std::os::fd::AsFd;
    let mut ino = inotify::Inotify::init().ok()?;
    use inotify::WatchMask as M;
    ino.watches()
        .add(
            dir,
            M::CREATE | M::MODIFY | M::CLOSE_WRITE | M::MOVED_TO | M::DELETE | M::ATTRIB,
        )
        .ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        // Checked after the watch exists: no change can slip between the check and the wait.
        if cond() {
            return Some(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(false);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            ino.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        let _ = ino.read_events(&mut buf);
    }
}

/// Wait until process `pid` (not necessarily our child) has exited, on a pidfd; false after
/// `timeout`. True too if it was gone already.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0)
}
