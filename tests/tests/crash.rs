//! `kill -9` of syncd at random points of its work under a continuous writer, restarted each
//! time: nothing is lost. The long version is the soak example (see docs/reliability.md).

use syncd_tests::soak::{kill9_cycles, stop_cycles};
use syncd_tests::*;

#[test]
fn kill_9_cycles_under_a_continuous_writer_lose_nothing() {
    let env = Env::new();
    let cfg = env.local_config("");
    let r = kill9_cycles(&env, &cfg, &env.dst, 6, 0xc0ffee);
    println!(
        "cycles, paths written, paths lost: {}, {}, {}",
        r.cycles, r.ops, r.lost
    );
    assert_eq!(r.lost, 0);
}

#[test]
fn kill_9_cycles_against_an_rsync_daemon_lose_nothing() {
    let env = Env::new();
    let module = env.dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let daemon = RsyncDaemon::start(env.dir.path(), &module, "");
    let cfg = env.config("", &daemon.target("remote", ""));
    let r = kill9_cycles(&env, &cfg, &module, 5, 0xdecaf);
    println!(
        "cycles, paths written, paths lost: {}, {}, {}",
        r.cycles, r.ops, r.lost
    );
    assert_eq!(r.lost, 0);
}

#[test]
fn stop_and_restart_cycles_under_a_continuous_writer_catch_up_and_lose_nothing() {
    let env = Env::new();
    let cfg = env.local_config("");
    let r = stop_cycles(&env, &cfg, &env.dst, 6, 0xfeed);
    println!(
        "cycles, paths written, paths lost: {}, {}, {}",
        r.cycles, r.ops, r.lost
    );
    assert_eq!(r.lost, 0);
}
