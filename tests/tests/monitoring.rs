//! What packaging/monitoring ships: the Prometheus alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), and every metric the rules and the Grafana
//! dashboard query is one a running syncd really exports at `/metrics`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use syncd_tests::*;

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "syncd-alerts.yml"]);
    promtool(&["test", "rules", "syncd-alerts.test.yml"]);
}

/// Every `syncd_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("syncd_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

/// The `expr` of every panel target of the dashboard.
fn dashboard_exprs() -> String {
    let text = std::fs::read_to_string(monitoring().join("syncd-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = d["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut exprs = String::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    exprs
}

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    let env = Env::new();
    let port = free_port();
    let cfg = env.config_top(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "",
        &local_target("local", &env.dst, ""),
    );
    let d = Syncd::start(&cfg, &env.socket);
    write(
        &env.src.join("a/f"),
        b"delivered once, so every counter is there",
    );
    d.settle();
    let (code, exported) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(code, 200);
    let exported: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let rules = std::fs::read_to_string(monitoring().join("syncd-alerts.yml")).unwrap();
    let queried: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(metric_names(&dashboard_exprs()))
        .collect();
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
}
