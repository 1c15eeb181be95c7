//! A directory renamed inside a root reaches the target as a move: its files are linked from
//! the old directory at the target (there they keep their inodes), not sent again, and the old
//! directory is deleted only after. Every order of renames converges to exactly the source.
//! The real rsync, a real rsync daemon (chrooted and not), a local and an ssh target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use syncd_tests::*;

/// `n` files of 64 KiB, each different, in two subdirectories of `dir`.
fn tree(dir: &Path, n: usize) {
    for i in 0..n {
        let content: Vec<u8> = (0..65_536u32)
            .map(|b| (b as usize).wrapping_mul(31).wrapping_add(i) as u8)
            .collect();
        write(&dir.join(format!("sub{}/f{i}", i % 2)), &content);
    }
}

/// Assert that every file below `from` in `before` (inodes at the target before the rename) is
/// at the target below `to` with the same inode, but for the names in `changed`.
fn assert_moved(
    before: &BTreeMap<Vec<u8>, u64>,
    target: &Path,
    from: &str,
    to: &str,
    changed: &[&str],
) {
    let now = inodes(target);
    let from = format!("{from}/");
    let mut linked = 0;
    for (p, ino) in before {
        let Some(rest) = p.strip_prefix(from.as_bytes()) else {
            continue;
        };
        let rest = String::from_utf8_lossy(rest);
        if changed.contains(&rest.as_ref()) {
            continue;
        }
        let moved = format!("{to}/{rest}");
        assert_eq!(
            now.get(moved.as_bytes()),
            Some(ino),
            "{moved} at the target is {from}{rest} linked, not sent again"
        );
        linked += 1;
    }
    assert!(linked > 0, "nothing below {from} to compare");
}

fn module(env: &Env, name: &str) -> PathBuf {
    let m = env.dir.path().join(name);
    std::fs::create_dir(&m).unwrap();
    m
}

/// One rsync daemon target `d1` (module options `extra`), syncd started and settled on what
/// `prepare` wrote.
fn daemon_setup(
    root_extra: &str,
    module_extra: &str,
    prepare: impl FnOnce(&Path),
) -> (Env, PathBuf, RsyncDaemon, Syncd) {
    daemon_setup_top("", root_extra, module_extra, prepare)
}

/// Like [`daemon_setup`] with `top` lines in the configuration's top level.
fn daemon_setup_top(
    top: &str,
    root_extra: &str,
    module_extra: &str,
    prepare: impl FnOnce(&Path),
) -> (Env, PathBuf, RsyncDaemon, Syncd) {
    let env = Env::new();
    let m = module(&env, "module");
    let rd = RsyncDaemon::start(env.dir.path(), &m, module_extra);
    prepare(&env.src);
    let cfg = env.config_top(top, root_extra, &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &m);
    (env, m, rd, d)
}

