//! `versions = ".syncd-versions"`: what a push replaces or deletes at the target is kept under
//! `.syncd-versions/<UTC time of the run>/PATH` there, by batches, moves and full syncs alike,
//! on a local and an rsync daemon target; no run deletes or enters that directory. The real
//! rsync, a real rsync daemon.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use syncd_tests::*;

const VERSIONS: &str = ".syncd-versions";

/// A name rsync prints escaped (`\#ooo`): not UTF-8, a newline, what looks like an escape, a
/// wildcard and spaces.
const ODD: &[u8] = b"odd \xff\n\\#101 *[x].txt";

/// The kept versions of `rel` at target `dest`, oldest first: (run directory, content).
fn versions_of(dest: &Path, rel: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(runs) = std::fs::read_dir(dest.join(VERSIONS)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = runs
        .flatten()
        .filter_map(|r| {
            let content = std::fs::read(r.path().join(rel)).ok()?;
            Some((r.file_name().into_string().unwrap(), content))
        })
        .collect();
    out.sort();
    out
}

/// The target holds exactly the source, its versions directory aside.
fn assert_same_but_versions(src: &Path, dest: &Path) {
    let a = snapshot(src);
    let mut b = snapshot(dest);
    b.retain(|k, _| !k.starts_with(VERSIONS.as_bytes()));
    let differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(differ.is_empty(), "target differs from source: {differ:?}");
}

/// Overwrite, delete, rename a directory over another, and resync a subdirectory drifted at
/// the target: each replaced or deleted file is kept once, with its old content.
fn what_pushes_replace_is_kept(env: &Env, dest: &Path, d: &Syncd) {
    write(&env.src.join("a.txt"), b"second");
    write(&env.src.join(OsStr::from_bytes(ODD)), b"odd, second");
    std::fs::remove_file(env.src.join("gone.txt")).unwrap();
    d.settle();
    assert_eq!(versions_of(dest, "a.txt").len(), 1);
    assert_eq!(versions_of(dest, "a.txt")[0].1, b"first");
    assert_eq!(versions_of(dest, "gone.txt")[0].1, b"deleted at the source");
    assert_same_but_versions(&env.src, dest);
    syncctl_lists_the_versions_of(env, dest, d);

    // Drift at the target, repaired by a full sync of that subdirectory: the drifted file is
    // kept too, under its own path.
    write(&dest.join("deep/er/c.txt"), b"changed behind syncd's back");
    let sub = env.src.join("deep/er");
    assert!(d.ctl(&["resync", sub.to_str().unwrap()]).status.success());
    d.settle();
    let kept = versions_of(dest, "deep/er/c.txt");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, b"changed behind syncd's back");
    assert_same_but_versions(&env.src, dest);

    // A whole-root full sync (--delete) neither deletes nor enters the versions.
    let before = snapshot(&dest.join(VERSIONS));
    assert!(d.ctl(&["resync"]).status.success());
    d.settle();
    assert_eq!(snapshot(&dest.join(VERSIONS)), before);
    assert_same_but_versions(&env.src, dest);
}

