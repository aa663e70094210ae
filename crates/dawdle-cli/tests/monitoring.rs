//! The shipped alert rules (docs/monitoring/alerts.yml): valid for
//! Prometheus, each alert proven to fire on its warning sign and to stay
//! quiet on a healthy queue (`promtool test rules`), and every metric they
//! use one that dawdle exports.

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

#[test]
fn the_alert_rules_use_only_metrics_dawdle_exports() {
    let exported = [
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
    ];
    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yml")).unwrap();
    let mut used = 0;
    for expr_line in rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
    {
        let mut rest = expr_line;
        while let Some(at) = rest.find("dawdle_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&name.as_str()),
                "alerts.yml uses {name}, which dawdle does not export"
            );
            used += 1;
            rest = &rest[at + name.len()..];
        }
    }
    assert!(used >= 7, "the rules use dawdle's metrics");
}