#[test]
fn directories_renamed_and_moved_reach_chrooted_and_unchrooted_daemons_as_moves() {
    let env = Env::new();
    let (m1, m2) = (module(&env, "chrooted"), module(&env, "plain"));
    let (c1, c2) = (module(&env, "conf1"), module(&env, "conf2"));
    let d1 = RsyncDaemon::start(&c1, &m1, "");
    let d2 = RsyncDaemon::start(&c2, &m2, "use chroot = no\n");
    tree(&env.src.join("a"), 6);
    tree(&env.src.join("deep/er/x"), 4);
    std::fs::create_dir_all(env.src.join("elsewhere")).unwrap();
    // The name older releases' probe used, and deleted at the target (issue 26): the user's
    // directory of that name stays (assert_same_tree below).
    tree(&env.src.join("syncd-rename-probe"), 2);
    let targets = format!("{}{}", d1.target("d1", ""), d2.target("d2", ""));
    let d = Syncd::start(&env.config("", &targets), &env.socket);
    d.settle();
    let before = [inodes(&m1), inodes(&m2)];

    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    std::fs::rename(env.src.join("deep/er/x"), env.src.join("elsewhere/y")).unwrap();
    d.settle();
    for ((m, before), t) in [&m1, &m2].into_iter().zip(&before).zip(["d1", "d2"]) {
        assert_same_tree(&env.src, m);
        assert!(
            std::fs::read_dir(m).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("syncd-probe-")),
            "the probe leaves nothing"
        );
        let st = d.target_status(t);
        // Some rsync builds do not link from a relative --link-dest into a daemon without
        // chroot (Debian's 3.2.7-1+deb12u5, upstream 3.4.3: rsync #915): there the probe must
        // have found it and said why, and the renames went as plain pushes.
        if t == "d2" && st["renames"] == "plain" {
            let why = st["renames_reason"].as_str().unwrap_or("");
            assert!(!why.is_empty(), "plain renames say why: {st}");
            continue;
        }
        assert_eq!(st["renames"], "moves", "the probe found links: {st}");
        assert_moved(before, m, "a", "b", &[]);
        assert_moved(before, m, "deep/er/x", "elsewhere/y", &[]);
    }
    let text = String::from_utf8(d.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("renames: moved"), "{text}");
}

#[test]
fn writes_right_after_a_rename_and_a_rename_over_an_empty_directory_converge() {
    let (env, m, _rd, d) = daemon_setup("", "", |src| {
        tree(&src.join("a"), 4);
        tree(&src.join("c"), 2);
        std::fs::create_dir(src.join("empty")).unwrap();
    });
    let before = inodes(&m);
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    write(&env.src.join("b/sub0/f0"), b"rewritten at once");
    write(&env.src.join("b/new"), b"new in the moved tree");
    std::fs::remove_file(env.src.join("b/sub1/f1")).unwrap();
    std::fs::rename(env.src.join("c"), env.src.join("empty")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &m);
    assert_moved(&before, &m, "a", "b", &["sub0/f0", "sub1/f1"]);
    assert_moved(&before, &m, "c", "empty", &[]);
}

#[test]
fn chains_and_swapped_names_converge_to_exactly_the_source() {
    let (env, m, _rd, d) = daemon_setup("", "", |src| {
        tree(&src.join("a"), 4);
        tree(&src.join("x"), 3);
        tree(&src.join("y"), 2);
    });
    let before = inodes(&m);
    // Within one window: a → b → c, and x and y swap names through tmp.
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    std::fs::rename(env.src.join("b"), env.src.join("c")).unwrap();
    std::fs::rename(env.src.join("x"), env.src.join("tmp")).unwrap();
    std::fs::rename(env.src.join("y"), env.src.join("x")).unwrap();
    std::fs::rename(env.src.join("tmp"), env.src.join("y")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &m);
    assert_moved(&before, &m, "a", "c", &[]);
    // And back again, after the dust settled.
    let before = inodes(&m);
    std::fs::rename(env.src.join("c"), env.src.join("a")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &m);
    assert_moved(&before, &m, "c", "a", &[]);
}

#[test]
fn renames_into_an_excluded_name_or_out_of_the_root_are_deletions_and_in_from_outside_uploads() {
    let (env, m, _rd, d) = daemon_setup("exclude = [\"*.tmp\"]", "", |src| {
        tree(&src.join("a"), 2);
        tree(&src.join("b"), 2);
    });
    let outside = env.dir.path().join("outside");
    tree(&outside.join("o"), 2);
    std::fs::rename(env.src.join("a"), env.src.join("a.tmp")).unwrap();
    std::fs::rename(env.src.join("b"), outside.join("b")).unwrap();
    std::fs::rename(outside.join("o"), env.src.join("o")).unwrap();
    d.settle();
    assert_same_tree(&env.src.join("o"), &m.join("o"));
    for gone in ["a", "a.tmp", "b"] {
        assert!(!m.join(gone).exists(), "{gone} at the target");
    }
}

