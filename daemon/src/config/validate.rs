//! Validation: the raw file turned into a [`Config`], one function per section, every error
//! naming the key, the value and what to do. The checks that look at the file system (source
//! directories, local destinations, password and token files, hook programs) run here too, so
//! a configuration that validates can start.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults as d;
use super::raw::{RawConfig, RawGuard, RawHttp, RawSync, RawTarget};
use super::{
    invalid, Config, ConfigError, DeleteGuard, Dest, Excludes, GuardLimit, Hook, HttpConfig,
    RetryPolicy, RootConfig, TargetConfig,
};

/// The whole file.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let state_dir = absolute(raw.state_dir.unwrap_or_else(d::state_dir));
    let socket = absolute(raw.socket.unwrap_or_else(d::socket));
    if socket.as_os_str().len() > 100 {
        return Err(invalid(
            "socket",
            socket.display(),
            "path too long for a Unix socket (over 100 bytes); choose a shorter path",
        ));
    }
    let pidfile = absolute(raw.pidfile.unwrap_or_else(|| state_dir.join("syncd.pid")));
    let log_file = absolute(raw.log_file.unwrap_or_else(|| state_dir.join("syncd.log")));
    if let Some(g) = &raw.socket_group {
        if !matches!(nix::unistd::Group::from_name(g), Ok(Some(_))) {
            return Err(invalid(
                "socket_group",
                g,
                "no such group; create it or remove the key",
            ));
        }
    }
    let http = raw.http.as_ref().map(check_http).transpose()?;
    // No [[sync]] is valid: the packaged configuration ships that way, and the daemon runs
    // idle (and says so) until a root is added and the configuration reloaded.
    let mut roots = Vec::new();
    let mut root_names = HashSet::new();
    for (i, s) in raw.sync.into_iter().enumerate() {
        roots.push(validate_root(i, s, &mut root_names)?);
    }
    check_nesting(&roots, &state_dir)?;
    Ok(Config {
        state_dir,
        socket,
        pidfile,
        log_file,
        socket_group: raw.socket_group,
        grace_period: Duration::from_secs(raw.grace_period_s.unwrap_or(d::GRACE_PERIOD_S)),
        startup_resync: raw.startup_resync.unwrap_or(d::STARTUP_RESYNC),
        http,
        roots,
        source_file: None,
        source_text: None,
    })
}

/// One `[[sync]]`, the `i`-th.
fn validate_root(
    i: usize,
    s: RawSync,
    names: &mut HashSet<String>,
) -> Result<RootConfig, ConfigError> {
    let key = |k: &str| format!("sync[{i}].{k}");
    let source = absolute(s.source.clone());
    match std::fs::metadata(&source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(key("source"), source.display(), "not a directory")),
        Err(e) => {
            return Err(invalid(
                key("source"),
                source.display(),
                format!("{e}; create the directory or fix the path"),
            ))
        }
    }
    let name = s.name.unwrap_or_else(|| default_root_name(&source));
    check_name(&key("name"), &name)?;
    if !names.insert(name.clone()) {
        return Err(invalid(
            key("name"),
            &name,
            "another [[sync]] has the same name; names must be unique",
        ));
    }
    // A target's versions directory is never pushed to nor deleted at any target: excluded
    // (which also protects it from `--delete`), by name at any depth so that a subdirectory's
    // transfer reads the pattern the same way.
    let mut exclude = s.exclude.clone();
    for v in s.target.iter().filter_map(|t| t.versions.as_ref()) {
        let pat = format!("{v}/");
        if !exclude.contains(&pat) {
            exclude.push(pat);
        }
    }
    let excludes =
        Excludes::new(&exclude).map_err(|(pat, why)| invalid(key("exclude"), pat, why))?;
    if s.target.is_empty() {
        return Err(invalid(
            key("target"),
            "[]",
            "no [[sync.target]]: add at least one destination",
        ));
    }
    let mut targets = Vec::new();
    let mut target_names = HashSet::new();
    for (j, t) in s.target.into_iter().enumerate() {
        let tkey = |k: &str| format!("sync[{i}].target[{j}].{k}");
        targets.push(validate_target(&tkey, j, t, &source, &mut target_names)?);
    }
    let ms = Duration::from_millis;
    let delete_guard = check_delete_guard(&key, s.delete_guard, s.delete_guard_window_s)?;
    Ok(RootConfig {
        name,
        source,
        excludes,
        delay: ms(s.delay_ms.unwrap_or(d::DELAY_MS)),
        modify_delay: ms(s.modify_delay_ms.unwrap_or(d::MODIFY_DELAY_MS)),
        full_resync_interval: Duration::from_secs(
            s.full_resync_interval_s
                .unwrap_or(d::FULL_RESYNC_INTERVAL_S)
                .max(1),
        ),
        delete_guard,
        targets,
    })
}

