//! One generation of the replication pipeline (watcher → coalescer → target workers) for one
//! configuration. A reload stops the running generation and starts a new one on the same
//! journal; the control socket outlives generations.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncd_proto::{ErrorKind, Response, RootState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::catchup::{Early, FullSyncWhy};
use crate::coalesce::{Coalescer, RootSink, RootStart};
use crate::config::{Config, RootConfig, TargetConfig};
use crate::dispatch::inbox::{Command, Inbox};
use crate::dispatch::{TargetHandle, Worker, WorkerView};
use crate::fs::{dir_is_empty, RootIdentity};
use crate::journal::Journal;
use crate::observe::hooks::{Hook, HookQueue, Hooks};
use crate::observe::{log::Events, metrics::Metrics, Reporter};
use crate::rsync::Runner;
use crate::watch::{WatchCmd, WatchCounts, WatchProgress, Watcher};

/// A root as the control socket sees it.
pub struct RootView {
    pub name: String,
    pub source: PathBuf,
    pub state: Arc<watch::Sender<RootState>>,
}

/// Which directory a root must be before anything is pushed for it: `(identity, lost reason,
/// adopted)`.
///
/// The journal remembers the directory last replicated. A root that is now a different *and
/// empty* directory is what an unmounted filesystem looks like at boot: it is not adopted (a full
/// sync would delete the whole target); the root waits, unwatched, for the remembered directory.
/// A different directory with content (restored from a backup, a new disk) is adopted and owed
/// a full sync.
fn root_identity(
    journal: &Journal,
    root: &RootConfig,
    now: RootIdentity,
) -> Result<(RootIdentity, Option<String>, bool), EngineError> {
    let stored = journal
        .root_identity(&root.name)?
        .map(|(dev, ino)| RootIdentity { dev, ino });
    match stored {
        Some(s) if s == now => Ok((now, None, false)),
        Some(s) if dir_is_empty(&root.source) => Ok((
            s,
            Some(
                "the source root is empty and is not the directory syncd last replicated (an unmounted filesystem?)"
                    .to_string(),
            ),
            false,
        )),
        stored => {
            journal.set_root_identity(&root.name, (now.dev, now.ino))?;
            if stored.is_some() {
                tracing::warn!(root = %root.name, source = %root.source.display(), "the source root is a different directory than last time; adopting it with a full sync");
            }
            Ok((now, None, stored.is_some()))
        }
    }
}

/// What the control socket needs of a running generation.
pub struct EngineView {
    pub roots: Vec<RootView>,
    pub targets: Vec<TargetHandle>,
    pub watches: Arc<WatchCounts>,
    pub watch_cmd: mpsc::Sender<WatchCmd>,
    pub waiting: watch::Receiver<usize>,
    pub tick: Arc<watch::Sender<u64>>,
    pub journal_error: watch::Receiver<Option<String>>,
}

impl EngineView {
    /// Targets named by `--target`: `None` is all; `name` matches a target name in any root, or
    /// a full `root/target` id.
    pub fn select(&self, target: Option<&str>) -> Result<Vec<&TargetHandle>, Response> {
        let ts: Vec<&TargetHandle> = match target {
            None => self.targets.iter().collect(),
            Some(n) => self
                .targets
                .iter()
                .filter(|t| t.name == n || t.id == n)
                .collect(),
        };
        // All of no targets is no targets; a name that matches nothing is an error.
        if ts.is_empty() && target.is_some() {
            let known: Vec<&str> = self.targets.iter().map(|t| t.id.as_str()).collect();
            return Err(Response::Error {
                kind: ErrorKind::UnknownTarget,
                message: format!(
                    "no target named {:?}; known targets: {}",
                    target.unwrap_or(""),
                    known.join(", ")
                ),
            });
        }
        Ok(ts)
    }
}

/// A running generation.
pub struct Engine {
    pub view: Arc<EngineView>,
    /// Stops the watcher; the coalescer follows when the watcher's channel closes.
    stop_watch: CancellationToken,
    watch_tasks: JoinSet<()>,
    /// Stops the versions prune tasks; the target workers are told [`Command::Stop`] (both
    /// after the coalescer journaled everything).
    stop_push: CancellationToken,
    push_tasks: JoinSet<()>,
    stop_hooks: CancellationToken,
    hook_tasks: JoinSet<()>,
    /// Full syncs finished (see [`Engine::stop`]).
    full_done: Arc<AtomicU64>,
}

