//! The worker itself, driven only through its inbox: a real journal, a local target and the real
//! rsync, every wait a condition with a deadline.

use std::sync::Arc;
use std::time::Duration;

use syncd_proto::TargetState;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::inbox::{Command, Inbox};
use super::{Worker, WorkerView};
use crate::journal::Journal;
use crate::observe::{metrics::Metrics, Reporter};

const DEADLINE: Duration = Duration::from_secs(20);

struct Rig {
    dir: tempfile::TempDir,
    id: String,
    journal: Journal,
    inbox: Inbox,
    view: watch::Receiver<WorkerView>,
    tick: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::create_dir(d.join("dst")).unwrap();
        let runner = crate::rsync::Runner::local_for_tests(d);
        let (root, target) = (runner.root.clone(), runner.target.clone());
        let id = format!("{}/{}", root.name, target.name);
        let journal = Journal::open(&d.join("state")).unwrap();
        let (inbox, rx) = Inbox::channel();
        let (view_tx, view) = watch::channel(WorkerView::default());
        let tick = Arc::new(watch::Sender::new(0));
        let worker = Worker {
            id: id.clone(),
            runner,
            reporter: Reporter {
                id: id.clone(),
                hooks: Default::default(),
                metrics: Metrics::new().target(&root.name, "t"),
                events: Default::default(),
                full_done: Arc::default(),
            },
            journal: journal.clone(),
            identity: crate::fs::RootIdentity::of(&d.join("src")).unwrap(),
            view: view_tx,
            tick: tick.clone(),
            grace: Duration::from_secs(5),
            watch_stopped: CancellationToken::new(),
        };
        let task = tokio::spawn(worker.run(rx));
        Rig {
            dir,
            id,
            journal,
            inbox,
            view,
            tick: tick.subscribe(),
            task,
        }
    }

    fn src(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("src").join(name)
    }

    fn dst(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("dst").join(name)
    }

    /// `name` written in the source, journaled, and the worker woken as the coalescer does.
    fn change(&self, name: &str) {
        std::fs::write(self.src(name), name).unwrap();
        self.journal
            .record(std::slice::from_ref(&self.id), &[name.as_bytes().to_vec()])
            .unwrap();
        self.inbox.send(Command::Wake { fresh: 1 });
    }

    async fn until(&mut self, what: &str, f: impl Fn(&WorkerView) -> bool) {
        tokio::time::timeout(DEADLINE, self.view.wait_for(|v| f(v)))
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
            .unwrap();
    }

    async fn arrives(&mut self, name: &str) {
        let want = name.as_bytes().to_vec();
        let dst = self.dst(name);
        tokio::time::timeout(DEADLINE, async {
            while std::fs::read(&dst).ok() != Some(want.clone()) || self.pending() > 0 {
                let _ = self.tick.changed().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} did not arrive within {DEADLINE:?}"));
    }

    fn pending(&self) -> u64 {
        self.journal.pending_stats(&self.id).unwrap().0
    }

    /// The worker has taken everything sent so far: a step after it published.
    async fn stepped(&mut self) {
        self.tick.borrow_and_update();
        self.inbox.send(Command::Wake { fresh: 0 });
        tokio::time::timeout(DEADLINE, self.tick.changed())
            .await
            .expect("the worker steps when told")
            .unwrap();
    }
}

#[tokio::test]
async fn paused_it_starts_nothing_and_resumed_it_delivers_what_waited() {
    let mut rig = Rig::start();
    rig.change("a");
    rig.arrives("a").await;
    rig.inbox.send(Command::Pause);
    rig.until("paused", |v| v.state == TargetState::Paused)
        .await;
    rig.change("b");
    rig.stepped().await;
    let v = rig.view.borrow().clone();
    assert_eq!((v.state, v.in_flight), (TargetState::Paused, 0));
    assert_eq!(rig.pending(), 1, "b waits in the journal");
    assert!(!rig.dst("b").exists());
    rig.inbox.send(Command::Resume);
    rig.arrives("b").await;
    assert_eq!(rig.view.borrow().state, TargetState::Running);
}

#[tokio::test]
async fn a_resync_told_runs_the_owed_full_sync_and_a_stop_ends_the_worker() {
    let mut rig = Rig::start();
    // Nothing journaled it: only a full sync finds it.
    std::fs::write(rig.src("unseen"), "unseen").unwrap();
    rig.journal.request_resync(&rig.id, b"").unwrap();
    rig.inbox.send(Command::Resync);
    rig.arrives("unseen").await;
    rig.until("the full sync ended", |v| v.full_sync.is_none())
        .await;
    rig.inbox.send(Command::Stop);
    tokio::time::timeout(DEADLINE, &mut rig.task)
        .await
        .expect("a stop ends an idle worker")
        .unwrap();
}

#[tokio::test]
async fn with_every_inbox_gone_the_worker_ends() {
    let rig = Rig::start();
    let Rig { inbox, task, .. } = rig;
    drop(inbox);
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("nobody can tell it anything: it stops")
        .unwrap();
}