/// `delete_guard` (`"off"`, `"30%"` or a number of paths) and `delete_guard_window_s`.
fn check_delete_guard(
    key: &dyn Fn(&str) -> String,
    guard: Option<RawGuard>,
    window: Option<u64>,
) -> Result<DeleteGuard, ConfigError> {
    const WANT: &str =
        "expected \"off\", a share of the root's entries like \"30%\", or a number of paths like 5000";
    let limit = match guard {
        None => GuardLimit::Off,
        Some(RawGuard::Paths(n)) => match u64::try_from(n) {
            Ok(n) => GuardLimit::Paths(n),
            Err(_) => return Err(invalid(key("delete_guard"), n, WANT)),
        },
        Some(RawGuard::Float(f)) => return Err(invalid(key("delete_guard"), f, WANT)),
        Some(RawGuard::Text(t)) if t == "off" => GuardLimit::Off,
        Some(RawGuard::Text(t)) => match t.strip_suffix('%').map(|n| n.trim().parse::<f64>()) {
            Some(Ok(p)) if p > 0.0 && p <= 100.0 => GuardLimit::Share(p / 100.0),
            Some(Ok(_)) => {
                return Err(invalid(
                    key("delete_guard"),
                    t,
                    "a share must be more than 0% and at most 100%",
                ))
            }
            _ => return Err(invalid(key("delete_guard"), format!("{t:?}"), WANT)),
        },
    };
    let window = match window {
        Some(0) => {
            return Err(invalid(
                key("delete_guard_window_s"),
                0,
                "the window must be at least 1 second",
            ))
        }
        w => Duration::from_secs(w.unwrap_or(d::DELETE_GUARD_WINDOW_S)),
    };
    Ok(DeleteGuard { limit, window })
}

/// One `[[sync.target]]`, the `j`-th of the root at `source`; `tkey` names its keys.
fn validate_target(
    tkey: &dyn Fn(&str) -> String,
    j: usize,
    t: RawTarget,
    source: &Path,
    names: &mut HashSet<String>,
) -> Result<TargetConfig, ConfigError> {
    let dest = check_dest(tkey, &t.dest, source)?;
    let name = t.name.clone().unwrap_or_else(|| format!("t{}", j + 1));
    check_name(&tkey("name"), &name)?;
    if !names.insert(name.clone()) {
        return Err(invalid(
            tkey("name"),
            &name,
            "another target of this [[sync]] has the same name",
        ));
    }
    let port = check_transport(tkey, &t, &dest)?;
    let workers = check_workers(tkey, t.workers)?;
    let retry = check_retry(tkey, &t)?;
    let timeout = check_timeout(tkey, t.timeout_s)?;
    let max_batch = check_max_batch(tkey, t.max_batch)?;
    let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default).max(1));
    let hook_timeout = secs(t.hook_timeout_s, d::HOOK_TIMEOUT_S);
    Ok(TargetConfig {
        name,
        password_file: t.password_file.clone().map(absolute),
        port,
        workers,
        compress: t.compress.unwrap_or(false),
        max_delete: t.max_delete,
        timeout: Duration::from_secs(timeout),
        contimeout: secs(t.contimeout_s, d::CONTIMEOUT_S),
        push_deadline: secs(t.push_deadline_s, d::PUSH_DEADLINE_S),
        max_batch,
        retry,
        on_batch: hook(tkey("on_batch"), t.on_batch, hook_timeout)?,
        on_failure: hook(tkey("on_failure"), t.on_failure, hook_timeout)?,
        keep_versions: match t.keep_versions_days.unwrap_or(d::KEEP_VERSIONS_DAYS) {
            0 => None,
            days => Some(Duration::from_secs(days.saturating_mul(86_400))),
        },
        versions: check_versions(&tkey("versions"), t.versions)?,
        rsync_args: t.rsync_args,
        ssh_args: t.ssh_args,
        dest,
    })
}

