//! The process around the pipeline: [`run`] opens the journal, binds the control socket,
//! starts a generation of the [`crate::engine`] and supervises it until shutdown: SIGHUP and
//! `syncctl reload` re-read the configuration and restart the generation (`reload`); signals
//! and the systemd watchdog (`signals`); `daemonize` forks into the background before any of
//! it.

pub mod daemonize;
pub mod reload;
pub mod signals;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch as wch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{self, http, Shared};
use crate::engine::{Engine, EngineView, Start};
use crate::journal::Journal;
use crate::observe::{log::Events, metrics::Metrics};

/// Run the daemon until `shutdown` is cancelled (or a `stop` request arrives). `ready` is called
/// once every root is watched and the control socket accepts connections. With `reopen_log`
/// (the daemon logs to that file), SIGHUP reopens it before reloading.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: Box<dyn FnOnce() + Send>,
    reopen_log: Option<PathBuf>,
) -> anyhow::Result<()> {
    let journal =
        Journal::open(&config.state_dir.join("journal")).context("opening the journal")?;
    // Taken before anything runs, and durably: a crash of this process is told next time.
    let clean = journal.take_clean_stop().context("reading the journal")?;
    journal.flush().await.context("writing the journal")?;
    let listener = control::bind(&config.socket, config.socket_group.as_deref())?;
    let socket_path = config.socket.clone();
    let flusher_stop = CancellationToken::new();
    let flusher = tokio::spawn(
        journal
            .clone()
            .flush_behind(Duration::from_millis(500), flusher_stop.clone()),
    );
    let result = serve(
        config,
        journal.clone(),
        listener,
        Run {
            shutdown,
            ready,
            reopen_log,
            clean,
        },
    )
    .await;
    flusher_stop.cancel();
    let _ = flusher.await;
    let stopped = match &result {
        Ok(true) => journal
            .index_settle()
            .and_then(|_| journal.mark_clean_stop()),
        Ok(false) => {
            warn!("a full sync finished after watching stopped: the next start trusts no index");
            Ok(())
        }
        Err(_) => Ok(()),
    };
    if let Err(e) = stopped {
        error!(error = %e, "cannot record the orderly stop in the journal");
    }
    if let Err(e) = journal.flush().await {
        error!(error = %e, "final journal flush failed");
    }
    let _ = std::fs::remove_file(&socket_path);
    result.map(|_| ())
}

/// A request to reload, answered once it is done.
type ReloadReply = oneshot::Sender<Result<String, String>>;

/// The running generation and what outlives it.
struct Supervisor {
    config: Config,
    journal: Journal,
    engine: Engine,
    /// What the control socket sees of the running generation (`None` between two).
    published: wch::Sender<Option<Arc<EngineView>>>,
    tick: Arc<wch::Sender<u64>>,
    metrics: Arc<Metrics>,
    events: Events,
}

/// What [`run`] hands to the serving loop.
struct Run {
    shutdown: CancellationToken,
    ready: Box<dyn FnOnce() + Send>,
    reopen_log: Option<PathBuf>,
    /// The last process stopped in order (else the first generation trusts no index).
    clean: bool,
}

async fn serve(
    config: Config,
    journal: Journal,
    listener: tokio::net::UnixListener,
    run: Run,
) -> anyhow::Result<bool> {
    let (shutdown, clean) = (run.shutdown, run.clean);
    // Installed first: from here on SIGHUP never takes the default action (exit).
    let mut hup = signals::hangup().context("installing the SIGHUP handler")?;
    let (published, engine_rx) = wch::channel(None);
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let events = Events::default();
    let shared = Arc::new(Shared {
        journal: journal.clone(),
        engine: engine_rx,
        started: std::time::Instant::now(),
        reload: reload_tx,
        shutdown: shutdown.clone(),
        access: control::Access::new(config.socket_group.as_deref()),
        events: events.clone(),
    });
    let metrics = Metrics::new();
    let http_listener = bind_http(&config).await?;
    let tick = Arc::new(wch::Sender::new(0u64));
    let engine = Engine::start(
        &config,
        &journal,
        start(&config, &|_| false, clean),
        tick.clone(),
        &metrics,
        &events,
    )
    .await?;
    let mut sup = Supervisor {
        config,
        journal,
        engine,
        published,
        tick,
        metrics,
        events,
    };
    sup.publish();
    let servers = Servers::start(listener, http_listener, &shared, &sup);
    (run.ready)();
    info!(socket = %sup.config.socket.display(), "syncd ready");
    if sup.config.roots.is_empty() {
        warn!(config = ?sup.config.source_file, "no [[sync]] configured: nothing is replicated; add a [[sync]] with a [[sync.target]] and reload (systemctl reload syncd)");
    }
    loop {
        let reply: Option<ReloadReply> = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hup.recv() => {
                if let Some(f) = &run.reopen_log {
                    signals::reopen_log(f);
                }
                None
            }
            r = reload_rx.recv() => match r { Some(r) => Some(r), None => break },
        };
        let outcome = sup.reload().await?;
        sup.publish();
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    }
    info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    sup.published.send_replace(None);
    let clean = sup.engine.stop().await;
    servers.stop().await;
    Ok(clean)
}