/// `syncctl versions PATH` names, for the target, each kept version of `a.txt` (where it is
/// and its size) and says so when there is none.
fn syncctl_lists_the_versions_of(env: &Env, dest: &Path, d: &Syncd) {
    let a = env.src.join("a.txt");
    let out = d.ctl(&["--json", "versions", a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = v["targets"][0]["versions"]
        .as_array()
        .expect("versions")
        .clone();
    assert_eq!(kept.len(), 1, "{v}");
    let at = kept[0]["at"].as_str().unwrap();
    assert_eq!(std::fs::read(dest.join(at)).unwrap(), b"first", "{at}");
    assert_eq!(kept[0]["size"], 5);
    let text = d.ctl(&["versions", env.src.join("deep/er/c.txt").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("no versions of deep/er/c.txt"), "{text}");

    // Listed from rsync's escaped output, matched byte for byte.
    let odd = env.src.join(OsStr::from_bytes(ODD));
    let out = d.ctl(&[
        OsStr::new("--json"),
        OsStr::new("versions"),
        odd.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["targets"][0]["versions"][0]["size"], 9, "{v}");
    assert_eq!(
        v["targets"][0]["versions"].as_array().unwrap().len(),
        1,
        "{v}"
    );
}

fn tree(src: &Path) {
    write(&src.join("a.txt"), b"first");
    write(&src.join(OsStr::from_bytes(ODD)), b"odd first");
    write(&src.join("gone.txt"), b"deleted at the source");
    write(&src.join("deep/er/c.txt"), b"c");
    // Never replicated: a source directory of that name is excluded (and said so in the docs).
    write(&src.join(format!("sub/{VERSIONS}/x")), b"not pushed");
}

#[test]
fn a_local_target_keeps_what_pushes_replace_or_delete() {
    let env = Env::new();
    tree(&env.src);
    let dest: PathBuf = env.dst.clone();
    let t = local_target("local", &dest, &format!("versions = {VERSIONS:?}"));
    let d = Syncd::start(&env.config("", &t), &env.socket);
    d.settle();
    assert!(
        !dest.join("sub").join(VERSIONS).exists(),
        "excluded at the source"
    );
    std::fs::remove_dir_all(env.src.join("sub").join(VERSIONS)).unwrap();
    what_pushes_replace_is_kept(&env, &dest, &d);
}

#[test]
fn a_daemon_target_keeps_what_pushes_replace_or_delete() {
    let env = Env::new();
    tree(&env.src);
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let t = rd.target("d1", &format!("versions = {VERSIONS:?}"));
    let d = Syncd::start(&env.config("", &t), &env.socket);
    d.settle();
    std::fs::remove_dir_all(env.src.join("sub").join(VERSIONS)).unwrap();
    what_pushes_replace_is_kept(&env, &module, &d);
}

/// Runs older than `keep_versions_days` at `dest` before syncd starts, one recent, and one
/// directory put there by hand.
fn old_and_new_runs(dest: &Path) -> String {
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let recent = humantime::format_rfc3339_millis(day_ago).to_string();
    for run in [
        "2020-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z",
        &recent,
        "by-hand",
    ] {
        write(&dest.join(VERSIONS).join(run).join("f"), run.as_bytes());
    }
    recent
}

/// Only the runs older than 30 days go, soon after the start.
fn only_old_runs_are_pruned(dest: &Path, recent: &str) {
    let gone = |run: &str| !dest.join(VERSIONS).join(run).exists();
    let pruned = wait_for_change_in(
        &dest.join(VERSIONS),
        std::time::Duration::from_secs(30),
        || gone("2020-01-01T00:00:00.000Z") && gone("2026-01-01T00:00:00.000Z"),
    );
    assert!(pruned, "runs older than 30 days pruned");
    assert!(!gone(recent), "a run of yesterday is kept");
    assert!(
        !gone("by-hand"),
        "a directory that is not a run is left alone"
    );
}

#[test]
fn versions_older_than_keep_versions_days_are_pruned_at_a_local_target() {
    let env = Env::new();
    write(&env.src.join("a.txt"), b"a");
    let recent = old_and_new_runs(&env.dst);
    let extra = format!("versions = {VERSIONS:?}\nkeep_versions_days = 30");
    let t = local_target("local", &env.dst, &extra);
    let d = Syncd::start(&env.config("", &t), &env.socket);
    only_old_runs_are_pruned(&env.dst, &recent);
    d.settle();
    assert_same_but_versions(&env.src, &env.dst);
}

#[test]
fn versions_older_than_keep_versions_days_are_pruned_at_a_daemon_target() {
    let env = Env::new();
    write(&env.src.join("a.txt"), b"a");
    let module = env.dir.path().join("module");
    let recent = old_and_new_runs(&module);
    let rd = RsyncDaemon::start(env.dir.path(), &module, "");
    let extra = format!("versions = {VERSIONS:?}\nkeep_versions_days = 30");
    let d = Syncd::start(&env.config("", &rd.target("d1", &extra)), &env.socket);
    only_old_runs_are_pruned(&module, &recent);
    d.settle();
    assert_same_but_versions(&env.src, &module);
}

#[test]
fn an_ssh_target_keeps_what_pushes_replace_or_delete_and_prunes_old_runs() {
    let env = Env::new();
    tree(&env.src);
    let sshd = Sshd::start(env.dir.path());
    let remote = env.dir.path().join("remote");
    let recent = old_and_new_runs(&remote);
    let extra = format!("versions = {VERSIONS:?}\nkeep_versions_days = 30");
    let mut t = sshd.target("s1", &remote);
    t.push_str(&extra);
    t.push('\n');
    let d = Syncd::start(&env.config("", &t), &env.socket);
    only_old_runs_are_pruned(&remote, &recent);
    d.settle();
    std::fs::remove_dir_all(env.src.join("sub").join(VERSIONS)).unwrap();
    what_pushes_replace_is_kept(&env, &remote, &d);
}
