//! The `syncd` binary itself, without a config or a daemon. Keeping an integration test in this
//! package also makes `cargo test --workspace` build `target/<profile>/syncd`, which the tests in
//! `tests/` run (cargo builds a package's binaries only for its own integration tests).

use std::process::Command;

#[test]
fn version_names_the_program_and_its_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("syncd {}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
}

#[test]
fn unknown_flag_is_refused_by_the_parser_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncd"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
}
