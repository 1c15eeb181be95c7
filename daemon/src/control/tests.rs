//! The requests answered against a generation built by hand: two roots, three targets, a real
//! journal in a temp dir, and in place of each worker a double that records what it is told
//! (and shows a pause, as the worker does).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use syncd_proto::{ByteBuf, ErrorKind, Request, Response, RootState, TargetState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{answer, Access, Shared};
use crate::dispatch::inbox::{Command, Inbox, Switches};
use crate::dispatch::{TargetHandle, WorkerView};
use crate::engine::{EngineView, RootView};
use crate::journal::Journal;
use crate::watch::WatchCounts;

type ReloadRx = mpsc::Receiver<oneshot::Sender<Result<String, String>>>;

pub(super) struct Fixture {
    pub shared: Shared,
    engine: watch::Sender<Option<Arc<EngineView>>>,
    reload: ReloadRx,
    pub dir: tempfile::TempDir,
    /// What each target of [`view`] was told, in its order (filled in a runtime only).
    pub told: Vec<Told>,
}

pub(super) type Told = Arc<Mutex<Vec<Command>>>;

/// A target whose worker is a double: it records each command and shows pause and resume in
/// its view, as the worker does. Outside a runtime nothing reads its inbox.
fn target(id: &str, root: usize) -> (TargetHandle, Told) {
    let (_, name) = id.split_once('/').unwrap();
    let (inbox, mut rx) = Inbox::channel();
    let (view_tx, view) = watch::channel(WorkerView::default());
    let told = Told::default();
    if tokio::runtime::Handle::try_current().is_ok() {
        let log = told.clone();
        tokio::spawn(async move {
            let mut sw = Switches::default();
            while let Some(c) = rx.recv().await {
                log.lock().unwrap().push(c);
                sw.apply(c, tokio::time::Instant::now(), std::time::Duration::ZERO);
                view_tx.send_modify(|v| {
                    v.state = match sw.paused {
                        true => TargetState::Paused,
                        false => TargetState::Running,
                    }
                });
            }
        });
    }
    let handle = TargetHandle {
        id: id.into(),
        root,
        name: name.into(),
        dest: format!("/backup/{id}"),
        inbox,
        view,
        runner: runner(),
        verifying: Arc::default(),
    };
    (handle, told)
}

/// A runner of a valid configuration (its source in a temp dir kept for the whole test run).
fn runner() -> crate::rsync::Runner {
    static RUNNER: std::sync::OnceLock<(tempfile::TempDir, crate::rsync::Runner)> =
        std::sync::OnceLock::new();
    RUNNER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("src")).unwrap();
            let runner = crate::rsync::Runner::local_for_tests(dir.path());
            (dir, runner)
        })
        .1
        .clone()
}

fn root(name: &str, source: &str) -> RootView {
    RootView {
        name: name.into(),
        source: PathBuf::from(source),
        state: Arc::new(watch::channel(RootState::Watching).0),
    }
}

/// Two roots in `base`: `srv/data` (with `photos/2026/`, the file `photos/list`, and a
/// symlink `out` to a directory beside the root) and `home` (with `ann/`).
fn view(base: &std::path::Path) -> (EngineView, Vec<Told>) {
    for d in ["srv/data/photos/2026", "home/ann", "beside"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(base.join("srv/data/photos/list"), "x").unwrap();
    std::os::unix::fs::symlink("../../beside", base.join("srv/data/out")).unwrap();
    let at = |p: &str| base.join(p).display().to_string();
    let (targets, told) = [("data/b1", 0), ("data/b2", 0), ("home/b1", 1)]
        .into_iter()
        .map(|(id, root)| target(id, root))
        .unzip();
    let v = EngineView {
        roots: vec![root("data", &at("srv/data")), root("home", &at("home"))],
        targets,
        watches: Arc::new(WatchCounts {
            watches: vec![Default::default(), Default::default()],
        }),
        watch_cmd: mpsc::channel(1).0,
        waiting: watch::channel(0).1,
        tick: Arc::new(watch::channel(0).0),
        journal_error: watch::channel(None).1,
    };
    (v, told)
}

/// A control face with no generation running yet.
pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (engine, rx) = watch::channel(None);
    let (reload_tx, reload) = mpsc::channel(1);
    let shared = Shared {
        journal: Journal::open(dir.path()).unwrap(),
        engine: rx,
        started: std::time::Instant::now(),
        reload: reload_tx,
        shutdown: CancellationToken::new(),
        access: Access::new(None),
        events: Default::default(),
    };
    Fixture {
        shared,
        engine,
        reload,
        dir,
        told: Vec::new(),
    }
}

