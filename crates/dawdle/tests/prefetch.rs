//! Jobs claimed ahead of free slots: held while fast jobs run, put back when
//! a slow job keeps them waiting or the worker stops, never counted as an
//! attempt they did not make, and timed from when they really started.
//!
//! Every scenario runs one slot: a few hundred no-op jobs teach the worker
//! that jobs finish fast (so it claims ahead), then a slow job takes the slot
//! while the jobs claimed behind it wait.

mod common;

use std::time::Duration;

use dawdle::testing::{eventually, TestDatabase};
use dawdle::{
    defer_batch, JobContext, JobOutcome, NewJob, Registry, Task, TaskError, Worker, WorkerConfig,
    WorkerHandle, WorkerReport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

const BEFORE: usize = 300;
const AFTER: usize = 300;

/// Sleeps, after writing down in `slow_started` that it started: a job
/// claimed is `doing` whether it runs or waits in the worker, so the tests
/// need the job itself to say when it runs.
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    seconds: f64,
}

impl Task for Slow {
    const NAME: &'static str = "test.slow";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("INSERT INTO slow_started (job_id) VALUES ($1)")
            .bind(ctx.job_id)
            .execute(ctx.pool())
            .await?;
        tokio::time::sleep(Duration::from_secs_f64(self.seconds)).await;
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry.register::<Slow>();
    registry
}

/// `BEFORE` no-op jobs, one `test.slow` of `seconds`, `AFTER` no-op jobs,
/// in claim order; returns the slow job's id.
async fn fast_slow_fast(pool: &PgPool, seconds: f64) -> i64 {
    sqlx::query("CREATE TABLE slow_started (job_id bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let noop = || NewJob::new("dawdle.noop", json!({})).unwrap();
    defer_batch(pool, &vec![noop(); BEFORE]).await.unwrap();
    let slow = defer_batch(
        pool,
        &[NewJob::new("test.slow", json!({ "seconds": seconds })).unwrap()],
    )
    .await
    .unwrap()[0];
    defer_batch(pool, &vec![noop(); AFTER]).await.unwrap();
    slow
}

fn one_slot(hold_limit: Duration) -> WorkerConfig {
    WorkerConfig::default()
        .concurrency(1)
        .hold_limit(hold_limit)
        .poll_interval(Duration::from_millis(100))
}

async fn run_one_shot(pool: &PgPool, config: WorkerConfig) -> WorkerReport {
    let worker = Worker::new(pool.clone(), registry(), config.one_shot(true)).start();
    tokio::time::timeout(Duration::from_secs(60), worker.join())
        .await
        .expect("the one-shot worker finished within 60 s")
        .unwrap()
}

async fn scalar<T>(pool: &PgPool, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Event types of every job that has a `deferred_for_retry` event, by job.
async fn put_back_histories(pool: &PgPool) -> Vec<Vec<String>> {
    sqlx::query_scalar(
        "SELECT array_agg(type::text ORDER BY id) FROM procrastinate_events
         WHERE job_id IN (SELECT job_id FROM procrastinate_events WHERE type = 'deferred_for_retry')
         GROUP BY job_id ORDER BY job_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn jobs_held_behind_a_slow_job_are_put_back_after_the_hold_limit() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let slow = fast_slow_fast(&pool, 1.0).await;

    let report = run_one_shot(&pool, one_slot(Duration::from_millis(300))).await;

    assert_eq!(report.succeeded as usize, BEFORE + 1 + AFTER);
    assert_eq!((report.retried, report.failed), (0, 0));
    // Every job ran once, and a put-back was not an attempt.
    let (jobs, succeeded_once): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1)
         FROM procrastinate_jobs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((jobs, succeeded_once), (601, 601));
    assert_eq!(
        scalar::<i64>(
            &pool,
            "SELECT count(*) FROM procrastinate_events WHERE type = 'error'"
        )
        .await,
        0
    );
    // The jobs claimed behind the slow one went back, then ran.
    let put_back = put_back_histories(&pool).await;
    assert!(
        !put_back.is_empty(),
        "no job was held behind the slow one and put back"
    );
    for history in &put_back {
        assert_eq!(
            history,
            &[
                "deferred",
                "started",
                "deferred_for_retry",
                "started",
                "succeeded"
            ]
        );
    }
    let earliest_put_back: i64 = scalar(
        &pool,
        "SELECT min(job_id) FROM procrastinate_events WHERE type = 'deferred_for_retry'",
    )
    .await;
    assert!(earliest_put_back > slow);
}

#[tokio::test]
async fn a_held_job_is_timed_from_when_it_started_not_from_its_claim() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let slow = fast_slow_fast(&pool, 1.0).await;

    let report = run_one_shot(&pool, one_slot(Duration::from_secs(30))).await;
    assert_eq!(report.succeeded as usize, BEFORE + 1 + AFTER);

    // Jobs after the slow one were claimed while it ran (their `started`
    // event, written by the claim, precedes its end) and so waited for the
    // slot; nothing was put back within a 30 s hold limit.
    let claimed_while_slow_ran: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM procrastinate_events AS e, procrastinate_jobs AS s
         WHERE s.id = $1 AND e.job_id > s.id AND e.type = 'started' AND e.at < s.finished_at",
    )
    .bind(slow)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        claimed_while_slow_ran > 0,
        "no job was claimed ahead while the slow job ran"
    );
    assert!(put_back_histories(&pool).await.is_empty());
    // Yet each no-op job's recorded run is short: started_at is when it
    // left the worker's hold, not when it was claimed.
    let (longest_noop, slow_run): (f64, f64) = sqlx::query_as(
        "SELECT max(EXTRACT(EPOCH FROM finished_at - started_at)::float8)
                    FILTER (WHERE task_name = 'dawdle.noop'),
                max(EXTRACT(EPOCH FROM finished_at - started_at)::float8)
                    FILTER (WHERE task_name = 'test.slow')
         FROM procrastinate_jobs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(slow_run >= 1.0, "the slow job ran {slow_run} s");
    assert!(
        longest_noop < 0.5,
        "a no-op job is recorded as running {longest_noop} s: its wait for the slot was counted"
    );
    assert_eq!(
        scalar::<i64>(
            &pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE started_at > finished_at"
        )
        .await,
        0
    );
}

