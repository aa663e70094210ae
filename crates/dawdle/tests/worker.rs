//! The worker against real PostgreSQL: outcomes and their history, retries,
//! errors as data, panics, notifications, shutdown, a database restart, and
//! sharing a queue with the Python worker.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use dawdle::local_pg::{LocalCluster, LocalClusterConfig};
use dawdle::testing::{drain_with, eventually, TestDatabase};
use dawdle::{
    defer, defer_batch, JobContext, JobOutcome, NewJob, Registry, RetryStrategy, Task, TaskError,
    Worker, WorkerConfig, WorkerReport,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

/// Runs for a few milliseconds and succeeds; named like the Python
/// compatibility app's task so both workers can run it.
#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    #[serde(flatten)]
    args: Map<String, Value>,
}

impl Task for Echo {
    const NAME: &'static str = "compat.echo";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// Always fails with a connection error caused by an I/O error.
#[derive(Debug, Serialize, Deserialize)]
struct Flaky {}

#[derive(Debug, thiserror::Error)]
#[error("call the CRM API")]
struct CrmDown(#[source] std::io::Error);

impl Task for Flaky {
    const NAME: &'static str = "test.flaky";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(2, Duration::ZERO)
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "crm.example.com refused",
        );
        Err(TaskError::from(CrmDown(refused)).with_kind("ConnectionError"))
    }
}

/// Fails with exponential backoff: 2 s, 4 s, 8 s.
#[derive(Debug, Serialize, Deserialize)]
struct Backoff {}

impl Task for Backoff {
    const NAME: &'static str = "test.backoff";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::exponential(3, 2.0)
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::timeout("the API took too long"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Panics {}

impl Task for Panics {
    const NAME: &'static str = "test.panic";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(3, Duration::from_secs(3600))
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        panic!("index out of bounds in the task");
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Strict {
    count: u32,
}

impl Task for Strict {
    const NAME: &'static str = "test.strict";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(5, Duration::ZERO)
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        // A follow-up job, deferred through the context's pool.
        defer(
            ctx.pool(),
            &NewJob::new("compat.echo", json!({"after": ctx.job_id}))?,
        )
        .await?;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Sleepy {
    ms: u64,
    /// Recorded in `SLEEPY_STARTED` when the run begins.
    #[serde(default)]
    tag: Option<String>,
}

/// The tags of the `test.sleepy` jobs whose run has begun. A claimed job is
/// `doing` in the table while the worker may still hold it ready, not
/// running yet: tests about running jobs wait for this instead. Tags, not
/// job ids, since every test database numbers its jobs from 1.
static SLEEPY_STARTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn sleepy_started(tag: &str) -> bool {
    SLEEPY_STARTED
        .lock()
        .unwrap()
        .iter()
        .any(|seen| seen == tag)
}

impl Task for Sleepy {
    const NAME: &'static str = "test.sleepy";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        if let Some(tag) = self.tag {
            SLEEPY_STARTED.lock().unwrap().push(tag);
        }
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<Echo>()
        .register::<Flaky>()
        .register::<Backoff>()
        .register::<Panics>()
        .register::<Strict>()
        .register::<Sleepy>();
    registry
}

fn one_shot() -> WorkerConfig {
    WorkerConfig::default()
        .one_shot(true)
        .poll_interval(Duration::from_millis(100))
}

/// Runs a one-shot worker until no runnable job is left (a minute at
/// most); its report.
async fn run_one_shot(pool: &PgPool, config: WorkerConfig) -> WorkerReport {
    let worker = Worker::new(pool.clone(), registry(), config).start();
    tokio::time::timeout(Duration::from_secs(60), worker.join())
        .await
        .expect("the one-shot worker finished within 60 s")
        .unwrap()
}

async fn job(pool: &PgPool, task: &str, args: Value) -> i64 {
    defer(pool, &NewJob::new(task, args).unwrap())
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn outcomes_are_recorded_with_history_timestamps_and_errors() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let ok = job(pool, "test.strict", json!({"count": 1})).await;
    let flaky = job(pool, "test.flaky", json!({})).await;
    let bad_args = job(pool, "test.strict", json!({"count": "many"})).await;
    let unknown = job(pool, "no.such.task", json!({})).await;

    let report = run_one_shot(pool, one_shot()).await;
    // The follow-up job deferred by test.strict ran too.
    assert_eq!(
        report,
        WorkerReport {
            succeeded: 2,
            retried: 2,
            failed: 3,
            ..WorkerReport::default()
        }
    );

    assert_eq!(
        common::event_types(pool, ok).await,
        ["deferred", "started", "succeeded"]
    );
    let (attempts, in_order): (i32, bool) = sqlx::query_as(
        "SELECT attempts, created_at <= started_at AND started_at <= finished_at
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(ok)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((attempts, in_order), (1, true));

    assert_eq!(
        common::event_types(pool, flaky).await,
        [
            "deferred",
            "started",
            "error",
            "scheduled",
            "deferred_for_retry",
            "started",
            "error",
            "scheduled",
            "deferred_for_retry",
            "started",
            "error",
            "failed"
        ]
    );
    let (status, attempts, started, finished): (String, i32, bool, bool) = sqlx::query_as(
        "SELECT status::text, attempts, started_at IS NOT NULL, finished_at IS NOT NULL
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(flaky)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts, started, finished),
        ("failed", 3, true, true)
    );
    let errors: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT error, error_message, error_traceback FROM procrastinate_events
         WHERE job_id = $1 AND type = 'error' ORDER BY id",
    )
    .bind(flaky)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].0, "ConnectionError");
    assert_eq!(errors[0].1, "call the CRM API");
    assert_eq!(
        errors[0].2,
        "ConnectionError: call the CRM API\ncaused by: crm.example.com refused"
    );