/// A control face with [`view`] running.
pub(super) fn running() -> (Fixture, Arc<EngineView>) {
    let mut f = fixture();
    let (v, told) = view(f.dir.path());
    let v = Arc::new(v);
    f.told = told;
    f.engine.send_replace(Some(v.clone()));
    (f, v)
}

fn done(r: Response) -> String {
    match r {
        Response::Done { message } => message,
        other => panic!("expected done, got {other:?}"),
    }
}

fn refusal(r: Response) -> (ErrorKind, String) {
    match r {
        Response::Error { kind, message } => (kind, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Whether target `i` shows paused (pause and resume are answered once it does).
pub(super) fn paused(v: &EngineView, i: usize) -> bool {
    v.targets[i].view.borrow().state == TargetState::Paused
}

/// What target `i` was told so far. The doubles run on this (current-thread) runtime: one
/// yield lets each read what was sent to it before.
async fn told(f: &Fixture, i: usize) -> Vec<Command> {
    tokio::task::yield_now().await;
    f.told[i].lock().unwrap().clone()
}

fn path(p: &str) -> Option<ByteBuf> {
    Some(ByteBuf::from(p.as_bytes().to_vec()))
}

/// `p` (absolute as written, `/srv/data/…`) in the fixture's directory.
fn at(f: &Fixture, p: &str) -> Option<ByteBuf> {
    path(&format!("{}{p}", f.dir.path().display()))
}

#[tokio::test]
async fn requests_before_the_first_generation_runs_are_told_to_wait() {
    let f = fixture();
    let (kind, message) = refusal(answer(Request::Status, &f.shared).await);
    assert_eq!(kind, ErrorKind::Internal);
    assert_eq!(message, "syncd is starting");
}

#[tokio::test]
async fn a_target_is_chosen_by_name_in_every_root_or_by_its_full_id() {
    let (f, v) = running();
    let pause = |t: &str| Request::Pause {
        target: Some(t.into()),
    };
    assert_eq!(
        done(answer(pause("b1"), &f.shared).await),
        "paused data/b1, home/b1"
    );
    assert!(paused(&v, 2));
    assert!(!paused(&v, 1));
    assert_eq!(
        done(
            answer(
                Request::Resume {
                    target: Some("home/b1".into())
                },
                &f.shared
            )
            .await
        ),
        "resumed home/b1"
    );
    assert!(paused(&v, 0), "only home/b1 resumed");
    assert!(!paused(&v, 2));
    assert_eq!(told(&f, 2).await, [Command::Pause, Command::Resume]);
    assert_eq!(told(&f, 1).await, []);
    let (kind, message) = refusal(answer(pause("b3"), &f.shared).await);
    assert_eq!(kind, ErrorKind::UnknownTarget);
    assert_eq!(
        message,
        "no target named \"b3\"; known targets: data/b1, data/b2, home/b1"
    );
}

#[tokio::test]
async fn a_resync_is_owed_in_the_journal_to_the_targets_of_the_root_holding_the_path() {
    let (f, _) = running();
    let req = Request::Resync {
        target: None,
        path: at(&f, "/srv/data/photos/2026"),
    };
    assert_eq!(
        done(answer(req, &f.shared).await),
        "full resync queued for 2 target(s)"
    );
    for (t, owed) in [("data/b1", true), ("data/b2", true), ("home/b1", false)] {
        let subs: Vec<Vec<u8>> = f
            .shared
            .journal
            .resyncs(t)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let want: Vec<Vec<u8>> = if owed {
            vec![b"photos/2026".to_vec()]
        } else {
            vec![]
        };
        assert_eq!(subs, want, "{t}");
    }
    assert_eq!(
        told(&f, 0).await,
        [Command::Resync],
        "told: it leaves backoff at once"
    );
    assert_eq!(told(&f, 2).await, []);
}

#[tokio::test]
async fn a_resync_of_a_path_no_root_or_target_holds_is_refused_and_owes_nothing() {
    let (f, _) = running();
    let outside = Request::Resync {
        target: None,
        path: path("/etc"),
    };
    let (kind, message) = refusal(answer(outside, &f.shared).await);
    assert_eq!(kind, ErrorKind::UnknownPath);
    assert_eq!(message, "/etc is not inside any watched root");
    let other_root = Request::Resync {
        target: Some("data/b2".into()),
        path: at(&f, "/home/ann"),
    };
    let (kind, _) = refusal(answer(other_root, &f.shared).await);
    assert_eq!(kind, ErrorKind::UnknownTarget);
    for t in ["data/b1", "data/b2", "home/b1"] {
        assert!(f.shared.journal.resyncs(t).unwrap().is_empty(), "{t}");
    }
}

/// A path is taken as written and must stay beneath the root: `..` is refused (the old
/// answer stripped the root's prefix and kept it, and a full sync ran `rsync -a --delete
/// SRC/../victim/ DEST/../victim/`), and a full sync's or a verify's must be a directory
/// reached through directories only, never a symlink.
#[tokio::test]
async fn paths_that_leave_the_root_name_a_symlink_a_file_or_nothing_are_refused() {
    let (f, _) = running();
    let base = f.dir.path().display().to_string();
    let resync = |p: String| Request::Resync {
        target: None,
        path: path(&p),
    };
    let verify = |p: String| Request::Verify {
        target: None,
        path: path(&p),
        checksum: false,
    };
    let cases = [
        (
            "/srv/data/../beside",
            ErrorKind::BadRequest,
            "`..` is not allowed",
        ),
        (
            "/srv/data/photos/../../../beside",
            ErrorKind::BadRequest,
            "`..` is not allowed",
        ),
        ("/srv/data/out", ErrorKind::BadRequest, "out is a symlink"),
        ("/srv/data/out/x", ErrorKind::BadRequest, "out is a symlink"),
        (
            "/srv/data/photos/list",
            ErrorKind::BadRequest,
            "is not a directory: name the directory holding it",
        ),
        (
            "/srv/data/nothing",
            ErrorKind::UnknownPath,
            "does not exist",
        ),
        (
            "/srv/data/photos/list/x",
            ErrorKind::UnknownPath,
            "photos/list is not a directory",
        ),
    ];
    for (p, kind, says) in cases {
        for req in [resync(format!("{base}{p}")), verify(format!("{base}{p}"))] {
            let (k, message) = refusal(answer(req, &f.shared).await);
            assert_eq!(k, kind, "{p}: {message}");
            assert!(message.contains(says), "{p}: {message}");
        }
    }
    let (k, message) = refusal(answer(resync("srv/data".into()), &f.shared).await);
    assert_eq!(k, ErrorKind::BadRequest);
    assert!(message.contains("not an absolute path"), "{message}");
    for t in ["data/b1", "data/b2", "home/b1"] {
        assert!(
            f.shared.journal.resyncs(t).unwrap().is_empty(),
            "{t}: nothing owed"
        );
    }
    // Written with `.` and doubled slashes: the same directory.
    let ok = resync(format!("{base}/srv/./data//photos/2026/"));
    assert_eq!(
        done(answer(ok, &f.shared).await),
        "full resync queued for 2 target(s)"
    );
    let subs: Vec<Vec<u8>> = f
        .shared
        .journal
        .resyncs("data/b1")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(subs, vec![b"photos/2026".to_vec()]);
    // versions names any path beneath the root, there or not, but never leaves it.
    let versions = |p: &str| Request::Versions {
        target: None,
        path: ByteBuf::from(format!("{base}{p}").into_bytes()),
    };
    let (k, _) = refusal(answer(versions("/srv/data/../beside/f"), &f.shared).await);
    assert_eq!(k, ErrorKind::BadRequest);
}

#[tokio::test]
async fn stop_starts_the_shutdown_and_answers_first() {
    let (f, _) = running();
    assert!(!f.shared.shutdown.is_cancelled());
    assert_eq!(
        done(answer(Request::Shutdown, &f.shared).await),
        "syncd is shutting down"
    );
    assert!(f.shared.shutdown.is_cancelled());
}

#[tokio::test]
async fn reload_answers_what_the_supervisor_says() {
    let (mut f, _) = running();
    let mut asked = std::mem::replace(&mut f.reload, mpsc::channel(1).1);
    let supervisor = tokio::spawn(async move {
        let ok = asked.recv().await.unwrap();
        ok.send(Ok("configuration reloaded".into())).unwrap();
        let bad = asked.recv().await.unwrap();
        bad.send(Err("line 3: unknown key".into())).unwrap();
    });
    assert_eq!(
        done(answer(Request::Reload, &f.shared).await),
        "configuration reloaded"
    );
    assert_eq!(
        refusal(answer(Request::Reload, &f.shared).await),
        (ErrorKind::Config, "line 3: unknown key".to_string())
    );
    supervisor.await.unwrap();
    // No supervisor any more: shutting down.
    assert_eq!(
        refusal(answer(Request::Reload, &f.shared).await),
        (ErrorKind::Internal, "syncd is shutting down".to_string())
    );
}