/// A rename of `a` (4 files) while target `name` is paused: nothing moves at the target until
/// it resumes, then the files are linked, not sent again.
fn a_rename_while_paused_is_a_move_once_resumed(env: &Env, dest: &Path, d: &Syncd, name: &str) {
    let before = inodes(dest);
    assert!(d.ctl(&["pause", name]).status.success());
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    write(&env.src.join("b/later"), b"written while paused");
    d.wait_status(std::time::Duration::from_secs(10), |s| {
        target_in(s, name).is_some_and(|t| t["pending"].as_u64() > Some(0))
    });
    assert!(
        dest.join("a").exists() && !dest.join("b").exists(),
        "paused"
    );
    assert!(d.ctl(&["resume", name]).status.success());
    d.settle();
    assert_same_tree(&env.src, dest);
    assert_moved(&before, dest, "a", "b", &[]);
}

/// A rename of `a` while target `name` is down (`up(false)` takes it down, `up(true)` brings
/// it back): nothing is deleted meanwhile, and once it is back the files are linked.
fn a_rename_while_down_is_a_move_once_back(
    env: &Env,
    dest: &Path,
    d: &Syncd,
    name: &str,
    up: &mut dyn FnMut(bool),
) {
    let before = inodes(dest);
    up(false);
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    d.wait_backoff(name);
    up(true);
    assert!(
        dest.join("a/sub0/f0").exists(),
        "nothing deleted while down"
    );
    d.settle();
    assert_same_tree(&env.src, dest);
    assert_moved(&before, dest, "a", "b", &[]);
}

#[test]
fn a_rename_while_the_target_is_paused_is_a_move_once_it_resumes() {
    let (env, m, _rd, d) = daemon_setup("", "", |src| tree(&src.join("a"), 4));
    a_rename_while_paused_is_a_move_once_resumed(&env, &m, &d, "d1");
}

#[test]
fn a_rename_while_the_daemon_is_down_is_a_move_once_it_is_back() {
    let (env, m, mut rd, d) = daemon_setup("", "", |src| tree(&src.join("a"), 4));
    a_rename_while_down_is_a_move_once_back(&env, &m, &d, "d1", &mut |up| {
        if up {
            rd.restart()
        } else {
            rd.stop()
        }
    });
}

#[test]
fn a_rename_while_a_local_target_is_paused_or_its_disk_is_gone_is_a_move_once_back() {
    let env = Env::new();
    // The target below a "disk" directory that goes away: rsync cannot create its parent.
    let disk = env.dir.path().join("disk");
    let dest = disk.join("dst");
    std::fs::create_dir_all(&dest).unwrap();
    tree(&env.src.join("a"), 4);
    let d = Syncd::start(
        &env.config("", &local_target("local", &dest, "")),
        &env.socket,
    );
    d.settle();
    a_rename_while_paused_is_a_move_once_resumed(&env, &dest, &d, "local");
    std::fs::rename(env.src.join("b"), env.src.join("a")).unwrap();
    d.settle();
    let away = env.dir.path().join("disk.away");
    a_rename_while_down_is_a_move_once_back(&env, &dest, &d, "local", &mut |up| {
        let (from, to) = if up { (&away, &disk) } else { (&disk, &away) };
        std::fs::rename(from, to).unwrap();
    });
}

#[test]
fn a_rename_while_an_ssh_target_is_paused_or_down_is_a_move_once_back() {
    let env = Env::new();
    let mut sshd = Sshd::start(env.dir.path());
    let remote = module(&env, "remote");
    tree(&env.src.join("a"), 4);
    let d = Syncd::start(&env.config("", &sshd.target("s1", &remote)), &env.socket);
    d.settle();
    a_rename_while_paused_is_a_move_once_resumed(&env, &remote, &d, "s1");
    std::fs::rename(env.src.join("b"), env.src.join("a")).unwrap();
    d.settle();
    a_rename_while_down_is_a_move_once_back(&env, &remote, &d, "s1", &mut |up| {
        if up {
            sshd.restart()
        } else {
            sshd.stop()
        }
    });
}