    // Arguments that do not fit fail at once, whatever the retry strategy.
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM procrastinate_events WHERE job_id = ANY($1) AND type = 'error' ORDER BY job_id",
    )
    .bind([bad_args, unknown])
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["ValidationError", "UnknownTask"]);
    for id in [bad_args, unknown] {
        assert_eq!(common::status(pool, id).await, "failed");
        assert_eq!(
            count(
                pool,
                &format!("SELECT attempts::bigint FROM procrastinate_jobs WHERE id = {id}")
            )
            .await,
            1
        );
    }

    // The runbook's "recent errors by type" sees them.
    let by_type = count(
        pool,
        "SELECT count(*) FROM procrastinate_jobs j JOIN procrastinate_events e ON j.id = e.job_id
         WHERE e.type = 'error' AND e.at > NOW() - INTERVAL '1 hour' AND error = 'ConnectionError'",
    )
    .await;
    assert_eq!(by_type, 3);
    assert_eq!(
        count(pool, "SELECT count(*) FROM procrastinate_workers").await,
        0,
        "unregistered"
    );
}

#[tokio::test]
async fn the_retry_schedule_follows_the_formula() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = job(pool, "test.backoff", json!({})).await;
    // exponential_wait 2: 2 s after the first failure, then 4 s, then 8 s.
    for (round, expected) in [(0, 2.0), (1, 4.0), (2, 8.0)] {
        drain_with(pool, registry(), one_shot()).await;
        let (status, wait, attempts): (String, f64, i32) = sqlx::query_as(
            "SELECT status::text,
                    EXTRACT(EPOCH FROM scheduled_at - (SELECT max(at) FROM procrastinate_events
                                                       WHERE job_id = $1 AND type = 'error'))::float8,
                    attempts
             FROM procrastinate_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(
            (status.as_str(), attempts),
            ("todo", round + 1),
            "round {round}"
        );
        assert!(
            (wait - expected).abs() < 0.5,
            "round {round}: waited {wait} s, expected {expected} s"
        );
        // Skip the wait instead of sleeping through it.
        sqlx::query("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    drain_with(pool, registry(), one_shot()).await;
    assert_eq!(
        common::status(pool, id).await,
        "failed",
        "max_retries 3: four runs in all"
    );
}

#[tokio::test]
async fn a_panicking_task_fails_its_job_and_the_worker_carries_on() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let panicking = job(pool, "test.panic", json!({})).await;
    let others: Vec<NewJob> = (0..20)
        .map(|i| NewJob::new("compat.echo", json!({"i": i})).unwrap())
        .collect();
    defer_batch(pool, &others).await.unwrap();
    let report = run_one_shot(pool, one_shot()).await;
    assert_eq!(report.succeeded, 20);
    assert_eq!(report.retried, 1, "a panic is an ordinary failed attempt");
    let (kind, message): (String, String) = sqlx::query_as(
        "SELECT error, error_message FROM procrastinate_events WHERE job_id = $1 AND type = 'error'",
    )
    .bind(panicking)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(kind, "Panic");
    assert!(
        message.contains("index out of bounds in the task"),
        "{message}"
    );
}

#[tokio::test]
async fn notifications_wake_the_worker_long_before_the_poll_interval() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let config = WorkerConfig::default().poll_interval(Duration::from_secs(3600));
    let worker = Worker::new(pool.clone(), registry(), config).start();
    let mut events = worker.events();
    worker.ready().await.unwrap();
    eventually(Duration::from_secs(10), "the worker to LISTEN", || async {
        count(
            &pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %' AND state = 'idle'",
        )
        .await
            == 1
    })
    .await;
    // However the first job is found (the claim at start, or a
    // notification), once its outcome is recorded the worker waits for the
    // next poll, an hour away: only a notification can bring it the second
    // job within the deadline.
    for round in ["first", "second"] {
        let id = job(&pool, "compat.echo", json!({})).await;
        let recorded = common::recorded(
            &mut events,
            Duration::from_secs(10),
            &format!("the {round} job to succeed"),
            |seen| common::all_recorded(seen, &[id]),
        )
        .await;
        assert_eq!(common::outcomes_of(&recorded, id), [JobOutcome::Succeeded]);
        assert_eq!(common::status(&pool, id).await, "succeeded");
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM procrastinate_workers").await,
        0
    );
}

