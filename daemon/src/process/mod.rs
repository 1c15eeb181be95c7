//! The process around the pipeline: [`run`] opens the journal, binds the control socket,
//! starts a generation of the [`crate::engine`] and supervises it until shutdown: SIGHUP and
//! `syncctl reload` re-read the configuration and restart the generation; `daemonize` forks
//! into the background before any of it.

pub mod daemonize;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch as wch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;

/// Run the daemon until `shutdown` is cancelled (or a `stop` request arrives). `ready` is called
/// once every root is watched and the control socket accepts connections.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    let journal = crate::journal::Journal::open(&config.state_dir.join("journal"))
        .context("opening the journal")?;
    let listener = crate::control::bind(&config.socket, config.socket_group.as_deref())?;
    let socket_path = config.socket.clone();
    let flusher_stop = CancellationToken::new();
    let flusher = tokio::spawn(
        journal
            .clone()
            .flush_behind(Duration::from_millis(500), flusher_stop.clone()),
    );
    let result = serve(config, journal.clone(), listener, shutdown, ready).await;
    flusher_stop.cancel();
    let _ = flusher.await;
    if let Err(e) = journal.flush().await {
        error!(error = %e, "final journal flush failed");
    }
    let _ = std::fs::remove_file(&socket_path);
    result
}

async fn serve(
    mut config: Config,
    journal: crate::journal::Journal,
    listener: tokio::net::UnixListener,
    shutdown: CancellationToken,
    ready: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    let tick = Arc::new(wch::Sender::new(0u64));
    let (engine_tx, engine_rx) = wch::channel(None);
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let events = crate::observe::log::Events::default();
    let shared = Arc::new(crate::control::Shared {
        journal: journal.clone(),
        engine: engine_rx,
        started: std::time::Instant::now(),
        reload: reload_tx,
        shutdown: shutdown.clone(),
        access: crate::control::Access::new(config.socket_group.as_deref()),
        events: events.clone(),
    });
    let startup_resync = config.startup_resync;
    let metrics = crate::observe::metrics::Metrics::new();
    // Bound before anything starts: a port in use is a clear error at start, not a silent gap.
    let http_listener = match &config.http {
        Some(h) => Some(
            tokio::net::TcpListener::bind(h.listen)
                .await
                .with_context(|| {
                    format!("[http] listen = \"{}\": cannot listen there", h.listen)
                })?,
        ),
        None => None,
    };
    let mut engine = crate::engine::Engine::start(
        &config,
        &journal,
        &|_| startup_resync,
        tick.clone(),
        &metrics,
        &events,
    )
    .await?;
    engine_tx.send_replace(Some(engine.view.clone()));
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(crate::control::serve(
        listener,
        shared.clone(),
        server_stop.clone(),
    ));
    let http_server = http_listener.map(|l| {
        info!(listen = %config.http.as_ref().map(|h| h.listen.to_string()).unwrap_or_default(), "HTTP status and metrics served");
        let state = Arc::new(crate::control::http::HttpState {
            shared: shared.clone(),
            metrics: metrics.clone(),
            token: config.http.as_ref().and_then(|h| h.token.clone()),
        });
        tokio::spawn(crate::control::http::serve(l, state, server_stop.clone()))
    });
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    ready();
    info!(socket = %config.socket.display(), "syncd ready");
    if config.roots.is_empty() {
        warn!(config = ?config.source_file, "no [[sync]] configured: nothing is replicated; add a [[sync]] with a [[sync.target]] and reload (systemctl reload syncd)");
    }
    loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hup.recv() => None,
            r = reload_rx.recv() => match r { Some(r) => Some(r), None => break },
        };
        let outcome = match reload_config(&config) {
            // logrotate's SIGHUP, or a reload with nothing edited: keep everything running. A
            // root that is unavailable is adopted again by a restart, so that still restarts.
            Ok(new)
                if new.source_text == config.source_text
                    && !engine.view.roots.iter().any(|r| {
                        matches!(
                            *r.state.borrow(),
                            syncd_proto::RootState::Unavailable { .. }
                        )
                    }) =>
            {
                info!("configuration unchanged; nothing restarted");
                Ok("configuration unchanged; nothing restarted".to_string())
            }
            Err(e) => {
                warn!(error = %e, "reload refused; the running configuration stays");
                Err(format!(
                    "reload refused, the running configuration stays: {e}"
                ))
            }
            Ok(new) => {
                // Targets of a root that was unavailable start over with a full sync: the
                // directory now adopted was not watched while it was away.
                let old_ids: HashSet<String> = engine
                    .view
                    .targets
                    .iter()
                    .filter(|t| {
                        !matches!(
                            *engine.view.roots[t.root].state.borrow(),
                            syncd_proto::RootState::Unavailable { .. }
                        )
                    })
                    .map(|t| t.id.clone())
                    .collect();
                engine_tx.send_replace(None);
                engine.stop().await;
                match crate::engine::Engine::start(
                    &new,
                    &journal,
                    &|id| !old_ids.contains(id),
                    tick.clone(),
                    &metrics,
                    &events,
                )
                .await
                {
                    Ok(e) => {
                        engine = e;
                        config = new;
                        info!("configuration reloaded");
                        Ok("configuration reloaded".to_string())
                    }
                    Err(e) => {
                        warn!(error = %e, "new configuration failed to start; restarting the old one");
                        engine = crate::engine::Engine::start(
                            &config,
                            &journal,
                            &|_| false,
                            tick.clone(),
                            &metrics,
                            &events,
                        )
                        .await?;
                        Err(format!(
                            "new configuration failed to start, the old one runs again: {e}"
                        ))
                    }
                }
            }
        };
        engine_tx.send_replace(Some(engine.view.clone()));
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    }
    info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    engine_tx.send_replace(None);
    engine.stop().await;
    server_stop.cancel();
    let _ = server.await;
    if let Some(h) = http_server {
        let _ = h.await;
    }
    Ok(())
}

fn reload_config(current: &Config) -> Result<Config, String> {
    let Some(path) = &current.source_file else {
        return Err(
            "syncd was started without a config file (quick mode); there is nothing to reload"
                .into(),
        );
    };
    let new = Config::from_file(path).map_err(|e| e.to_string())?;
    if new.state_dir != current.state_dir
        || new.socket != current.socket
        || new.pidfile != current.pidfile
        || new.http != current.http
    {
        return Err(
            "state_dir, socket, pidfile and [http] cannot change on reload; restart syncd to change them"
                .into(),
        );
    }
    // Checked before the running generation stops: a root that is missing now would keep the
    // new generation from starting.
    for r in &new.roots {
        crate::fs::RootIdentity::of(&r.source)
            .map_err(|e| format!("source {}: {e}; restore it first", r.source.display()))?;
    }
    Ok(new)
}
