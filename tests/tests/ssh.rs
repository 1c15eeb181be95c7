//! End-to-end against an ssh target: a real sshd on 127.0.0.1 with its own host key and an
//! authorized client key, started by the fixture.

use syncd_tests::*;

#[test]
fn create_rename_delete_reach_an_ssh_target() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    write(&env.src.join("initial.txt"), b"there before start");
    let cfg = env.config("", &sshd.target("s1", &remote));
    let d = Syncd::start(&cfg, &env.socket);
    d.settle();
    assert_same_tree(&env.src, &remote);

    write(&env.src.join("dir/a.txt"), b"a");
    write(&env.src.join("dir/sub/b.txt"), b"b");
    write(&env.src.join("with space; $(echo no).txt"), b"s");
    d.settle();
    assert_same_tree(&env.src, &remote);

    std::fs::rename(env.src.join("dir"), env.src.join("dir2")).unwrap();
    std::fs::rename(env.src.join("initial.txt"), env.src.join("renamed.txt")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &remote);

    std::fs::remove_dir_all(env.src.join("dir2")).unwrap();
    std::fs::remove_file(env.src.join("renamed.txt")).unwrap();
    d.settle();
    assert_same_tree(&env.src, &remote);
    assert!(!env.dir.path().join("no").exists());
}

#[test]
fn ssh_key_rejected_is_reported() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path());
    std::fs::write(env.dir.path().join("authorized_keys"), "").unwrap();
    let remote = env.dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let cfg = env.config("", &sshd.target("s1", &remote));
    let d = Syncd::start(&cfg, &env.socket);
    let st = d.wait_backoff("s1");
    assert_eq!(st["state"], "backoff");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{st}"
    );
}