#[tokio::test]
async fn shutdown_lets_short_jobs_finish_and_puts_long_ones_back() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let tag = |which: &str| format!("{}-{which}", db.name());
    let short = job(
        &pool,
        "test.sleepy",
        json!({"ms": 300, "tag": tag("short")}),
    )
    .await;
    let long = job(
        &pool,
        "test.sleepy",
        json!({"ms": 60_000, "tag": tag("long")}),
    )
    .await;
    let config = WorkerConfig::default().shutdown_timeout(Duration::from_secs(2));
    let worker = Worker::new(pool.clone(), registry(), config).start();
    // Running, not only claimed: a job held ready when the shutdown comes is
    // put back without running, which is another test's matter.
    eventually(Duration::from_secs(10), "both jobs to start", || async {
        sleepy_started(&tag("short")) && sleepy_started(&tag("long"))
    })
    .await;
    let report = worker.shutdown().await.unwrap();
    assert_eq!((report.succeeded, report.interrupted), (1, 1));
    assert_eq!(common::status(&pool, short).await, "succeeded");
    assert_eq!(common::status(&pool, long).await, "todo");
    let (kind, started_at_null): (String, bool) = sqlx::query_as(
        "SELECT e.error, j.started_at IS NULL FROM procrastinate_events e
         JOIN procrastinate_jobs j ON j.id = e.job_id WHERE e.job_id = $1 AND e.type = 'error'",
    )
    .bind(long)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), started_at_null), ("WorkerShutdown", true));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM procrastinate_workers").await,
        0
    );
}

#[tokio::test]
async fn heartbeats_keep_the_worker_row_fresh() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let config = WorkerConfig::default().heartbeat_interval(Duration::from_millis(100));
    let worker = Worker::new(pool.clone(), registry(), config).start();
    worker.ready().await.unwrap();
    // An hour old, the row may be pruned by the worker's own upkeep, which
    // then registers it again under a new id: the check follows the table,
    // not the first id.
    sqlx::query("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a fresh heartbeat", || async {
        count(&pool, "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - interval '1 minute'").await == 1
    })
    .await;
    worker.shutdown().await.unwrap();
}

/// Stops and deletes a cluster of its own when the test ends.
struct OwnCluster(LocalCluster);

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