/// Bound before anything starts: a port in use is a clear error at start, not a silent gap.
async fn bind_http(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(h) = &config.http else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(h.listen)
        .await
        .with_context(|| format!("[http] listen = \"{}\": cannot listen there", h.listen))?;
    Ok(Some(l))
}

/// The control socket's and the HTTP interface's tasks: they outlive generations.
struct Servers {
    stop: CancellationToken,
    socket: JoinHandle<()>,
    http: Option<JoinHandle<()>>,
}

impl Servers {
    fn start(
        listener: tokio::net::UnixListener,
        http_listener: Option<tokio::net::TcpListener>,
        shared: &Arc<Shared>,
        sup: &Supervisor,
    ) -> Servers {
        let stop = CancellationToken::new();
        let socket = tokio::spawn(control::serve(listener, shared.clone(), stop.clone()));
        let http = http_listener.map(|l| {
            let cfg = sup.config.http.as_ref();
            info!(listen = %cfg.map(|h| h.listen.to_string()).unwrap_or_default(), "HTTP status and metrics served");
            let state = Arc::new(http::HttpState {
                shared: shared.clone(),
                metrics: sup.metrics.clone(),
                token: cfg.and_then(|h| h.token.clone()),
                guard_reads: cfg.is_some_and(|h| h.token.is_some() && h.exposed()),
            });
            tokio::spawn(http::serve(l, state, stop.clone()))
        });
        Servers { stop, socket, http }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.socket.await;
        if let Some(h) = self.http {
            let _ = h.await;
        }
    }
}

impl Supervisor {
    fn publish(&self) {
        self.published.send_replace(Some(self.engine.view.clone()));
    }

    /// Reload the configuration: what the reload's requester is told. Fails only when neither
    /// the new nor the old configuration can run again (the daemon then stops with that error).
    async fn reload(&mut self) -> anyhow::Result<Result<String, String>> {
        let new = match reload::reload_config(&self.config) {
            Err(e) => {
                warn!(error = %e, "reload refused; the running configuration stays");
                return Ok(Err(format!(
                    "reload refused, the running configuration stays: {e}"
                )));
            }
            Ok(new) if reload::nothing_to_restart(&new, &self.config, &self.engine.view) => {
                info!("configuration unchanged; nothing restarted");
                return Ok(Ok("configuration unchanged; nothing restarted".to_string()));
            }
            Ok(new) => new,
        };
        let old_ids = reload::carried_over(&self.engine.view);
        self.published.send_replace(None);
        let clean = self.engine.stop().await;
        let new_targets = |id: &str| !old_ids.contains(id);
        match self.start(&new, start(&new, &new_targets, clean)).await {
            Ok(e) => {
                self.engine = e;
                self.config = new;
                info!("configuration reloaded");
                Ok(Ok("configuration reloaded".to_string()))
            }
            Err(e) => {
                warn!(error = %e, "new configuration failed to start; restarting the old one");
                let config = self.config.clone();
                self.engine = self
                    .start(&config, start(&config, &|_| false, clean))
                    .await?;
                Ok(Err(format!(
                    "new configuration failed to start, the old one runs again: {e}"
                )))
            }
        }
    }

    async fn start(
        &self,
        config: &Config,
        start: Start<'_>,
    ) -> Result<Engine, crate::engine::EngineError> {
        Engine::start(
            config,
            &self.journal,
            start,
            self.tick.clone(),
            &self.metrics,
            &self.events,
        )
        .await
    }
}

/// How a generation begins: a catch-up (what changed while syncd was down or between two
/// generations; a full sync to a target new to the journal) unless `startup_resync` is off, then
/// a full sync to the targets `resync` names (after a reload: the new ones).
/// `clean`: the generation before left nothing unknown to the index (see [`Engine::stop`]).
fn start<'a>(config: &Config, resync: &'a dyn Fn(&str) -> bool, clean: bool) -> Start<'a> {
    match config.startup_resync {
        true => Start::CatchUp { clean },
        false => Start::Resync(resync),
    }
}
