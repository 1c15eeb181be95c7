//! `syncd`: parse arguments, load the configuration, lock the pidfile, daemonize, build the
//! runtime and hand over to [`syncd::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use syncd::config::{Config, DEFAULT_CONFIG_FILE, DEMO_CONFIG};
use syncd::process::daemonize::{daemonize, Forked, PidFile, Readiness};
use tokio_util::sync::CancellationToken;

/// Real-time file replication: inotify, a journal, and rsync.
#[derive(Parser, Debug)]
#[command(name = "syncd", version, about)]
struct Cli {
    /// Configuration file [default: /etc/syncd/syncd.toml; without it, a demo in ./syncd-demo]
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Stay in the foreground (for systemd Type=notify and tests); logs go to stderr.
    #[arg(long, short = 'f')]
    foreground: bool,
    /// More log output (-v debug, -vv trace); SYNCD_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Quick mode: directory to watch (instead of a config file).
    #[arg(long, requires = "target", conflicts_with = "config")]
    source: Option<PathBuf>,
    /// Quick mode: destination (local dir, [user@]host::module[/path] or [user@]host:path); repeatable.
    #[arg(long, requires = "source")]
    target: Vec<String>,
    /// Quick mode: journal directory.
    #[arg(long, requires = "source")]
    state_dir: Option<PathBuf>,
    /// Quick mode: control socket path.
    #[arg(long, requires = "source")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and exit (0 valid, 1 invalid).
    CheckConfig,
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print a man page (roff), for packaging: syncd(8), or syncd.toml(5) with --config-file.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        config_file: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("syncd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    if let Some(src) = &cli.source {
        return Ok(Config::quick(
            src.clone(),
            cli.target.clone(),
            cli.state_dir.clone(),
            cli.socket.clone(),
        )?);
    }
    if let Some(path) = &cli.config {
        return Ok(Config::from_file(path)?);
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    if default.exists() {
        return Ok(Config::from_file(&default)?);
    }
    for d in ["syncd-demo/source", "syncd-demo/state"] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
    }
    eprintln!(
        "syncd: no --config and no {DEFAULT_CONFIG_FILE}: running the demo.\n  \
         files written to ./syncd-demo/source are replicated to ./syncd-demo/target\n  \
         try, from this directory: syncctl status"
    );
    Ok(Config::from_toml(
        DEMO_CONFIG,
        std::path::Path::new("(embedded demo config)"),
    )?)
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(done) = print_only(&cli) {
        return done;
    }
    let config = load_config(&cli)?;
    if let Some(Command::CheckConfig) = cli.command {
        check_config(&config);
        return Ok(ExitCode::SUCCESS);
    }
    run_daemon(&cli, config)
}

/// The commands that only print something (completions, man pages).
fn print_only(cli: &Cli) -> Option<anyhow::Result<ExitCode>> {
    use clap::CommandFactory;
    let out = &mut std::io::stdout();
    match &cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "syncd", out);
        }
        Some(Command::Man { config_file: false }) => {
            let page = clap_mangen::Man::new(Cli::command()).section("8");
            if let Err(e) = page.render(out) {
                return Some(Err(e).context("writing the man page"));
            }
        }
        Some(Command::Man { config_file: true }) => {
            print!("{}", syncd::config::manual::config_man_page());
        }
        _ => return None,
    }
    Some(Ok(ExitCode::SUCCESS))
}

/// `syncd check-config`: the configuration validated; say what it holds.
fn check_config(config: &Config) {
    let targets: usize = config.roots.iter().map(|r| r.targets.len()).sum();
    println!(
        "configuration is valid: {} root(s), {} target(s)",
        config.roots.len(),
        targets
    );
    if config.roots.is_empty() {
        println!("no [[sync]] section: syncd runs, but replicates nothing until one is added");
    }
    for w in config.warnings() {
        println!("warning: {w}");
    }
}

/// Everything that must hold before the daemon forks: rsync usable, the state directory
/// writable, the state directory and the pidfile locked (two daemons with different pidfiles
/// must still never share a journal).
fn preflight(config: &Config) -> anyhow::Result<((u32, u32, u32), PidFile, PidFile)> {
    let version = syncd::rsync::probe_rsync()?;
    syncd::journal::check_state_dir(&config.state_dir)?;
    let state_lock = PidFile::lock(&config.state_dir.join("syncd.lock"))?;
    let pidfile = PidFile::lock(&config.pidfile)?;
    Ok((version, state_lock, pidfile))
}

fn run_daemon(cli: &Cli, config: Config) -> anyhow::Result<ExitCode> {
    let ((maj, min, patch), mut state_lock, mut pidfile) = preflight(&config)?;
    let readiness: Option<Readiness> = if cli.foreground {
        None
    } else {
        match daemonize(&config.log_file)? {
            Forked::Daemon(r) => Some(r),
            Forked::Exit(code) => return Ok(code),
        }
    };
    pidfile.write_pid().context("writing the pidfile")?;
    state_lock
        .write_pid()
        .context("writing the state directory's lock file")?;
    init_tracing(cli.verbose, cli.foreground);
    tracing::info!(
        rsync = format!("{maj}.{min}.{patch}"),
        pid = std::process::id(),
        "syncd starting"
    );
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let readiness = Arc::new(Mutex::new(readiness));
    let result = serve(cli.foreground, config, on_ready(&readiness, cli.foreground));
    drop(pidfile);
    drop(state_lock);
    result.map(|()| ExitCode::SUCCESS).inspect_err(|e| {
        tracing::error!("{e:#}");
        if let Some(r) = readiness.lock().ok().and_then(|mut g| g.take()) {
            r.failed(&format!("{e:#}"));
        }
    })
}

/// Called once the daemon is ready: the launcher exits 0, systemd hears READY=1.
fn on_ready(
    readiness: &Arc<Mutex<Option<Readiness>>>,
    foreground: bool,
) -> Box<dyn FnOnce() + Send> {
    let readiness = readiness.clone();
    Box::new(move || {
        if let Some(r) = readiness.lock().ok().and_then(|mut g| g.take()) {
            r.ready();
        }
        if foreground {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
    })
}

/// Build the runtime (after the fork: no thread exists before it) and run the daemon in it.
fn serve(
    foreground: bool,
    config: Config,
    on_ready: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    // systemd's WatchdogSec: ping at half the interval. (rsync and hooks are started without
    // the variables.)
    let watchdog = foreground
        .then(sd_notify::watchdog_enabled)
        .flatten()
        .map(|d| d / 2);
    // Logging to a file (forked): SIGHUP reopens it, for logrotate.
    let reopen_log = (!foreground).then(|| config.log_file.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        syncd::process::signals::spawn_terminate(shutdown.clone())?;
        if let Some(every) = watchdog {
            syncd::process::signals::spawn_watchdog(every);
        }
        syncd::run(config, shutdown, on_ready, reopen_log).await
    })
}

fn init_tracing(verbose: u8, foreground: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("SYNCD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = foreground && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        // The journal stamps every line itself.
        fmt.without_time().init();
    } else {
        fmt.init();
    }
}

/// Whether stderr is the systemd journal's stream (systemd sets `JOURNAL_STREAM` to its
/// `device:inode`; a child whose stderr was redirected keeps the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino),
        Err(_) => false,
    }
}
