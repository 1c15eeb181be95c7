//! Symlinks arrive byte for byte, whatever the transfer that carries them. An rsync daemon
//! without chroot rewrites a symlink against its depth in the transfer (`../x` pushed in a
//! transfer rooted at `sub/` arrives as `x`): a subdirectory's full sync, a moved directory and
//! files moved between directories must not carry them rooted below the module's root.

use std::path::Path;

use syncd_tests::*;

/// Every symlink below `root` with its target, as bytes.
fn links(root: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter_map(|(p, n)| match n {
            Node::Symlink(to) => Some((p, to)),
            _ => None,
        })
        .collect()
}

fn assert_links_exact(src: &Path, dst: &Path, when: &str) {
    let (want, got) = (links(src), links(dst));
    let show = |l: &[(Vec<u8>, Vec<u8>)]| {
        l.iter()
            .map(|(p, t)| {
                format!(
                    "{} -> {}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(t)
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&got), show(&want), "{when}");
}

#[test]
fn climbing_symlinks_arrive_exactly_at_a_daemon_without_chroot_through_resync_moves_and_file_moves()
{
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let rd = RsyncDaemon::start(env.dir.path(), &module, "use chroot = no\n");
    let ln = |to: &str, at: &str| {
        let p = env.src.join(at);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(to, p).unwrap();
    };
    write(&env.src.join("x"), b"x");
    ln("../x", "sub/l");
    ln("../../x", "sub/deep/l2");
    ln("../x", "a/s");
    ln("../../x", "a/in/s2");
    write(&env.src.join("a/f"), b"a file beside them");
    std::fs::create_dir_all(env.src.join("other/deeper")).unwrap();
    let cfg = env.config("", &rd.target("d1", ""));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_links_exact(&env.src, &module, "after the first full sync");

    // A full sync of a subdirectory.
    std::fs::remove_dir_all(module.join("sub")).unwrap();
    let out = d.ctl(&[
        std::ffi::OsStr::new("resync"),
        env.src.join("sub").as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.settle();
    assert_links_exact(&env.src, &module, "after resync sub");

    // A directory renamed (a move where --link-dest links, a plain push where it does not).
    std::fs::rename(env.src.join("a"), env.src.join("b")).unwrap();
    d.settle();
    assert_links_exact(&env.src, &module, "after mv a b");
    // Files (symlinks) moved to other directories (where they still point inside the root: a
    // daemon without chroot clips any link that leaves the module, whatever the transfer).
    std::fs::rename(env.src.join("sub/l"), env.src.join("other/l")).unwrap();
    std::fs::rename(env.src.join("b/in/s2"), env.src.join("other/deeper/s2")).unwrap();
    d.settle();
    assert_links_exact(&env.src, &module, "after symlinks moved to other/");
    assert_same_tree(&env.src, &module);
}
