//! Recursive inotify watching of every root, turned into [`Change`]s for the coalescer.
//!
//! One inotify instance for all roots. Invariants:
//! - every directory of a root (except excluded ones) carries a watch; a directory that appears
//!   is watched **first** and scanned **afterwards**, so an entry created between the two is seen
//!   at least once (duplicates are harmless);
//! - `moved_from` is a delete of the old path, `moved_to` an upsert of the new one; a directory
//!   renamed inside the root keeps its watches, whose cached paths are rewritten; a directory
//!   moved out loses its watches;
//! - an overflowed queue or a watch that could not be added never leaves a root silently
//!   half-watched: the root is owed a full resync (persisted by the coalescer);
//! - the root itself deleted or moved is reported and never turned into deletes at a target.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::RootConfig;
use crate::fs::{abs_path, is_prefix_dir, join_rel, RootIdentity};

mod change;
mod progress;
mod root_check;

pub use change::{classify, Action, Change, Urgency, WatchCmd};
pub use progress::WatchProgress;

/// How often each root's device and inode are compared with the ones syncd started on: catches
/// a mount on top of a root (no inotify event) and notices when a lost root is back.
const ROOT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Published per root, shown by `status`.
#[derive(Debug, Default)]
pub struct WatchCounts {
    pub watches: Vec<std::sync::atomic::AtomicU64>,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

struct Watched {
    root: usize,
    rel: Vec<u8>,
    wd: WatchDescriptor,
}

struct OwnedEvent {
    wd: WatchDescriptor,
    mask: EventMask,
    cookie: u32,
    name: Option<Vec<u8>>,
}

/// The watcher task's state.
pub struct Watcher {
    fd: AsyncFd<Inotify>,
    roots: Vec<RootConfig>,
    by_wd: HashMap<i32, Watched>,
    root_wd: Vec<Option<i32>>,
    degraded: Vec<bool>,
    /// Identity of each root when the generation started.
    identity: Vec<RootIdentity>,
    /// Roots that are not the directory they were: unwatched until they are back (shared with
    /// the [`root_check::RootCheck`] thread).
    lost: Arc<Vec<AtomicBool>>,
    counts: Arc<WatchCounts>,
    tx: mpsc::Sender<Vec<Change>>,
    /// Changes not yet handed over: sent as one message per inotify read (fewer wake-ups).
    out: Vec<Change>,
    /// Watches added (or added again) during the read being handled: a directory moved away
    /// and one moved or made in under the same name in the same read (`mv d out; mv out d`, the
    /// same inode, so the same watch) must keep the new watches when the one moved away is
    /// dropped at the end of the read.
    tracked_in_read: std::collections::HashSet<i32>,
}

impl Watcher {
    /// Create the inotify instance and watch every directory of every root, publishing how far
    /// each root's walk has come in `progress` (one per root). Must run inside the runtime.
    /// Roots that cannot be fully watched are reported as degraded, not as an error.
    pub async fn start(
        roots: Vec<RootConfig>,
        identity: Vec<RootIdentity>,
        lost_at_start: Vec<Option<String>>,
        tx: mpsc::Sender<Vec<Change>>,
        progress: &[Arc<WatchProgress>],
    ) -> io::Result<(Watcher, Arc<WatchCounts>)> {
        let inotify = Inotify::init().map_err(|e| {
            if e.raw_os_error() == Some(libc::EMFILE) {
                io::Error::new(
                    e.kind(),
                    format!("{e}: too many inotify instances; raise fs.inotify.max_user_instances"),
                )
            } else {
                e
            }
        })?;
        let counts = Arc::new(WatchCounts {
            watches: roots.iter().map(|_| Default::default()).collect(),
        });
        let n = roots.len();
        let mut w = Watcher {
            // SAFETY: `Inotify` owns its descriptor and keeps it open, unchanged, until dropped.
            fd: unsafe { AsyncFd::register_with_interest(inotify, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            roots,
            by_wd: HashMap::new(),
            root_wd: vec![None; n],
            degraded: vec![false; n],
            identity,
            lost: Arc::new((0..n).map(|_| AtomicBool::new(false)).collect()),
            counts: counts.clone(),
            tx,
            out: Vec::new(),
            tracked_in_read: Default::default(),
        };
        for (r, lost) in lost_at_start.into_iter().enumerate() {
            if let Some(why) = lost {
                w.lost(r, &why).await;
                continue;
            }
            let p = progress.get(r).map(|p| p.as_ref());
            w.watch_tree(r, Vec::new(), false, p).await;
            if let Some(p) = p {
                p.finish();
            }
            info!(root = %w.roots[r].name, source = %w.roots[r].source.display(), watches = w.count(r), "watching");
        }
        w.flush().await;
        Ok((w, counts))
    }

    fn count(&self, root: usize) -> u64 {
        self.counts.watches[root].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add_count(&self, root: usize, delta: i64) {
        let c = &self.counts.watches[root];
        if delta >= 0 {
            c.fetch_add(delta as u64, std::sync::atomic::Ordering::Relaxed);
        } else {
            c.fetch_sub(delta.unsigned_abs(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Remember a watch; counts stay incremental (a big `rm -rf` must not rescan the map per
    /// directory).
    fn track(&mut self, id: i32, w: Watched) {
        self.tracked_in_read.insert(id);
        let root = w.root;
        if let Some(old) = self.by_wd.insert(id, w) {
            self.add_count(old.root, -1);
        }
        self.add_count(root, 1);
    }

    /// Stop watching every directory `which` picks (by id and watch).
    fn unwatch(&mut self, which: impl Fn(i32, &Watched) -> bool) {
        let gone: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(id, w)| which(**id, w))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(w) = self.untrack(id) {
                // Fails harmlessly if the kernel already dropped it.
                let _ = self.fd.get_mut().watches().remove(w.wd);
            }
        }
    }

    fn untrack(&mut self, id: i32) -> Option<Watched> {
        let w = self.by_wd.remove(&id)?;
        self.add_count(w.root, -1);
        Some(w)
    }

    /// Queue a change; it is handed over at the end of the read (or when many piled up, so a
    /// big scan streams).
    async fn send(&mut self, c: Change) {
        self.out.push(c);
        if self.out.len() >= 1024 {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.out);
        // The coalescer only goes away at shutdown, when losing the message is fine: the journal
        // and the startup resync cover it.
        let _ = self.tx.send(batch).await;
    }

    /// The watch limit stops watching root `root`: told once, with the fix (scheduled full
    /// resyncs cover the root meanwhile).
    async fn watch_limit_reached(&mut self, root: usize, base: &Path) {
        if self.degraded[root] {
            return;
        }
        let reason = format!(
            "inotify watch limit reached after {} watches while the root has {} directories: raise fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=N, persist in /etc/sysctl.d); meanwhile the root is kept in sync by scheduled full resyncs",
            self.by_wd.len(),
            count_dirs(base)
        );
        warn!(root = %self.roots[root].name, "{reason}");
        self.degraded[root] = true;
        self.send(Change::Degraded { root, reason }).await;
    }

    /// Watch `rel` and everything below it, watch first then read. With `report`, every entry
    /// found (and `rel` itself) is reported as changed. Depth first, each directory's
    /// subdirectories in byte order: with `progress`, each directory watched is published
    /// there (see [`WatchProgress`]).
    async fn watch_tree(
        &mut self,
        root: usize,
        rel: Vec<u8>,
        report: bool,
        progress: Option<&WatchProgress>,
    ) {
        let base = self.roots[root].source.clone();
        let mut stack = vec![rel];
        let mut dirs_seen = 0u64;
        while let Some(dir) = stack.pop() {
            dirs_seen += 1;
            let path = abs_path(&base, &dir);
            let watched = self.fd.get_mut().watches().add(&path, mask());
            if let Some(p) = progress {
                p.watched(&dir);
            }
            match watched {
                Ok(wd) => {
                    let id = wd.get_watch_descriptor_id();
                    if dir.is_empty() {
                        self.root_wd[root] = Some(id);
                    }
                    let rel = dir.clone();
                    self.track(id, Watched { root, rel, wd });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    return self.watch_limit_reached(root, &base).await;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot watch directory; its changes reach targets only through full resyncs");
                    continue;
                }
            }
            if report && !dir.is_empty() {
                let path = dir.clone();
                let urgency = Urgency::Now;
                self.send(Change::Path {
                    root,
                    path,
                    urgency,
                })
                .await;
            }
            let mut subdirs = self.children(root, &dir, &path, report).await;
            // Popped smallest first.
            subdirs.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(subdirs);
        }
        debug!(root = %self.roots[root].name, dirs_seen, "walked");
    }

    /// The subdirectories of directory `dir` (at `path`) not excluded; with `report`, its other
    /// entries are reported as changed on the way (only directories are watched: a file costs
    /// nothing more to skip, and on a 1,000,000-file tree files are most of what the walk reads).
    async fn children(
        &mut self,
        root: usize,
        dir: &[u8],
        path: &Path,
        report: bool,
    ) -> Vec<Vec<u8>> {
        let mut subdirs = Vec::new();
        let Ok(rd) = std::fs::read_dir(path) else {
            return subdirs;
        };
        for ent in rd.flatten() {
            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir && !report {
                continue;
            }
            let child = join_rel(dir, ent.file_name().as_bytes());
            if self.roots[root].excludes.matches(&child, is_dir) {
                continue;
            }
            if is_dir {
                subdirs.push(child);
            } else {
                let urgency = Urgency::Now;
                self.send(Change::Path {
                    root,
                    path: child,
                    urgency,
                })
                .await;
            }
        }
        subdirs
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Vec<OwnedEvent>> {
        read_owned(self.fd.get_mut(), buf)
    }

    /// Run until `shutdown`; then hand over what the kernel still holds and return, which
    /// closes the channel and lets the coalescer journal everything.
    pub async fn run(mut self, mut cmds: mpsc::Receiver<WatchCmd>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 64 * 1024];
        let check = match root_check::RootCheck::start(
            self.roots.iter().map(|r| r.source.clone()).collect(),
            self.identity.clone(),
            self.lost.clone(),
            ROOT_CHECK,
        ) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot start the thread that checks the roots; stopping the watch");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = check.wanted() => {
                    self.check_roots().await;
                    self.flush().await;
                }
                _ = shutdown.cancelled() => {
                    while let Ok(evs) = self.read_now(&mut buf) {
                        if evs.is_empty() {
                            break;
                        }
                        self.handle(evs).await;
                    }
                    return;
                }
                cmd = cmds.recv() => match cmd {
                    Some(WatchCmd::Barrier(reply)) => {
                        // Everything queued in the kernel before the request is read now.
                        loop {
                            match self.read_now(&mut buf) {
                                Ok(evs) if !evs.is_empty() => self.handle(evs).await,
                                Ok(_) => break,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => { warn!(error = %e, "inotify read failed"); break; }
                            }
                        }
                        self.send(Change::Barrier(reply)).await;
                        self.flush().await;
                    }
                    None => return,
                },
                ready = self.fd.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => { warn!(error = %e, "inotify poll failed"); return; }
                    };
                    let res = guard.try_io(|inner| read_owned(inner.get_mut(), &mut buf));
                    match res {
                        Ok(Ok(evs)) => self.handle(evs).await,
                        Ok(Err(e)) => { warn!(error = %e, "inotify read failed"); }
                        Err(_would_block) => {}
                    }
                }
            }
        }
    }

    async fn handle(&mut self, events: Vec<OwnedEvent>) {
        // Directories moved away in this read: (cookie → root, old rel). Matched by a moved_to in
        // the same read they are renames; unmatched they left the tree.
        let mut moved = MovedAway::default();
        self.tracked_in_read.clear();
        for ev in events {
            let id = ev.wd.get_watch_descriptor_id();
            match classify(ev.mask, ev.name.is_some()) {
                Action::Overflow => self.overflowed().await,
                Action::WatchGone => self.watch_gone(id).await,
                Action::Ignore => {}
                action => {
                    let Some(w) = self.by_wd.get(&id) else {
                        continue;
                    };
                    let (root, dir) = (w.root, w.rel.clone());
                    self.act(action, root, dir, ev, &mut moved).await;
                }
            }
        }
        // Moved away without a partner in this read: gone from the tree.
        for (_, (root, old)) in moved.dirs {
            self.drop_prefix(root, &old);
            self.send(Change::TreeGone { root, path: old }).await;
        }
        self.flush().await;
    }

    /// Events were lost: directories created meanwhile may be unwatched, and every root
    /// catches up. Watched first: the catch-up's walk then misses nothing that changes after it.
    async fn overflowed(&mut self) {
        warn!("inotify queue overflowed: events were lost; every root catches up");
        for r in 0..self.roots.len() {
            if self.is_lost(r) {
                continue;
            }
            self.watch_tree(r, Vec::new(), false, None).await;
            self.send(Change::Resync {
                root: r,
                reason: "inotify queue overflow".into(),
            })
            .await;
        }
    }

    /// The kernel dropped watch `id`; if it was a root's, the root is lost.
    async fn watch_gone(&mut self, id: i32) {
        if let Some(w) = self.untrack(id) {
            if w.rel.is_empty() && self.root_wd[w.root] == Some(id) {
                self.root_wd[w.root] = None;
                self.lost(w.root, "the source root was removed or unmounted")
                    .await;
            }
        }
    }

    /// Carry out what an event on directory `dir` of `root` means.
    async fn act(
        &mut self,
        action: Action,
        root: usize,
        dir: Vec<u8>,
        ev: OwnedEvent,
        moved: &mut MovedAway,
    ) {
        let now = |path| Change::Path {
            root,
            path,
            urgency: Urgency::Now,
        };
        let name = match (action, ev.name) {
            (Action::DirGone, _) => {
                if dir.is_empty() {
                    self.lost(root, "the source root was deleted or moved away")
                        .await;
                }
                return;
            }
            (Action::DirChanged, _) if !dir.is_empty() => return self.send(now(dir)).await,
            (_, None) => return,
            (_, Some(name)) => name,
        };
        let path = join_rel(&dir, &name);
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        if self.roots[root].excludes.matches(&path, is_dir) {
            if let Action::DirAppeared { moved_in: true } = action {
                self.moved_into_an_excluded_name(root, &path, ev.cookie, moved)
                    .await;
            }
            return;
        }
        match action {
            // Told at the end of the read, or as a rename when its partner comes in it.
            Action::DirMovedAway => {
                moved.dirs.insert(ev.cookie, (root, path));
            }
            Action::DirAppeared { moved_in } => {
                if let Some((old_root, old)) =
                    moved_in.then(|| moved.dirs.remove(&ev.cookie)).flatten()
                {
                    self.rename_prefix(old_root, &old, root, &path);
                    let gone = match old_root == root {
                        true => Change::TreeMoved {
                            root,
                            from: old,
                            to: path.clone(),
                        },
                        false => Change::TreeGone {
                            root: old_root,
                            path: old,
                        },
                    };
                    self.send(gone).await;
                }
                // Watch first, then scan; the scan reports every entry and the directory itself.
                self.watch_tree(root, path, true, None).await;
            }
            Action::Changed(urgency) => {
                self.send(Change::Path {
                    root,
                    path: path.clone(),
                    urgency,
                })
                .await;
                self.pair_file_move(root, path, ev.mask, ev.cookie, moved)
                    .await;
            }
            _ => {}
        }
    }

    /// A file moved away is remembered by its cookie; moved in with the same cookie in the same
    /// read and root, it is a rename.
    async fn pair_file_move(
        &mut self,
        root: usize,
        path: Vec<u8>,
        mask: EventMask,
        cookie: u32,
        moved: &mut MovedAway,
    ) {
        if mask.contains(EventMask::MOVED_FROM) {
            moved.files.insert(cookie, (root, path));
        } else if mask.contains(EventMask::MOVED_TO) {
            let from = moved.files.remove(&cookie).filter(|(r, _)| *r == root);
            if let Some((_, from)) = from {
                let to = path;
                self.send(Change::FileMoved { root, from, to }).await;
            }
        }
    }

    /// A directory was renamed inside the watched roots: rewrite the cached path of every watch
    /// at or below it.
    fn rename_prefix(&mut self, old_root: usize, old: &[u8], new_root: usize, new: &[u8]) {
        let mut moved = 0i64;
        for w in self.by_wd.values_mut() {
            if w.root == old_root && is_prefix_dir(old, &w.rel) {
                let mut rel = new.to_vec();
                rel.extend_from_slice(&w.rel[old.len()..]);
                w.rel = rel;
                w.root = new_root;
                moved += 1;
            }
        }
        if old_root != new_root {
            self.add_count(old_root, -moved);
            self.add_count(new_root, moved);
        }
    }

    /// A directory watched here was renamed to an excluded name (`d` → `d.tmp`), both halves in
    /// this read: its watches, and those below it, follow it and are dropped, even one this
    /// read added (a directory made and hidden at once: its watch was kept on the hidden
    /// directory, and its events were taken for `d`'s: fuzz seed 5020). A directory made again
    /// at the old name afterwards has its own event, later in the read, and is watched then.
    async fn moved_into_an_excluded_name(
        &mut self,
        root: usize,
        path: &[u8],
        cookie: u32,
        moved: &mut MovedAway,
    ) {
        let Some((old_root, old)) = moved.dirs.remove(&cookie) else {
            return;
        };
        self.rename_prefix(old_root, &old, root, path);
        self.unwatch(|_, w| w.root == root && is_prefix_dir(path, &w.rel));
        self.send(Change::TreeGone {
            root: old_root,
            path: old,
        })
        .await;
    }

    /// A directory left the tree: stop watching it and everything below (but what this read
    /// watched anew: a directory moved or made in there since).
    fn drop_prefix(&mut self, root: usize, old: &[u8]) {
        let new = std::mem::take(&mut self.tracked_in_read);
        self.unwatch(|id, w| w.root == root && is_prefix_dir(old, &w.rel) && !new.contains(&id));
        self.tracked_in_read = new;
    }

    /// Stop watching a root that is not the directory it was, and report it once.
    async fn lost(&mut self, root: usize, why: &str) {
        if self.is_lost(root) {
            return;
        }
        self.lost[root].store(true, Ordering::Relaxed);
        // A root moved away keeps its watches; its events are no longer this root's.
        self.unwatch(|_, w| w.root == root);
        self.root_wd[root] = None;
        let reason = format!(
            "{why} ({}); nothing is pushed for it until the same directory is back (moved back or remounted), or `syncctl reload` adopts a new directory that is not empty",
            self.roots[root].source.display()
        );
        warn!(root = %self.roots[root].name, "{reason}");
        self.send(Change::Lost { root, reason }).await;
    }

    fn is_lost(&self, root: usize) -> bool {
        self.lost[root].load(Ordering::Relaxed)
    }

    /// Compare every root with its identity: report a root replaced without an inotify event (a
    /// mount on top of it), and watch a lost root again once it is back.
    async fn check_roots(&mut self) {
        for root in 0..self.roots.len() {
            let now = RootIdentity::of(&self.roots[root].source).ok();
            let same = now == Some(self.identity[root]);
            if same && self.is_lost(root) {
                self.lost[root].store(false, Ordering::Relaxed);
                self.degraded[root] = false;
                info!(root = %self.roots[root].name, source = %self.roots[root].source.display(), "source root is back; watching it again and catching up");
                self.send(Change::Back { root }).await;
                self.watch_tree(root, Vec::new(), false, None).await;
                // Watched first: the catch-up's walk then misses nothing.
                self.send(Change::Resync {
                    root,
                    reason: "the source root is back".into(),
                })
                .await;
            } else if !same && !self.is_lost(root) {
                let why = if now.is_some() {
                    "the source root was replaced or has a filesystem mounted on it or unmounted"
                } else {
                    "the source root is gone"
                };
                self.lost(root, why).await;
            }
        }
    }
}

/// What moved away in one read, by cookie: with a `MOVED_TO` of the same cookie in the same
/// read it is a rename; a directory without one left the tree.
#[derive(Default)]
struct MovedAway {
    dirs: HashMap<u32, (usize, Vec<u8>)>,
    files: HashMap<u32, (usize, Vec<u8>)>,
}

/// Read what is queued (non-blocking) into owned events, so watches can change while handling.
fn read_owned(inotify: &mut Inotify, buf: &mut [u8]) -> io::Result<Vec<OwnedEvent>> {
    let events = inotify.read_events(buf)?;
    Ok(events
        .map(|e| OwnedEvent {
            wd: e.wd,
            mask: e.mask,
            cookie: e.cookie,
            name: e.name.map(|n| n.as_bytes().to_vec()),
        })
        .collect())
}

/// Count directories under `root` (for the watch-limit message).
fn count_dirs(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .count() as u64
}
