//! The HTTP interface: `/status` is `syncctl --json status`, `/metrics` passes `promtool check
//! metrics` and agrees with status, and control actions need the configured token.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use syncd_tests::*;

fn post(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::post(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

fn start_with_http(env: &Env, http: &str) -> (Syncd, String) {
    let port = free_port();
    let cfg = env.config_top(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{http}"),
        "",
        &local_target("local", &env.dst, ""),
    );
    // The [http] table must come after every top-level key: config_top puts its lines last.
    let d = Syncd::start(&cfg, &env.socket);
    (d, format!("http://127.0.0.1:{port}"))
}

#[test]
fn status_is_syncctls_json_and_metrics_pass_promtool_and_agree_with_it() {
    let env = Env::new();
    let (d, base) = start_with_http(&env, "");
    for i in 0..25 {
        write(&env.src.join(format!("d{}/f{i}.txt", i % 3)), &[b'x'; 1000]);
    }
    d.settle();
    let (code, body) = get(&format!("{base}/status"));
    assert_eq!(code, 200, "{body}");
    let mut http: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut ctl: serde_json::Value =
        serde_json::from_slice(&d.ctl(&["--json", "status"]).stdout).unwrap();
    for v in [&mut http, &mut ctl] {
        v.as_object_mut().unwrap().remove("uptime_ms");
    }
    assert_eq!(http, ctl);

    let (code, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200, "{metrics}");
    assert_promtool_accepts(&metrics);
    let t = &ctl["targets"][0];
    let l = r#"{root="data",target="local"}"#;
    assert_eq!(
        sample(&metrics, &format!("syncd_pending_paths{l}")),
        t["pending"].as_f64().unwrap()
    );
    assert_eq!(sample(&metrics, &format!("syncd_failed_paths{l}")), 0.0);
    assert_eq!(sample(&metrics, &format!("syncd_in_flight_paths{l}")), 0.0);
    let delivered = t["delivered"].as_f64().unwrap();
    assert!(delivered >= 25.0, "{t}");
    assert_eq!(
        sample(&metrics, &format!("syncd_delivered_paths_total{l}")),
        delivered
    );
    assert!(sample(&metrics, &format!("syncd_replication_lag_seconds_count{l}")) >= delivered);
    assert!(sample(&metrics, &format!("syncd_sent_bytes_total{l}")) >= 25_000.0);
    assert_eq!(
        sample(&metrics, r#"syncd_watches{root="data"}"#),
        ctl["roots"][0]["watches"].as_f64().unwrap()
    );
    assert!(
        metrics.contains(
            r#"syncd_rsync_runs_total{exit="0",kind="batch",root="data",target="local"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"syncd_rsync_runs_total{exit="0",kind="full",root="data",target="local"}"#),
        "{metrics}"
    );
    assert!(sample(&metrics, "syncd_journal_size_bytes") > 0.0);
    assert!(
        sample(
            &metrics,
            &format!("syncd_last_success_timestamp_seconds{l}")
        ) > 1.7e9
    );
    // Unknown paths are 404s, never a crash.
    assert_eq!(get(&format!("{base}/nope")).0, 404);
}

#[test]
fn control_over_http_needs_the_configured_token() {
    let env = Env::new();
    // Off without a token.
    {
        let (d, base) = start_with_http(&env, "");
        d.settle();
        let (code, body) = post(&format!("{base}/pause"), Some("anything-at-all-here"));
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("token_file"), "{body}");
        assert_eq!(d.target_status("local")["state"], "running");
        assert_eq!(d.stop(), Some(0));
    }
    let token = "k3y-0f-at-least-16-chars";
    let file = env.dir.path().join("http.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (d, base) = start_with_http(&env, &format!("token_file = {file:?}"));
    d.settle();
    for wrong in [None, Some("k3y-0f-at-least-16-charz"), Some("short")] {
        let (code, body) = post(&format!("{base}/pause"), wrong);
        assert_eq!(code, 401, "{wrong:?}: {body}");
    }
    assert_eq!(d.target_status("local")["state"], "running");
    let (code, body) = post(&format!("{base}/pause?target=local"), Some(token));
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.target_status("local")["state"], "paused");
    assert_eq!(
        post(&format!("{base}/pause?target=nope"), Some(token)).0,
        404
    );
    assert_eq!(post(&format!("{base}/pause?bogus=1"), Some(token)).0, 400);
    assert_eq!(post(&format!("{base}/resume"), Some(token)).0, 200);
    assert_eq!(d.target_status("local")["state"], "running");
    assert_eq!(post(&format!("{base}/retry-failed"), Some(token)).0, 200);
    write(&env.dst.join("stray.txt"), b"not at the source");
    let (code, body) = post(&format!("{base}/resync?target=local"), Some(token));
    assert_eq!(code, 200, "{body}");
    d.settle();
    assert_same_tree(&env.src, &env.dst);
    // Reading needs no token.
    assert_eq!(get(&format!("{base}/status")).0, 200);
}

#[test]
fn a_bad_http_table_is_a_clear_error_and_a_busy_port_stops_the_start() {
    let env = Env::new();
    let loose = env.dir.path().join("loose.token");
    std::fs::write(&loose, "0123456789abcdef0123").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (table, problem) in [
        ("listen = \"localhost\"", "not an address:port"),
        ("listen = \"127.0.0.1:1\"\nport = 2", "unknown field"),
        (
            &format!("listen = \"127.0.0.1:1\"\ntoken_file = {loose:?}") as &str,
            "chmod 600",
        ),
    ] {
        let cfg = env.config_top(
            &format!("[http]\n{table}"),
            "",
            &local_target("local", &env.dst, ""),
        );
        let out = Command::new(bin("syncd"))
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{table}: {err}");
        assert!(err.contains(problem), "{table}: {err}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = env.config_top(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "",
        &local_target("local", &env.dst, ""),
    );
    let out = Command::new(bin("syncd"))
        .args(["--foreground", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}