#[tokio::test]
async fn a_database_restart_mid_drain_loses_no_job() {
    // A cluster of its own: restarting the shared one would disturb other tests.
    let dir = std::env::temp_dir().join(format!("dawdle-restart-{}", std::process::id()));
    let cluster = OwnCluster(LocalCluster::new(LocalClusterConfig::throwaway(&dir)).unwrap());
    let starter = cluster.0.clone();
    tokio::task::spawn_blocking(move || starter.ensure_running())
        .await
        .unwrap()
        .unwrap();
    cluster.0.ensure_database("jobs").await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(cluster.0.connect_options("jobs"))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    dawdle::schema::apply(&mut conn).await.unwrap();
    drop(conn);

    let total = 3000;
    // 3000 jobs of 20 ms at concurrency 20: about 3 s of work, so the restart
    // lands mid-drain.
    let jobs: Vec<NewJob> = (0..total)
        .map(|_| NewJob::new("test.sleepy", json!({"ms": 20})).unwrap())
        .collect();
    defer_batch(&pool, &jobs).await.unwrap();

    let config = WorkerConfig::default()
        .poll_interval(Duration::from_millis(200))
        .concurrency(20);
    let worker = Worker::new(pool.clone(), registry(), config).start();
    eventually(
        Duration::from_secs(30),
        "a tenth of the jobs to succeed",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
            )
            .await
                >= i64::from(total) / 10
        },
    )
    .await;
    let done_before = count(
        &pool,
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
    )
    .await;
    assert!(
        done_before < i64::from(total),
        "the restart must happen mid-drain"
    );
    let restarted = cluster.0.clone();
    tokio::task::spawn_blocking(move || {
        restarted.stop()?;
        restarted.ensure_running()
    })
    .await
    .unwrap()
    .unwrap();
    eventually(
        Duration::from_secs(90),
        "every job to succeed after the restart",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|done| done == i64::from(total))
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    let left = count(
        &pool,
        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
    )
    .await;
    assert_eq!(left, 0);
    pool.close().await;
}

#[tokio::test]
async fn jobs_python_deferred_are_run_by_the_rust_worker() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let request = json!({"mode": "batch", "jobs": [
        {"task_name": "compat.echo", "args": {"from": "python"}},
        {"task_name": "test.strict", "args": {"count": 3}, "lock": "L"},
        {"task_name": "test.flaky", "args": {}, "queue": "default"},
    ]})
    .to_string();
    let out = common::run_script(&db.url(), "defer.py", &[], &request)
        .await
        .expect_success()
        .json();
    let ids: Vec<i64> = out["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    drain_with(pool, registry(), one_shot()).await;
    assert_eq!(common::status(pool, ids[0]).await, "succeeded");
    assert_eq!(common::status(pool, ids[1]).await, "succeeded");
    assert_eq!(common::status(pool, ids[2]).await, "failed");
    assert_eq!(
        common::event_types(pool, ids[0]).await,
        ["deferred", "started", "succeeded"]
    );
}

#[tokio::test]
async fn python_and_rust_workers_drain_one_queue_with_shared_locks() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| {
            NewJob::new("compat.echo", json!({"i": i}))
                .unwrap()
                .lock(format!("lock-{}", i % 10))
        })
        .collect();
    defer_batch(pool, &jobs).await.unwrap();

    let url = db.url();
    let python = tokio::spawn(async move {
        common::run_script(&url, "work.py", &["--deadline", "90"], "").await
    });
    let rust = run_one_shot(pool, one_shot().concurrency(5)).await;
    let python = python.await.unwrap().expect_success();
    assert_eq!(python.json()["ok"], true);

    // Every job ran exactly once, and succeeded.
    let runs: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT job_id, count(*) FROM procrastinate_events WHERE type = 'started' GROUP BY job_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 300);
    assert!(runs.iter().all(|(_, n)| *n == 1), "a job ran twice");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        .await,
        300
    );

    // No lock was held twice: per lock, the [started, finished] spans of its
    // jobs do not overlap, and they ran in id order.
    let spans: Vec<(String, i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT lock, id, started_at, finished_at FROM procrastinate_jobs ORDER BY lock, started_at, id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut last: HashMap<&str, (i64, chrono::DateTime<chrono::Utc>)> = HashMap::new();
    for (lock, id, started, finished) in &spans {
        if let Some((previous_id, previous_end)) = last.get(lock.as_str()) {
            assert!(
                started >= previous_end,
                "lock {lock}: job {id} started before job {previous_id} finished"
            );
            assert!(
                id > previous_id,
                "lock {lock}: job {id} ran after job {previous_id}"
            );
        }
        last.insert(lock, (*id, *finished));
    }
    eprintln!(
        "rust worker ran {} jobs, the python worker the rest",
        rust.succeeded
    );
}
