//! Reloading: the new configuration read and checked against the running one before anything
//! stops, and the decision whether anything must restart at all.

use std::collections::HashSet;
use std::path::PathBuf;

use syncd_proto::RootState;

use crate::config::{Config, ConfigError};
use crate::engine::EngineView;

/// Why a reload is refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("syncd was started without a config file (quick mode); there is nothing to reload")]
    QuickMode,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state_dir, socket, pidfile and [http] cannot change on reload; restart syncd to change them")]
    Fixed,
    #[error("source {}: {error}; restore it first", .path.display())]
    SourceMissing {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Read the configuration file again and check what a running daemon cannot change. Checked
/// before the running generation stops: a root that is missing now would keep the new
/// generation from starting.
pub fn reload_config(current: &Config) -> Result<Config, ReloadError> {
    let Some(path) = &current.source_file else {
        return Err(ReloadError::QuickMode);
    };
    let new = Config::from_file(path)?;
    if new.state_dir != current.state_dir
        || new.socket != current.socket
        || new.pidfile != current.pidfile
        || new.http != current.http
    {
        return Err(ReloadError::Fixed);
    }
    for r in &new.roots {
        crate::fs::RootIdentity::of(&r.source).map_err(|error| ReloadError::SourceMissing {
            path: r.source.clone(),
            error,
        })?;
    }
    Ok(new)
}

fn unavailable(state: &RootState) -> bool {
    matches!(state, RootState::Unavailable { .. })
}

/// logrotate's SIGHUP, or a reload with nothing edited: keep everything running. A root that
/// is unavailable is adopted again by a restart, so that still restarts.
pub fn nothing_to_restart(new: &Config, current: &Config, view: &EngineView) -> bool {
    new.source_text == current.source_text
        && !view.roots.iter().any(|r| unavailable(&r.state.borrow()))
}

/// The targets the new generation need not resync in full. Targets of a root that was
/// unavailable start over with a full sync: the directory now adopted was not watched while it
/// was away.
pub fn carried_over(view: &EngineView) -> HashSet<String> {
    view.targets
        .iter()
        .filter(|t| !unavailable(&view.roots[t.root].state.borrow()))
        .map(|t| t.id.clone())
        .collect()
}
