//! A worker built with `Worker::builder` and started with `Worker::start`:
//! its configuration is checked when built, its handle says when it is
//! ready, reports each outcome once it is recorded, and stops it gently or
//! at once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use dawdle::testing::TestDatabase;
use dawdle::{
    defer_batch, defer_task, ErrorKind, JobContext, JobOutcome, NewJob, Registry, Task, TaskError,
    Worker, WorkerConfig, WorkerError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

/// Says it started (through the registry's shared `Notify`), then runs a
/// minute unless stopped.
#[derive(Serialize, Deserialize)]
struct Long {}

impl Task for Long {
    const NAME: &'static str = "test.long";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        if let Some(started) = ctx.state::<Arc<Notify>>() {
            started.notify_one();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry
}

#[tokio::test]
async fn the_builder_refuses_settings_that_contradict_each_other() {
    let db = TestDatabase::with_schema().await;
    let build = |config: WorkerConfig| {
        Worker::builder(db.pool().clone(), registry())
            .config(config)
            .build()
    };
    assert!(matches!(
        build(WorkerConfig::default().concurrency(0)),
        Err(WorkerError::NoConcurrency)
    ));
    assert!(matches!(
        build(WorkerConfig::default().queues(Some(Vec::new()))),
        Err(WorkerError::NoQueues)
    ));
    let error = build(
        WorkerConfig::default()
            .heartbeat_interval(Duration::from_secs(30))
            .stalled_after(Duration::from_secs(10)),
    )
    .unwrap_err();
    assert!(error.to_string().contains("heartbeat interval"), "{error}");
    assert!(build(WorkerConfig::default()).is_ok());
}

#[tokio::test]
async fn a_started_worker_is_ready_reports_recorded_outcomes_and_stops() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let handle = Worker::builder(pool.clone(), registry())
        .configure(|config| config.poll_interval(Duration::from_millis(100)))
        .build()
        .unwrap()
        .start();
    let worker_id = handle.ready().await.unwrap();
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers WHERE id = $1")
            .bind(worker_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(registered, 1);

    let mut events = handle.events();
    let ids = defer_batch(
        pool,
        &[
            NewJob::new("dawdle.noop", json!({})).unwrap(),
            NewJob::new("dawdle.fail", json!({"kind": "SmtpDown", "message": "no"})).unwrap(),
        ],
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event for each job")
            .unwrap();
        // Recorded before it is announced.
        let status = common::status(pool, event.job_id).await;
        match &event.outcome {
            JobOutcome::Succeeded => assert_eq!(status, "succeeded"),
            JobOutcome::Failed { kind, message } => {
                assert_eq!(status, "failed");
                assert_eq!(kind, &ErrorKind::Other("SmtpDown".into()));
                assert_eq!(message, "no");
            }
            other => panic!("unexpected {other:?}"),
        }
        seen.push(event.job_id);
    }
    seen.sort_unstable();
    assert_eq!(seen, ids);
    let report = handle.shutdown().await.unwrap();
    assert_eq!((report.succeeded, report.failed), (1, 1));
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "unregistered on stop");
}

#[tokio::test]
async fn stop_now_interrupts_running_jobs_and_puts_them_back() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let started = Arc::new(Notify::new());
    let mut registry = registry();
    registry.register::<Long>().with_state(started.clone());
    let handle = Worker::builder(pool.clone(), registry)
        .configure(|config| config.shutdown_timeout(Duration::from_secs(60)))
        .build()
        .unwrap()
        .start();
    handle.ready().await.unwrap();
    let ids = [defer_task(pool, &Long {}).await.unwrap()];
    // Running, not only claimed: a claimed job not started yet is put back
    // without counting as interrupted.
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the job to start");
    handle.stop();
    // Gently: it would wait up to a minute; now: it does not.
    handle.stop_now();
    let report = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("stop_now does not wait for the job")
        .unwrap();
    assert_eq!(report.interrupted, 1);
    assert_eq!(common::status(pool, ids[0]).await, "todo");
    let kind: String = sqlx::query_scalar(
        "SELECT error FROM procrastinate_events WHERE job_id = $1 AND type = 'error'",
    )
    .bind(ids[0])
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(kind, "WorkerShutdown");
}

#[tokio::test]
async fn ready_fails_for_a_worker_that_never_starts() {
    let db = TestDatabase::with_schema().await;
    let handle = Worker::new(
        db.pool().clone(),
        registry(),
        WorkerConfig::default().concurrency(0),
    )
    .start();
    assert!(handle.ready().await.is_err());
    assert!(matches!(
        handle.join().await,
        Err(WorkerError::NoConcurrency)
    ));
}
