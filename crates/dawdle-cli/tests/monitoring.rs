//! The shipped monitoring (docs/monitoring/): alert rules valid for
//! Prometheus, each alert proven to fire on its warning sign and to stay
//! quiet on a healthy queue (`promtool test rules`); a Grafana dashboard
//! whose every query is valid PromQL; and every metric either uses one that
//! dawdle exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use dawdle::admin::gauges::names as gauges;
use dawdle::worker::metrics::names as worker;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring")
}

/// `promtool`, or `None` with a loud message when it is not installed
/// (the test command installs Debian's `prometheus` when it runs as root).
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        eprintln!(
            "\n!!! SKIPPED: promtool is not installed (apt-get install prometheus); the alert \
             rules were not checked !!!\n"
        );
    }
    found
}

fn run(promtool: &Path, args: &[&str]) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_fire_on_their_warning_signs_only() {
    let Some(promtool) = promtool() else {
        return;
    };
    run(&promtool, &["check", "rules", "alerts.yml"]);
    run(&promtool, &["test", "rules", "alerts.test.yml"]);
}

/// Every metric name dawdle exports.
const EXPORTED: &[&str] = &[
    worker::JOBS_STARTED,
    worker::JOB_OUTCOMES,
    worker::ATTEMPT_DURATION,
    worker::QUEUE_WAIT,
    worker::CLAIM_SIZE,
    worker::CLAIM_DURATION,
    worker::COMPLETION_SIZE,
    worker::COMPLETION_DURATION,
    worker::JOBS_HELD,
    worker::JOBS_RUNNING,
    worker::JOBS_RESCUED,
    worker::DATABASE_ERRORS,
    gauges::QUEUE_JOBS,
    gauges::OLDEST_WAITING,
    gauges::STUCK_DOING,
    gauges::FAILED_LAST_HOUR,
    gauges::PROCESSED_LAST_HOUR,
    gauges::LIVE_WORKERS,
    gauges::GAUGES_UP,
    gauges::QUEUE_PAUSED,
];

/// The `dawdle_*` metric names `text` uses (a histogram's `_bucket`,
/// `_sum` and `_count` series under its own name); fails on any other.
fn metrics_used(text: &str, what: &str) -> usize {
    let mut used = 0;
    let mut rest = text;
    while let Some(at) = rest.find("dawdle_") {
        let series: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                series
                    .strip_suffix(suffix)
                    .filter(|base| EXPORTED.contains(base))
            })
            .unwrap_or(&series);
        assert!(
            EXPORTED.contains(&name),
            "{what} uses {series}, which dawdle does not export"
        );
        used += 1;
        rest = &rest[at + series.len()..];
    }
    used
}

#[test]
fn the_alert_rules_use_only_metrics_dawdle_exports() {
    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yml")).unwrap();
    let used: usize = rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| metrics_used(line, "alerts.yml"))
        .sum();
    assert!(used >= 7, "the rules use dawdle's metrics");
}

/// The dashboard's queries, by panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "dawdle-queue");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has queries");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    assert!(queries.len() >= 14, "{queries:?}");
    queries
}

#[test]
fn the_dashboard_queries_only_metrics_dawdle_exports() {
    for (title, expr) in dashboard_queries() {
        assert!(metrics_used(&expr, &title) > 0, "{title}: {expr}");
    }
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool() else {
        return;
    };
    // promtool parses PromQL in rule files: each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{index}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("dawdle-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard-queries.yml");
    std::fs::write(&file, rules).unwrap();
    let output = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