/// Failures that keep a generation from starting.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("source {path}: {error}")]
    Root {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot start inotify: {0}")]
    Inotify(std::io::Error),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// What a generation does first about the changes nobody watched (syncd down, or between two
/// generations).
#[derive(Clone, Copy)]
pub enum Start<'a> {
    /// Each root catches up from its index (`catchup`): a full sync only where the index or
    /// the journal cannot vouch. Not `clean`: the process before was killed or crashed, and no
    /// index vouches for its roots.
    CatchUp { clean: bool },
    /// No catch-up: a full sync owed to the targets (by id) this says, and to the targets of a
    /// root whose source was replaced.
    Resync(&'a dyn Fn(&str) -> bool),
}

/// What starting the targets of a generation shares.
struct Wiring<'a> {
    cfg: &'a Config,
    journal: &'a Journal,
    tick: Arc<watch::Sender<u64>>,
    metrics: &'a Arc<Metrics>,
    events: &'a Events,
    stop_push: CancellationToken,
    push_tasks: JoinSet<()>,
    stop_hooks: CancellationToken,
    hook_tasks: JoinSet<()>,
    full_done: Arc<AtomicU64>,
    /// Cancelled to stop the watcher; the workers see it too.
    stop_watch: CancellationToken,
}

/// Where each root stands at start: the identity it must have, why it is lost if it is, and
/// whether a different directory was adopted (owed a full sync).
struct RootsAtStart {
    identities: Vec<RootIdentity>,
    lost: Vec<Option<String>>,
    adopted: Vec<bool>,
}

/// What the coalescer does first about root `ri`'s changes nobody watched.
fn root_start(start: Start, at: &RootsAtStart, ri: usize) -> RootStart {
    match start {
        // Away: it catches up when it is back.
        Start::CatchUp { .. } if at.lost[ri].is_some() => RootStart::Nothing,
        Start::CatchUp { clean } => RootStart::CatchUp {
            whole: match (at.adopted[ri], clean) {
                (true, _) => Some(FullSyncWhy::RootReplaced),
                (false, false) => Some(FullSyncWhy::UncleanStop),
                (false, true) => None,
            },
        },
        Start::Resync(_) => RootStart::Nothing,
    }
}