/// `versions`: one plain name (the directory at the target root where replaced and deleted
/// files are kept).
fn check_versions(key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(name) = v else {
        return Ok(None);
    };
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control() || "*?[]\\".contains(c));
    if !plain {
        return Err(invalid(
            key,
            &name,
            "must be one directory name at the target root, without / or wildcards; for example \".syncd-versions\"",
        ));
    }
    if crate::rsync::probe::is_reserved(&name) {
        return Err(invalid(
            key,
            &name,
            "is a name syncd uses at the target itself (the rename probe's, rsync's partial directory): choose another, for example \".syncd-versions\"",
        ));
    }
    Ok(Some(name))
}

/// `dest`: parsed, and a local directory checked against the source.
fn check_dest(
    tkey: &dyn Fn(&str) -> String,
    raw: &str,
    source: &Path,
) -> Result<Dest, ConfigError> {
    let dest = Dest::parse(raw).map_err(|why| invalid(tkey("dest"), raw, why.to_string()))?;
    let Dest::Local(p) = dest else {
        return Ok(dest);
    };
    let p = absolute(p);
    if overlap(&p, source) {
        return Err(invalid(
            tkey("dest"),
            p.display(),
            format!(
                "a local target must not overlap the source directory{}",
                shown_resolved(&p)
            ),
        ));
    }
    let parent = p.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(invalid(
            tkey("dest"),
            p.display(),
            format!(
                "parent directory {} does not exist; create it",
                parent.display()
            ),
        ));
    }
    Ok(Dest::Local(p))
}

/// The options that belong to one kind of destination (`password_file`, `port`, `ssh_args`)
/// and `rsync_args`; returns the port.
fn check_transport(
    tkey: &dyn Fn(&str) -> String,
    t: &RawTarget,
    dest: &Dest,
) -> Result<Option<u16>, ConfigError> {
    if let Some(pf) = &t.password_file {
        if !matches!(dest, Dest::Daemon { .. }) {
            return Err(invalid(
                tkey("password_file"),
                pf.display(),
                "only rsync daemon targets (host::module) use a password file",
            ));
        }
        check_password_file(&tkey("password_file"), pf)?;
    }
    let port = match (dest, t.port) {
        (Dest::Daemon { port: Some(u), .. }, Some(p)) if *u != p => {
            return Err(invalid(
                tkey("port"),
                p,
                format!("conflicts with port {u} in dest; give it once"),
            ));
        }
        (Dest::Daemon { port: Some(u), .. }, _) => Some(*u),
        (_, p) => p,
    };
    if t.port.is_some() && matches!(dest, Dest::Local(_)) {
        return Err(invalid(
            tkey("port"),
            t.port.unwrap_or(0),
            "a local directory target has no port",
        ));
    }
    if !t.ssh_args.is_empty() && !matches!(dest, Dest::Ssh { .. }) {
        return Err(invalid(
            tkey("ssh_args"),
            t.ssh_args.join(" "),
            "only ssh targets (host:path) take ssh_args",
        ));
    }
    if let Some(a) = t.rsync_args.iter().find(|a| !a.starts_with('-')) {
        return Err(invalid(
            tkey("rsync_args"),
            a,
            "every entry must be an option starting with '-'; paths are chosen by syncd",
        ));
    }
    Ok(port)
}

fn check_workers(tkey: &dyn Fn(&str) -> String, v: Option<usize>) -> Result<usize, ConfigError> {
    let workers = v.unwrap_or(d::WORKERS);
    if !(1..=d::MAX_WORKERS).contains(&workers) {
        return Err(invalid(
            tkey("workers"),
            workers,
            format!("allowed: 1 to {}", d::MAX_WORKERS),
        ));
    }
    Ok(workers)
}