/// Starts a one-slot worker with a long hold limit on `fast_slow_fast`
/// with a minute-long slow job, and waits until it holds jobs behind it.
/// Returns the slow job's id and the worker.
async fn holding_behind_a_slow_job(pool: &PgPool) -> (i64, WorkerHandle) {
    let slow = fast_slow_fast(pool, 60.0).await;
    let worker = Worker::new(
        pool.clone(),
        registry(),
        one_slot(Duration::from_secs(60)).shutdown_timeout(Duration::from_millis(200)),
    )
    .start();
    eventually(
        Duration::from_secs(30),
        "jobs claimed behind the slow one",
        || async {
            let (slow_running, held): (bool, i64) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM slow_started WHERE job_id = $1),
                        (SELECT count(*) FROM procrastinate_jobs
                         WHERE status = 'doing' AND id > $1)",
            )
            .bind(slow)
            .fetch_one(pool)
            .await
            .unwrap();
            slow_running && held > 0
        },
    )
    .await;
    (slow, worker)
}

#[tokio::test]
async fn stopping_puts_held_jobs_back_without_counting_an_attempt() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let (slow, worker) = holding_behind_a_slow_job(&pool).await;

    let report = worker.shutdown().await.unwrap();

    assert_eq!(report.interrupted, 1);
    let (status, attempts, error): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT j.status::text, j.attempts, e.error FROM procrastinate_jobs j
         LEFT JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'error'
         WHERE j.id = $1",
    )
    .bind(slow)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts, error.as_deref()),
        ("todo", 1, Some("WorkerShutdown"))
    );
    // Nothing is left claimed; every job that did not run waits as it was.
    let (doing, waiting, waiting_untouched, succeeded): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'doing'),
                count(*) FILTER (WHERE status = 'todo' AND id <> $1),
                count(*) FILTER (WHERE status = 'todo' AND id <> $1 AND attempts = 0
                                 AND started_at IS NULL AND worker_id IS NULL),
                count(*) FILTER (WHERE status = 'succeeded')
         FROM procrastinate_jobs",
    )
    .bind(slow)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(doing, 0);
    assert_eq!(waiting, waiting_untouched);
    assert_eq!(succeeded as u64, report.succeeded);
    assert_eq!(succeeded + waiting + 1, 601);
    let put_back = put_back_histories(&pool).await;
    let held: Vec<&Vec<String>> = put_back
        .iter()
        .filter(|history| history.len() == 3)
        .collect();
    assert!(!held.is_empty(), "no held job was put back");
    for history in held {
        assert_eq!(history, &["deferred", "started", "deferred_for_retry"]);
    }
    assert_eq!(
        scalar::<i64>(&pool, "SELECT count(*) FROM procrastinate_workers").await,
        0
    );
}

#[tokio::test]
async fn an_abort_request_for_a_held_job_stops_it_before_it_runs() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let (slow, worker) = holding_behind_a_slow_job(&pool).await;
    let mut events = worker.events();
    let held: i64 = sqlx::query_scalar(
        "SELECT max(id) FROM procrastinate_jobs WHERE status = 'doing' AND id > $1",
    )
    .bind(slow)
    .fetch_one(&pool)
    .await
    .unwrap();

    sqlx::query("SELECT procrastinate_cancel_job_v1($1, true, false)")
        .bind(held)
        .execute(&pool)
        .await
        .unwrap();
    let recorded = common::recorded(
        &mut events,
        Duration::from_secs(10),
        "the held job to be aborted",
        |seen| common::all_recorded(seen, &[held]),
    )
    .await;
    assert_eq!(common::outcomes_of(&recorded, held), [JobOutcome::Aborted]);
    assert_eq!(common::status(&pool, held).await, "aborted");
    let report = worker.shutdown().await.unwrap();

    assert_eq!(report.aborted, 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM procrastinate_jobs WHERE id = $1")
        .bind(held)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "the aborted job never ran");
    assert_eq!(
        common::event_types(&pool, held).await,
        ["deferred", "started", "abort_requested", "aborted"]
    );
}