#[test]
fn with_exclude_patterns_naming_whole_paths_a_rename_is_a_plain_push_and_still_exact() {
    // `/b/keep/` read from the moved directory's own transfer would name `b/b/keep`: a move
    // would put `b/keep` at the target. Renames of this root are plain pushes.
    let port = free_port();
    let (env, m, _rd, d) = daemon_setup_top(&http(port), "exclude = [\"/b/keep/\"]", "", |src| {
        tree(&src.join("a"), 2);
        write(&src.join("a/keep/x"), b"excluded once renamed");
    });
    let sent = sent_bytes(port, "d1");
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    d.settle();
    assert!(
        !m.join("b/keep").exists(),
        "the exclude still holds at the target"
    );
    std::fs::remove_dir_all(env.src.join("b/keep")).unwrap();
    assert_same_tree(&env.src, &m);
    // Not an inode comparison: the target may give the new file the old one's freed inode.
    let sent = sent_bytes(port, "d1") - sent;
    assert!(
        sent >= 2.0 * 65_536.0,
        "a plain push sends both 64 KiB files again: {sent} bytes sent"
    );
}

#[test]
fn a_renamed_directory_reaches_a_local_target_as_a_move() {
    let env = Env::new();
    tree(&env.src.join("p/a"), 4);
    let d = Syncd::start(&env.local_config(""), &env.socket);
    d.settle();
    let before = inodes(&env.dst);
    std::fs::rename(env.src.join("p/a"), env.src.join("b")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    assert_moved(&before, &env.dst, "p/a", "b", &[]);
}

#[test]
fn a_renamed_directory_reaches_an_ssh_target_as_a_move() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = module(&env, "remote");
    tree(&env.src.join("a"), 4);
    let d = Syncd::start(&env.config("", &sshd.target("s1", &remote)), &env.socket);
    d.settle();
    let before = inodes(&remote);
    std::fs::rename(env.src.join("a"), env.src.join("q")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &remote);
    assert_moved(&before, &remote, "a", "q", &[]);
}

