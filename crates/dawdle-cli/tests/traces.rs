//! Trace context from the command line to an OTLP collector: `dawdle defer
//! --traceparent` stores it with the job, and `dawdle worker` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set sends each attempt's span, linked to
//! it, over OTLP/HTTP.

use std::process::{Command, Output};
use std::time::Duration;

use dawdle::testing::{eventually, OtlpSink, TestDatabase};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn dawdle(db: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dawdle"));
    command
        .args(args)
        .env("JOB_QUEUE_DATABASE_URL", db.url())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn a_deferred_traceparent_reaches_the_collector_as_the_attempts_link() {
    let db = TestDatabase::with_schema().await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let deferred = dawdle(
        &db,
        &[
            "defer",
            "dawdle.noop",
            "--traceparent",
            &traceparent,
            "--json",
        ],
        &[],
    );
    assert!(deferred.status.success(), "{deferred:?}");
    let job: serde_json::Value = serde_json::from_slice(&deferred.stdout).unwrap();
    assert_eq!(job["trace_context"]["traceparent"], traceparent.as_str());
    let id = job["id"].as_i64().unwrap();
    // Shown by `dawdle job` too.
    let shown = dawdle(&db, &["job", &id.to_string(), "--json"], &[]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&traceparent),
        "{shown:?}"
    );

    let sink = OtlpSink::start();
    let worker = dawdle(
        &db,
        &["worker", "--one-shot"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.endpoint()),
            ("OTEL_SERVICE_NAME", "worker-under-test"),
        ],
    );
    assert!(worker.status.success(), "{worker:?}");
    let logs = String::from_utf8_lossy(&worker.stderr);
    assert!(logs.contains("sending spans over OTLP"), "{logs}");

    // The exporter flushes before the worker exits; the sink's thread may
    // still be storing what it read.
    let mut attempt = None;
    eventually(Duration::from_secs(10), "the attempt's span", async || {
        attempt = sink
            .spans()
            .into_iter()
            .find(|span| span.attributes.get("messaging.message.id") == Some(&id.to_string()));
        attempt.is_some()
    })
    .await;
    let attempt = attempt.unwrap();
    assert_eq!(attempt.name, "process default");
    assert_eq!(attempt.kind, 5, "consumer");
    assert_eq!(attempt.status_code, 1, "ok");
    assert_eq!(attempt.service_name.as_deref(), Some("worker-under-test"));
    assert_eq!(attempt.attributes["dawdle.job.task"], "dawdle.noop");
    assert_eq!(attempt.attributes["messaging.destination.name"], "default");
    assert_eq!(
        attempt.links,
        [(TRACE_ID.to_string(), PARENT_ID.to_string())],
        "linked to the span that deferred the job"
    );
    assert_ne!(attempt.trace_id, TRACE_ID, "a trace of its own");
}

#[tokio::test]
async fn a_malformed_traceparent_is_refused_before_any_job_exists() {
    let db = TestDatabase::with_schema().await;
    let long = "f".repeat(5_000);
    for bad in ["00-not-a-trace-01", long.as_str()] {
        let output = dawdle(&db, &["defer", "dawdle.noop", "--traceparent", bad], &[]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("traceparent"), "{stderr}");
        assert!(stderr.len() < 600, "a bounded message: {stderr}");
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn an_unsupported_otlp_protocol_stops_the_worker_with_a_clear_error() {
    let db = TestDatabase::with_schema().await;
    let output = dawdle(
        &db,
        &["worker", "--one-shot"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http/protobuf"), "{stderr}");
}