fn check_timeout(tkey: &dyn Fn(&str) -> String, v: Option<u64>) -> Result<u64, ConfigError> {
    let timeout = v.unwrap_or(d::TIMEOUT_S);
    if timeout == 0 {
        return Err(invalid(tkey("timeout_s"), 0, "must be at least 1 second"));
    }
    Ok(timeout)
}

fn check_max_batch(tkey: &dyn Fn(&str) -> String, v: Option<usize>) -> Result<usize, ConfigError> {
    let max_batch = v.unwrap_or(d::MAX_BATCH);
    if max_batch == 0 {
        return Err(invalid(tkey("max_batch"), 0, "must be at least 1"));
    }
    Ok(max_batch)
}

/// `max_attempts`, `retry_initial_ms`, `retry_max_ms`, `retry_failed_interval_s`.
fn check_retry(tkey: &dyn Fn(&str) -> String, t: &RawTarget) -> Result<RetryPolicy, ConfigError> {
    let max_attempts = t.max_attempts.unwrap_or(d::MAX_ATTEMPTS);
    if max_attempts == 0 {
        return Err(invalid(tkey("max_attempts"), 0, "must be at least 1"));
    }
    let initial = t.retry_initial_ms.unwrap_or(d::RETRY_INITIAL_MS);
    let max = t.retry_max_ms.unwrap_or(d::RETRY_MAX_MS);
    if initial == 0 || max < initial {
        return Err(invalid(
            tkey("retry_max_ms"),
            max,
            format!("must be at least retry_initial_ms ({initial}), which must be above 0"),
        ));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial: Duration::from_millis(initial),
        max: Duration::from_millis(max),
        failed_interval: Duration::from_secs(
            t.retry_failed_interval_s
                .unwrap_or(d::RETRY_FAILED_INTERVAL_S)
                .max(1),
        ),
    })
}