/// Bytes syncd's rsyncs reported sending to target `name` so far.
fn sent_bytes(port: u16, name: &str) -> f64 {
    let (_, text) = get(&format!("http://127.0.0.1:{port}/metrics"));
    sample(
        &text,
        &format!(r#"syncd_sent_bytes_total{{root="data",target="{name}"}}"#),
    )
}

/// `n` MiB, different for each `seed`.
fn big(n: u32, seed: u32) -> Vec<u8> {
    (0..n << 20)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A 4 MiB file to be renamed in its directory, and three of 2 MiB to be moved to other
/// directories (one keeping its name, one renamed, one moved down).
fn file_moves_tree(src: &Path) {
    write(&src.join("dir/big"), &big(4, 0));
    write(&src.join("a/same-name"), &big(2, 1));
    write(&src.join("a/x/renamed"), &big(2, 2));
    write(&src.join("top"), &big(2, 3));
    std::fs::create_dir_all(src.join("b/deeper")).unwrap();
}

/// The renames and moves of [`file_moves_tree`]: the target ends as the source, a file that
/// kept its name is linked at the target, and (with `port`, the metrics' HTTP port) fewer than
/// 512 KiB of the 10 MiB were sent to target `name`.
fn files_renamed_and_moved_send_no_data(
    env: &Env,
    dest: &Path,
    d: &Syncd,
    name: &str,
    port: Option<u16>,
) {
    let before = inodes(dest);
    let sent = port.map(|p| sent_bytes(p, name));
    let mv = |a: &str, b: &str| std::fs::rename(env.src.join(a), env.src.join(b)).unwrap();
    mv("dir/big", "dir/big.renamed");
    mv("a/same-name", "b/same-name");
    mv("a/x/renamed", "b/deeper/new-name");
    mv("top", "a/x/top-moved-down");
    d.settle();
    assert_same_tree(&env.src, dest);
    assert_eq!(
        inodes(dest).get(&b"b/same-name"[..]),
        before.get(&b"a/same-name"[..]),
        "a file that kept its name is linked"
    );
    if let (Some(port), Some(sent)) = (port, sent) {
        let sent = sent_bytes(port, name) - sent;
        // A file renamed into another directory takes its old name there as the basis
        // (`--fuzzy --fuzzy` with `--link-dest`). rsync 3.2 finds no such basis in the
        // target's root (`--link-dest=../../`: `top` moved down is sent whole, 2 MiB) and may
        // fail the run ("failed verification", exit 23): then syncd says so and pushes the two
        // renamed files (4 MiB) plainly.
        let fell_back = d.log.text().contains("file moves failed");
        let mib = match (fell_back, rsync_version() < (3, 3, 0)) {
            (true, _) => 4.5,
            (false, true) => 2.5,
            (false, false) => 0.5,
        };
        let bound = mib * 1024.0 * 1024.0;
        assert!(
            sent < bound,
            "10 MiB of files renamed and moved: {sent} bytes sent (moves fell back: {fell_back})"
        );
    }
}

fn http(port: u16) -> String {
    format!("[http]\nlisten = \"127.0.0.1:{port}\"")
}

#[test]
fn a_file_renamed_in_its_directory_is_sent_as_a_delta_against_its_old_name() {
    let port = free_port();
    let (env, m, _rd, d) = daemon_setup_top(&http(port), "", "", |src| {
        write(&src.join("dir/big"), &big(4, 0))
    });
    let before = sent_bytes(port, "d1");
    std::fs::rename(env.src.join("dir/big"), env.src.join("dir/big.renamed")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &m);
    let sent = sent_bytes(port, "d1") - before;
    assert!(
        sent < 256.0 * 1024.0,
        "a 4 MiB file renamed in place: {sent} bytes sent"
    );
}

#[test]
fn files_renamed_and_moved_to_other_directories_are_linked_or_sent_as_deltas_to_a_daemon() {
    let port = free_port();
    let (env, m, _rd, d) = daemon_setup_top(&http(port), "", "", file_moves_tree);
    files_renamed_and_moved_send_no_data(&env, &m, &d, "d1", Some(port));
}

#[test]
fn files_renamed_and_moved_to_other_directories_are_linked_or_sent_as_deltas_over_ssh() {
    let env = Env::new();
    let port = free_port();
    let sshd = Sshd::start(env.dir.path());
    let remote = module(&env, "remote");
    file_moves_tree(&env.src);
    let cfg = env.config_top(&http(port), "", &sshd.target("s1", &remote));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    files_renamed_and_moved_send_no_data(&env, &remote, &d, "s1", Some(port));
}

#[test]
fn files_renamed_and_moved_to_other_directories_reach_a_local_target() {
    // rsync copies whole files between local directories (no delta): only the link of a file
    // that kept its name is asserted, no bytes.
    let env = Env::new();
    file_moves_tree(&env.src);
    let d = Syncd::start(&env.local_config(""), &env.socket);
    d.settle();
    files_renamed_and_moved_send_no_data(&env, &env.dst, &d, "local", None);
}

#[test]
fn a_file_moved_into_a_directory_that_moves_on_or_goes_before_the_push_still_converges() {
    let (env, m, _rd, d) = daemon_setup("", "", |src| {
        tree(&src.join("a"), 2);
        std::fs::create_dir_all(src.join("b")).unwrap();
        std::fs::create_dir_all(src.join("gone")).unwrap();
    });
    assert!(d.ctl(&["pause"]).status.success());
    // The directories the files went to are not there any more when the target resumes.
    std::fs::rename(env.src.join("a/sub0/f0"), env.src.join("b/f0")).unwrap();
    std::fs::rename(env.src.join("b"), env.src.join("c")).unwrap();
    std::fs::rename(env.src.join("a/sub1/f1"), env.src.join("gone/f1")).unwrap();
    std::fs::remove_dir_all(env.src.join("gone")).unwrap();
    d.wait_status(std::time::Duration::from_secs(10), |s| {
        target_in(s, "d1").is_some_and(|t| t["pending"].as_u64() > Some(0))
    });
    assert!(d.ctl(&["resume"]).status.success());
    d.settle();
    assert_same_tree(&env.src, &m);
}

#[test]
fn a_file_renamed_over_an_existing_file_replaces_it_and_its_old_name_goes() {
    let (env, m, _rd, d) = daemon_setup("", "", |src| {
        write(&src.join("d/x"), &[b'x'; 300_000]);
        write(&src.join("d/y"), &[b'y'; 200_000]);
    });
    std::fs::rename(env.src.join("d/x"), env.src.join("d/y")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &m);
    assert!(!m.join("d/x").exists());
}

/// Every order of renames of item 2 against one target: chains, a swap, a rename over an empty
/// directory and one over a file, writes right after, a rename into an excluded name and out of the root; the
/// target ends exactly as the source, and a chain's files are linked, not sent again.
fn renames_in_every_order_converge(env: &Env, dest: &Path, d: &Syncd) {
    let before = inodes(dest);
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    std::fs::rename(env.src.join("b"), env.src.join("c")).unwrap();
    std::fs::rename(env.src.join("x"), env.src.join("tmp")).unwrap();
    std::fs::rename(env.src.join("y"), env.src.join("x")).unwrap();
    std::fs::rename(env.src.join("tmp"), env.src.join("y")).unwrap();
    std::fs::rename(env.src.join("w"), env.src.join("empty")).unwrap();
    write(&env.src.join("empty/sub0/f0"), b"rewritten at once");
    std::fs::rename(env.src.join("e"), env.src.join("e.tmp")).unwrap();
    std::fs::rename(env.src.join("o"), env.dir.path().join("out")).unwrap();
    std::fs::rename(env.src.join("f/x"), env.src.join("f/y")).unwrap();
    d.settle();
    assert!(!dest.join("f/x").exists(), "renamed over f/y");
    assert!(!dest.join("e").exists() && !dest.join("e.tmp").exists());
    // Excluded, never at the target.
    std::fs::remove_dir_all(env.src.join("e.tmp")).unwrap();
    assert_same_tree(&env.src, dest);
    assert_moved(&before, dest, "a", "c", &[]);
    assert_moved(&before, dest, "w", "empty", &["sub0/f0"]);
}

fn every_order_tree(src: &Path) {
    for d in ["a", "x", "y", "w", "e", "o"] {
        tree(&src.join(d), 2);
    }
    std::fs::create_dir(src.join("empty")).unwrap();
    write(&src.join("f/x"), &[b'x'; 300_000]);
    write(&src.join("f/y"), &[b'y'; 200_000]);
}

#[test]
fn renames_in_every_order_converge_on_a_local_target() {
    let env = Env::new();
    every_order_tree(&env.src);
    let d = Syncd::start(&env.local_config("exclude = [\"*.tmp\"]"), &env.socket);
    d.settle();
    renames_in_every_order_converge(&env, &env.dst, &d);
}

#[test]
fn renames_in_every_order_converge_on_an_ssh_target() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = module(&env, "remote");
    every_order_tree(&env.src);
    let cfg = env.config("exclude = [\"*.tmp\"]", &sshd.target("s1", &remote));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    renames_in_every_order_converge(&env, &remote, &d);
}

#[test]
fn renames_in_every_order_converge_on_a_daemon_target() {
    let (env, m, _rd, d) = daemon_setup("exclude = [\"*.tmp\"]", "", every_order_tree);
    renames_in_every_order_converge(&env, &m, &d);
}
