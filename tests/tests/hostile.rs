//! Hostile control clients: floods of connections, random and truncated frames. The daemon must
//! keep serving `syncctl` and replicating, with bounded memory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use syncd_tests::soak::Rng;
use syncd_tests::*;

fn start(env: &Env) -> Syncd {
    let d = Syncd::start(&env.local_config(""), &env.socket);
    d.settle();
    d
}

/// Still serving: `status` answers and a new file reaches the target.
fn assert_serving(env: &Env, d: &Syncd, name: &str) {
    let out = d.ctl(&["status"]);
    assert!(
        out.status.success(),
        "status refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&env.src.join(name), name.as_bytes());
    d.settle();
    assert_same_tree(&env.src, &env.dst);
}

fn hello() -> Vec<u8> {
    syncd_proto::encode_frame(
        &syncd_proto::Request::Hello {
            protocol: syncd_proto::PROTOCOL_VERSION,
        },
        1024,
    )
    .unwrap()
}

#[test]
fn a_thousand_silent_connections_neither_lock_out_syncctl_nor_grow_memory() {
    // The test process holds the thousand client ends.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(4096);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, hard).unwrap();
    let env = Env::new();
    let d = start(&env);
    let pid = d.child.id();
    let before = rss_kib(pid);
    let silent: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&env.socket).expect("connect"))
        .collect();
    // Half of them also greet and then say nothing more.
    for mut s in silent.iter().step_by(2) {
        let _ = s.write_all(&hello());
    }
    assert_serving(&env, &d, "during-the-flood.txt");
    let during = rss_kib(pid);
    println!("control flood: RSS {before} KiB before, {during} KiB with 1000 connections open");
    assert!(
        during < before + 64 * 1024,
        "memory grew from {before} to {during} KiB"
    );
    drop(silent);
    assert_serving(&env, &d, "after-the-flood.txt");
}

#[test]
fn ten_thousand_random_and_truncated_frames_are_refused_one_connection_at_a_time() {
    let env = Env::new();
    let d = start(&env);
    let pid = d.child.id();
    let before = rss_kib(pid);
    let mut rng = Rng(0x5eed_f00d);
    for i in 0..10_000 {
        let mut s = UnixStream::connect(&env.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut msg = Vec::new();
        if rng.below(2) == 0 {
            msg.extend(hello());
        }
        let body_len = rng.below(300) as usize;
        let body: Vec<u8> = (0..body_len).map(|_| rng.next_u64() as u8).collect();
        let claimed: u32 = match rng.below(4) {
            0 => body_len as u32, // well formed, random content
            1 => body_len as u32 + 1 + rng.below(1000) as u32, // truncated
            2 => u32::MAX - rng.below(1000) as u32, // ~4 GB
            _ => rng.next_u64() as u32, // anything
        };
        msg.extend(claimed.to_be_bytes());
        msg.extend(&body);
        let _ = s.write_all(&msg);
        // End of input: the daemon answers or closes, and the connection must end.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        if let Err(e) = s.read_to_end(&mut sink) {
            assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "frame {i}: connection neither answered nor closed: {e}"
            );
        }
    }
    let after = rss_kib(pid);
    println!("random frames: 10000 sent; RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 32 * 1024,
        "memory grew from {before} to {after} KiB"
    );
    assert!(!d.log.text().contains("panicked"), "{}", d.log.text());
    assert_serving(&env, &d, "after-the-frames.txt");
}