/// Roots must not nest: one path would belong to two roots. A local target must not overlap
/// another root's source either (each would replicate the other for ever), nor another root's
/// local target (each root's full sync would delete the other's files); the state directory
/// must be inside none of them. All compared as resolved (`..` and symlinks followed).
fn check_nesting(roots: &[RootConfig], state_dir: &Path) -> Result<(), ConfigError> {
    let locals: Vec<(&RootConfig, &TargetConfig, &Path)> = roots
        .iter()
        .flat_map(|r| {
            r.targets.iter().filter_map(move |t| match &t.dest {
                Dest::Local(p) => Some((r, t, p.as_path())),
                _ => None,
            })
        })
        .collect();
    let state = resolved(state_dir);
    for (r, t, p) in &locals {
        for other in roots.iter().filter(|o| o.name != r.name) {
            if overlap(p, &other.source) {
                return Err(invalid(
                    "sync.target.dest",
                    p.display(),
                    format!(
                        "[[sync]] {:?} target {:?} overlaps the source of [[sync]] {:?}{}",
                        r.name,
                        t.name,
                        other.name,
                        shown_resolved(p)
                    ),
                ));
            }
        }
        for (r2, t2, p2) in &locals {
            if r2.name != r.name && overlap(p, p2) {
                return Err(invalid(
                    "sync.target.dest",
                    p.display(),
                    format!(
                        "[[sync]] {:?} target {:?} overlaps target {:?} of [[sync]] {:?}: each root's full sync would delete the other's files; give each root its own directory",
                        r.name, t.name, t2.name, r2.name
                    ),
                ));
            }
        }
        if state.starts_with(resolved(p)) {
            return Err(invalid(
                "state_dir",
                state_dir.display(),
                format!(
                    "is inside the local target {} of [[sync]] {:?}: a full sync would delete it; keep the state elsewhere",
                    p.display(),
                    r.name
                ),
            ));
        }
    }
    for r in roots {
        if state.starts_with(resolved(&r.source)) {
            return Err(invalid(
                "state_dir",
                state_dir.display(),
                format!(
                    "is inside the source of [[sync]] {:?}: every journal write would be a change to replicate; keep the state elsewhere",
                    r.name
                ),
            ));
        }
    }
    for (a, ra) in roots.iter().enumerate() {
        for rb in &roots[a + 1..] {
            if overlap(&ra.source, &rb.source) {
                return Err(invalid(
                    "sync.source",
                    ra.source.display(),
                    format!(
                        "overlaps the source of [[sync]] {:?}; roots must not nest",
                        rb.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// syncd's user, like an rsync password file).
fn check_http(raw: &RawHttp) -> Result<HttpConfig, ConfigError> {
    let listen = raw.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            &raw.listen,
            "not an address:port; for example \"127.0.0.1:9188\" (loopback only) or \"[::1]:9188\"",
        )
    })?;
    let token = match &raw.token_file {
        None => None,
        Some(f) => {
            let key = "http.token_file";
            let meta = std::fs::metadata(f).map_err(|e| {
                invalid(
                    key,
                    f.display(),
                    format!("{e}; create it (mode 0600) with the token in it"),
                )
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(invalid(
                    key,
                    f.display(),
                    format!(
                        "readable by others (mode {:04o}): anyone who reads it controls syncd; run chmod 600 {}",
                        meta.permissions().mode() & 0o7777,
                        f.display()
                    ),
                ));
            }
            let t = std::fs::read_to_string(f)
                .map_err(|e| invalid(key, f.display(), format!("{e}; fix the path")))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(invalid(
                    key,
                    f.display(),
                    "the token must be at least 16 characters; for example: head -c 24 /dev/urandom | base64 > FILE",
                ));
            }
            Some(t)
        }
    };
    Ok(HttpConfig { listen, token })
}

/// A hook's program and arguments: run directly, so the program must be an absolute path to an
/// executable file.
fn hook(
    key: String,
    argv: Option<Vec<String>>,
    timeout: Duration,
) -> Result<Option<Hook>, ConfigError> {
    let Some(argv) = argv else {
        return Ok(None);
    };
    let Some(prog) = argv.first() else {
        return Err(invalid(
            key,
            "[]",
            "empty: give the program's absolute path and its arguments, or remove the key",
        ));
    };
    if !Path::new(prog).is_absolute() {
        return Err(invalid(
            key,
            prog,
            "not an absolute path: hooks run without a shell or a PATH search; give the program's full path",
        ));
    }
    match std::fs::metadata(prog) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            Ok(Some(Hook { argv, timeout }))
        }
        Ok(_) => Err(invalid(
            key,
            prog,
            "not an executable file; chmod +x it or fix the path",
        )),
        Err(e) => Err(invalid(key, prog, format!("{e}; fix the path"))),
    }
}

/// Make a path absolute against the current directory without touching the file system.
pub(super) fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// `p` as the file system resolves it: its longest existing ancestor canonicalized (`..` and
/// symlinks followed), the rest appended with `.` dropped and `..` taken lexically (nothing
/// exists there to be a symlink).
pub(super) fn resolved(p: &Path) -> PathBuf {
    use std::path::Component;
    let p = absolute(p.to_path_buf());
    let mut rest = Vec::new();
    let mut base = p.as_path();
    let canon = loop {
        if let Ok(c) = base.canonicalize() {
            break c;
        }
        match (base.parent(), base.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                base = parent;
            }
            _ => break PathBuf::from("/"),
        }
    };
    let mut out = canon;
    for c in rest.into_iter().rev() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Whether `a` and `b` are one directory or one is inside the other, as resolved.
fn overlap(a: &Path, b: &Path) -> bool {
    let (a, b) = (resolved(a), resolved(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// " (it resolves to R)" when `p` resolves elsewhere than it reads.
fn shown_resolved(p: &Path) -> String {
    let r = resolved(p);
    if r == absolute(p.to_path_buf()) {
        String::new()
    } else {
        format!(" (it resolves to {})", r.display())
    }
}

fn default_root_name(source: &Path) -> String {
    let base = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "root".to_string()
    } else {
        clean
    }
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            name,
            "names are 1-64 characters of letters, digits, '.', '_' and '-', not starting with '.'",
        ))
    }
}

fn check_password_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        invalid(
            key,
            path.display(),
            format!("{e}; create it with the password on its first line, mode 0600"),
        )
    })?;
    if !meta.is_file() {
        return Err(invalid(key, path.display(), "not a regular file"));
    }
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(invalid(
            key,
            path.display(),
            format!(
                "readable by others (mode {:04o}); rsync refuses it: run chmod 600 {}",
                meta.permissions().mode() & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}