/// Begin the catch-up walk of every root whose start walks its index, beside the watcher's
/// first walk (each directory read once `progress` says it is watched): on a large tree the
/// two walks take about as long, and there are two cores.
fn early_catch_ups(
    cfg: &Config,
    journal: &Journal,
    start: Start,
    at: &RootsAtStart,
    progress: &[Arc<WatchProgress>],
) -> Vec<Option<Early>> {
    (0..cfg.roots.len())
        .map(|ri| match root_start(start, at, ri) {
            RootStart::CatchUp { whole: None } => Some(Early::start(
                journal.clone(),
                Arc::new(cfg.roots[ri].clone()),
                progress[ri].clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Also forgets the finished full syncs of targets no longer configured (see
/// [`Journal::forget_synced_except`]).
fn roots_at_start(cfg: &Config, journal: &Journal) -> Result<RootsAtStart, EngineError> {
    let ids: Vec<String> = cfg
        .roots
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .map(move |t| format!("{}/{}", r.name, t.name))
        })
        .collect();
    journal.forget_synced_except(&ids)?;
    let mut at = RootsAtStart {
        identities: Vec::new(),
        lost: Vec::new(),
        adopted: Vec::new(),
    };
    for r in &cfg.roots {
        let now = RootIdentity::of(&r.source).map_err(|error| EngineError::Root {
            path: r.source.clone(),
            error,
        })?;
        let (expected, lost, adopt) = root_identity(journal, r, now)?;
        at.identities.push(expected);
        at.lost.push(lost);
        at.adopted.push(adopt);
    }
    Ok(at)
}

impl<'a> Wiring<'a> {
    fn new(
        cfg: &'a Config,
        journal: &'a Journal,
        tick: Arc<watch::Sender<u64>>,
        metrics: &'a Arc<Metrics>,
        events: &'a Events,
    ) -> Wiring<'a> {
        Wiring {
            cfg,
            journal,
            tick,
            metrics,
            events,
            stop_push: CancellationToken::new(),
            push_tasks: JoinSet::new(),
            stop_hooks: CancellationToken::new(),
            hook_tasks: JoinSet::new(),
            full_done: Arc::default(),
            stop_watch: CancellationToken::new(),
        }
    }

    /// Start the worker (and hooks) of target `t` of root `ri`; `resync`: owe it a full rsync.
    fn target(
        &mut self,
        ri: usize,
        root: &Arc<RootConfig>,
        t: &TargetConfig,
        identity: RootIdentity,
        resync: bool,
    ) -> Result<TargetHandle, EngineError> {
        let r = root.as_ref();
        let id = format!("{}/{}", r.name, t.name);
        if resync {
            self.journal.request_resync(&id, b"")?;
        }
        let (inbox, inbox_rx) = Inbox::channel();
        let (view_tx, view_rx) = watch::channel(WorkerView::default());
        let runner = Runner {
            root: root.clone(),
            target: Arc::new(t.clone()),
        };
        let worker = Worker {
            id: id.clone(),
            runner: runner.clone(),
            reporter: Reporter {
                id: id.clone(),
                hooks: self.hooks(r, t),
                metrics: self.metrics.target(&r.name, &t.name),
                events: self.events.clone(),
                full_done: self.full_done.clone(),
            },
            journal: self.journal.clone(),
            identity,
            view: view_tx,
            tick: self.tick.clone(),
            grace: self.cfg.grace_period,
            watch_stopped: self.stop_watch.clone(),
        };
        self.push_tasks.spawn(worker.run(inbox_rx));
        if let (Some(_), Some(keep)) = (&t.versions, t.keep_versions) {
            let prune = crate::dispatch::prune::prune_versions(
                runner.clone(),
                id.clone(),
                keep,
                self.stop_push.clone(),
            );
            self.push_tasks.spawn(prune);
        }
        Ok(TargetHandle {
            id,
            root: ri,
            name: t.name.clone(),
            dest: t.dest.to_string(),
            inbox,
            view: view_rx,
            runner,
            verifying: Arc::default(),
        })
    }

    fn hooks(&mut self, r: &RootConfig, t: &TargetConfig) -> Hooks {
        let stop = &self.stop_hooks;
        let tasks = &mut self.hook_tasks;
        let mut hook = |h: &Option<Hook>, kind| {
            h.clone()
                .map(|h| HookQueue::start(h, kind, &r.name, &t.name, tasks, stop.clone()))
        };
        Hooks {
            on_batch: hook(&t.on_batch, "batch"),
            on_failure: hook(&t.on_failure, "failure"),
        }
    }

    /// Start every target of root `ri`: its view, and what the coalescer needs of it.
    fn root(
        &mut self,
        ri: usize,
        at: &RootsAtStart,
        start: Start,
        targets: &mut Vec<TargetHandle>,
    ) -> Result<(RootView, RootSink), EngineError> {
        let r = &self.cfg.roots[ri];
        let root = Arc::new(r.clone());
        let state = Arc::new(watch::Sender::new(RootState::Watching));
        let adopted = at.adopted[ri];
        let mut sink = RootSink {
            config: root.clone(),
            start: root_start(start, at, ri),
            target_ids: Vec::new(),
            inboxes: Vec::new(),
            state: state.clone(),
            early: Default::default(),
        };
        for t in &r.targets {
            let owed = match start {
                Start::CatchUp { .. } => false,
                Start::Resync(f) => f(&format!("{}/{}", r.name, t.name)) || adopted,
            };
            let handle = self.target(ri, &root, t, at.identities[ri], owed)?;
            sink.target_ids.push(handle.id.clone());
            sink.inboxes.push(handle.inbox.clone());
            targets.push(handle);
        }
        let view = RootView {
            name: r.name.clone(),
            source: r.source.clone(),
            state,
        };
        Ok((view, sink))
    }
}

impl Engine {
    /// Watch every root, then start the coalescer and one worker per target; `start` says what
    /// is done first about the changes nobody watched.
    pub async fn start(
        cfg: &Config,
        journal: &Journal,
        start: Start<'_>,
        tick: Arc<watch::Sender<u64>>,
        metrics: &Arc<Metrics>,
        events: &Events,
    ) -> Result<Engine, EngineError> {
        let at = roots_at_start(cfg, journal)?;
        // Batches of changes; when full, the watcher waits and the kernel queue absorbs the rest
        // (and overflows into a resync rather than into memory).
        let (change_tx, change_rx) = mpsc::channel(64);
        let progress: Vec<Arc<WatchProgress>> = cfg.roots.iter().map(|_| Arc::default()).collect();
        let early = early_catch_ups(cfg, journal, start, &at, &progress);
        let watching = Watcher::start(
            cfg.roots.clone(),
            at.identities.clone(),
            at.lost.clone(),
            change_tx,
            &progress,
        )
        .await;
        // Whatever the walks' end: no catch-up waits for a watch that will never come.
        progress.iter().for_each(|p| p.finish());
        let (watcher, watches) = watching.map_err(EngineError::Inotify)?;
        let mut w = Wiring::new(cfg, journal, tick.clone(), metrics, events);
        let (mut targets, mut sinks, mut roots) = (Vec::new(), Vec::new(), Vec::new());
        for (ri, early) in early.into_iter().enumerate() {
            let (view, sink) = w.root(ri, &at, start, &mut targets)?;
            *sink.early.lock().unwrap_or_else(|e| e.into_inner()) = early;
            roots.push(view);
            sinks.push(sink);
        }
        journal.flush().await?;
        // Not idle before the catch-ups are journaled.
        let catching_up = sinks.iter().filter(|s| s.start != RootStart::Nothing);
        let waiting = Arc::new(watch::Sender::new(catching_up.count()));
        let journal_error = Arc::new(watch::Sender::new(None));
        let coalescer = Coalescer {
            journal: journal.clone(),
            roots: sinks,
            waiting: waiting.clone(),
            tick: tick.clone(),
            journal_error: journal_error.clone(),
            events: events.clone(),
            links: Arc::default(),
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let stop_watch = w.stop_watch.clone();
        let mut watch_tasks = JoinSet::new();
        watch_tasks.spawn(coalescer.run(change_rx));
        watch_tasks.spawn(watcher.run(cmd_rx, stop_watch.clone()));
        let view = Arc::new(EngineView {
            roots,
            targets,
            watches,
            watch_cmd: cmd_tx,
            waiting: waiting.subscribe(),
            tick,
            journal_error: journal_error.subscribe(),
        });
        info!(
            roots = cfg.roots.len(),
            targets = view.targets.len(),
            "replication started"
        );
        Ok(Engine {
            view,
            stop_watch,
            watch_tasks,
            stop_push: w.stop_push,
            push_tasks: w.push_tasks,
            stop_hooks: w.stop_hooks,
            hook_tasks: w.hook_tasks,
            full_done: w.full_done,
        })
    }

    /// Stop watching, journal what is waiting, let running rsyncs finish within the grace period.
    /// Returns whether every path a target got is known to the journal or the index: not when
    /// a full sync finished after the watching stopped (it may have pushed what no event told).
    pub async fn stop(&mut self) -> bool {
        // Order matters: every event read is journaled before the workers stop, so nothing seen
        // is only in memory when the process exits.
        self.stop_watch.cancel();
        while self.watch_tasks.join_next().await.is_some() {}
        let full_done = self.full_done.load(Ordering::Relaxed);
        for t in &self.view.targets {
            t.inbox.send(Command::Stop);
        }
        self.stop_push.cancel();
        while self.push_tasks.join_next().await.is_some() {}
        let clean = self.full_done.load(Ordering::Relaxed) == full_done;
        // Hooks last: what the pushes delivered in their grace period still reaches them,
        // unless a run is in progress (then it is killed, and what it missed is logged).
        self.stop_hooks.cancel();
        while self.hook_tasks.join_next().await.is_some() {}
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn root_at(source: &std::path::Path) -> RootConfig {
        RootConfig {
            name: "data".into(),
            source: source.to_path_buf(),
            excludes: Default::default(),
            delay: Duration::ZERO,
            modify_delay: Duration::ZERO,
            full_resync_interval: Duration::ZERO,
            delete_guard: Default::default(),
            targets: Vec::new(),
        }
    }

    /// `root_identity` for the directory now at `source`: (lost reason, adopted, identity
    /// the journal keeps).
    fn decide(journal: &Journal, source: &std::path::Path) -> (Option<String>, bool, RootIdentity) {
        let now = RootIdentity::of(source).unwrap();
        let (id, lost, adopted) = root_identity(journal, &root_at(source), now).unwrap();
        let stored = journal.root_identity("data").unwrap().unwrap();
        assert_eq!(
            (stored.0, stored.1),
            (id.dev, id.ino),
            "what is awaited is what is kept"
        );
        (lost, adopted, id)
    }

    #[test]
    fn the_directory_first_replicated_is_remembered_and_a_different_one_adopted_only_with_content()
    {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let first = RootIdentity::of(&src).unwrap();
        // First sight: remembered, nothing to adopt.
        assert_eq!(decide(&journal, &src), (None, false, first));
        // The same directory again.
        assert_eq!(decide(&journal, &src), (None, false, first));
        // An empty directory in its place (an unmounted filesystem): not adopted, the old one
        // is awaited.
        std::fs::rename(&src, dir.path().join("away")).unwrap();
        std::fs::create_dir(&src).unwrap();
        let (lost, adopted, awaited) = decide(&journal, &src);
        assert!(lost.unwrap().contains("an unmounted filesystem?"));
        assert!(!adopted);
        assert_eq!(awaited, first);
        // A different directory with content (restored from a backup): adopted.
        std::fs::write(src.join("restored"), b"y").unwrap();
        let now = RootIdentity::of(&src).unwrap();
        assert_ne!(now, first);
        assert_eq!(decide(&journal, &src), (None, true, now));
        assert_eq!(decide(&journal, &src), (None, false, now), "adopted once");
    }
}
