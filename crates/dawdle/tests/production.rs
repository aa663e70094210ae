//! The worker in production: stalled workers and jobs, abort, timeouts,
//! periodic jobs, retention, the built-in cleanup task and middleware.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dawdle::cron::Schedule;
use dawdle::testing::{drain_with, TestDatabase};
use dawdle::{
    defer, Attempt, AttemptEnd, BoxAttempt, JobContext, JobOutcome, Middleware, NewJob, Periodic,
    Registry, Retention, RetryStrategy, Task, TaskError, Worker, WorkerConfig, WorkerReport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// Sleeps, stopping early (with an error) when an abort is requested.
#[derive(Debug, Serialize, Deserialize)]
struct Polite {
    seconds: f64,
}

/// Jobs whose task has started running, for tests that must not act
/// between a job's claim and its start (a registry's shared state).
#[derive(Debug, Default)]
struct Started(Mutex<Vec<i64>>);

impl Started {
    fn mark(ctx: &JobContext) {
        if let Some(started) = ctx.state::<Arc<Started>>() {
            started.0.lock().unwrap().push(ctx.job_id);
        }
    }

    fn all(&self, ids: &[i64]) -> bool {
        let started = self.0.lock().unwrap();
        ids.iter().all(|id| started.contains(id))
    }
}

impl Task for Polite {
    const NAME: &'static str = "test.polite";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        Started::mark(&ctx);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(self.seconds)) => Ok(()),
            _ = ctx.abort_requested() => Err(TaskError::new("Aborted", "stopped on request")),
        }
    }
}

/// Sleeps and ignores abort requests.
#[derive(Debug, Serialize, Deserialize)]
struct Stubborn {
    seconds: f64,
}

impl Task for Stubborn {
    const NAME: &'static str = "test.stubborn";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        Started::mark(&ctx);
        tokio::time::sleep(Duration::from_secs_f64(self.seconds)).await;
        Ok(())
    }
}

/// Takes longer than its timeout.
#[derive(Debug, Serialize, Deserialize)]
struct Slow {}

impl Task for Slow {
    const NAME: &'static str = "test.slow";

    fn timeout() -> Option<Duration> {
        Some(Duration::from_millis(100))
    }

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(1, Duration::ZERO)
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Quick {
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    fail: bool,
}

impl Task for Quick {
    const NAME: &'static str = "test.quick";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        if self.fail {
            return Err(TaskError::validation("asked to fail"));
        }
        Ok(())
    }
}

/// Defers a follow-up with the completion, then fails if asked to.
#[derive(Debug, Serialize, Deserialize)]
struct Chain {
    fail: bool,
}

impl Task for Chain {
    const NAME: &'static str = "test.chain";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        assert!(ctx.worker_name.contains(':'), "{}", ctx.worker_name);
        ctx.defer_after_success(NewJob::new("test.quick", json!({"after": ctx.job_id}))?)?;
        if self.fail {
            return Err(TaskError::validation(
                "failing after asking for a follow-up",
            ));
        }
        Ok(())
    }
}

/// Fails its first attempt, succeeds on the retry half a second later.
#[derive(Debug, Serialize, Deserialize)]
struct SecondTime {}

impl Task for SecondTime {
    const NAME: &'static str = "test.second_time";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(1, Duration::from_millis(500))
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        if ctx.attempts == 0 {
            return Err(TaskError::connection("not yet"));
        }
        Ok(())
    }
}

/// Shared with tasks through the registry.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<std::sync::atomic::AtomicU32>);

/// Counts its runs in the shared counter.
#[derive(Debug, Serialize, Deserialize)]
struct Count {}

impl Task for Count {
    const NAME: &'static str = "test.count";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let counter = ctx
            .state::<Counter>()
            .ok_or_else(|| TaskError::new("Misconfigured", "no Counter state"))?;
        counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<Count>()
        .register::<SecondTime>()
        .register::<Chain>()
        .register::<Polite>()
        .register::<Stubborn>()
        .register::<Slow>()
        .register::<Quick>()
        .register::<dawdle::builtin::RemoveOldJobs>();
    registry
}

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stalled_after(Duration::from_secs(1))
        .abort_grace(Duration::from_millis(300))
}

/// How long a test waits for what it expects to see.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs a one-shot worker until no runnable job is left; its report.
async fn run_one_shot(worker: Worker) -> WorkerReport {
    worker.start().join().await.unwrap()
}

async fn eventually(what: &str, condition: impl AsyncFnMut() -> bool) {
    dawdle::testing::eventually(DEADLINE, what, condition).await;
}

async fn status(pool: &PgPool, id: i64) -> String {
    common::status(pool, id).await
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn jobs_of_a_dead_worker_are_put_back_once_and_run_again() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    // A worker that died mid-job: registered, silent for a minute, job doing.
    let dead: i64 = sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap();
    let id = defer(pool, &NewJob::new("test.quick", json!({})).unwrap())
        .await
        .unwrap();
    sqlx::query("SELECT id FROM dawdle_fetch_jobs_v1(NULL, $1, 1)")
        .bind(dead)
        .fetch_all(pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 minute';
         UPDATE procrastinate_jobs SET started_at = now() - interval '1 minute'",
    )
    .execute(pool)
    .await
    .unwrap();

    // Two live workers both do the upkeep; the job is rescued once.
    let first = Worker::new(pool.clone(), registry(), config()).start();
    let second = Worker::new(pool.clone(), registry(), config()).start();
    eventually("the job to run again and succeed", async || {
        status(pool, id).await == "succeeded"
    })
    .await;
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    let stalled = count(
        pool,
        &format!(
            "SELECT count(*) FROM procrastinate_events WHERE job_id = {id} AND error = 'Stalled'"
        ),
    )
    .await;
    assert_eq!(stalled, 1, "rescued exactly once");
    assert_eq!(
        count(
            pool,
            &format!("SELECT count(*) FROM procrastinate_workers WHERE id = {dead}")
        )
        .await,
        0,
        "pruned"
    );
    let history = common::event_types(pool, id).await;
    assert_eq!(
        history,
        [
            "deferred",
            "started",
            "error",
            "deferred_for_retry",
            "started",
            "succeeded"
        ]
    );
}

#[tokio::test]
async fn an_abort_request_stops_a_running_job_which_ends_aborted() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let polite = defer(
        pool,
        &NewJob::new("test.polite", json!({"seconds": 60})).unwrap(),
    )
    .await
    .unwrap();
    let stubborn = defer(
        pool,
        &NewJob::new("test.stubborn", json!({"seconds": 60})).unwrap(),
    )
    .await
    .unwrap();
    let started = Arc::new(Started::default());
    let mut registry = registry();
    registry.with_state(started.clone());
    let worker = Worker::new(pool.clone(), registry, config()).start();
    let mut events = worker.events();
    // Running, not only claimed: an abort of a job claimed but not started
    // ends it without the attempt's error event this test expects.
    eventually("both jobs to run", async || {
        started.all(&[polite, stubborn])
    })
    .await;
    for id in [polite, stubborn] {
        assert_eq!(
            dawdle::admin::cancel(pool, id).await.unwrap(),
            dawdle::admin::CancelOutcome::AbortRequested
        );
    }
    let recorded = common::recorded(&mut events, DEADLINE, "both jobs to end", |seen| {
        common::all_recorded(seen, &[polite, stubborn])
    })
    .await;
    for id in [polite, stubborn] {
        assert_eq!(common::outcomes_of(&recorded, id), [JobOutcome::Aborted]);
        assert_eq!(status(pool, id).await, "aborted");
    }
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.aborted, 2);
    assert_eq!(
        common::event_types(pool, polite).await,
        ["deferred", "started", "abort_requested", "error", "aborted"]
    );
}

#[tokio::test]
async fn a_job_over_its_timeout_fails_as_timeout_error_and_is_retried() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = defer(pool, &NewJob::new("test.slow", json!({})).unwrap())
        .await
        .unwrap();
    let report = run_one_shot(Worker::new(
        pool.clone(),
        registry(),
        config().one_shot(true),
    ))
    .await;
    assert_eq!((report.retried, report.failed), (1, 1));
    assert_eq!(status(pool, id).await, "failed");
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM procrastinate_events WHERE job_id = $1 AND type = 'error'",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["TimeoutError", "TimeoutError"]);
}

#[tokio::test]
async fn periodic_jobs_are_deferred_once_per_tick_by_any_number_of_workers() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let every_second = || {
        let mut registry = registry();
        registry.add_periodic(Periodic::new(
            "test.quick",
            Schedule::parse("* * * * * *").unwrap(),
        ));
        registry
    };
    let workers: Vec<_> = (0..3)
        .map(|_| Worker::new(pool.clone(), every_second(), config()).start())
        .collect();
    eventually("four ticks", async || {
        count(
            pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        )
        .await
            >= 4
    })
    .await;
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
    let ticks: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT (args->>'timestamp')::bigint AS tick, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        ticks.iter().all(|(_, n)| *n == 1),
        "a tick deferred twice: {ticks:?}"
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1, "a tick was skipped: {ticks:?}");
    }
    // Only the latest tick is remembered per periodic task.
    assert_eq!(
        count(pool, "SELECT count(*) FROM procrastinate_periodic_defers").await,
        1
    );
}

#[tokio::test]
async fn retention_deletes_successes_and_the_cleanup_task_removes_old_jobs() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let ok = defer(pool, &NewJob::new("test.quick", json!({})).unwrap())
        .await
        .unwrap();
    let bad = defer(
        pool,
        &NewJob::new("test.quick", json!({"fail": true})).unwrap(),
    )
    .await
    .unwrap();
    drain_with(
        pool,
        registry(),
        config().retention(Retention::DeleteSuccessful),
    )
    .await;
    assert_eq!(
        count(
            pool,
            &format!("SELECT count(*) FROM procrastinate_jobs WHERE id = {ok}")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            pool,
            &format!("SELECT count(*) FROM procrastinate_events WHERE job_id = {ok}")
        )
        .await,
        0
    );
    assert_eq!(
        status(pool, bad).await,
        "failed",
        "failed jobs stay for debugging"
    );

    sqlx::query(
        "UPDATE procrastinate_jobs SET finished_at = now() - interval '3 days' WHERE id = $1",
    )
    .bind(bad)
    .execute(pool)
    .await
    .unwrap();
    defer(
        pool,
        &NewJob::new(
            "dawdle.remove_old_jobs",
            json!({"max_hours": 24, "include_failed": true}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    drain_with(pool, registry(), config()).await;
    assert_eq!(
        count(
            pool,
            &format!("SELECT count(*) FROM procrastinate_jobs WHERE id = {bad}")
        )
        .await,
        0
    );
}

/// Records every hook call.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Middleware for Recorder {
    fn before(&self, job: &dawdle::Job) {
        self.0.lock().unwrap().push(format!("before {}", job.id));
    }

    fn after(&self, job: &dawdle::Job, end: AttemptEnd<'_>, _duration: Duration) {
        let end = match end {
            AttemptEnd::Succeeded => "succeeded",
            AttemptEnd::Failed { .. } => "failed",
            _ => "other",
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("after {} {end}", job.id));
    }

    fn on_error(&self, job: &dawdle::Job, error: &TaskError, will_retry: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("error {} {} {will_retry}", job.id, error.kind()));
    }
}

#[tokio::test]
async fn middleware_sees_every_attempt() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let ok = defer(pool, &NewJob::new("test.quick", json!({})).unwrap())
        .await
        .unwrap();
    let bad = defer(
        pool,
        &NewJob::new("test.quick", json!({"fail": true})).unwrap(),
    )
    .await
    .unwrap();
    let recorder = Recorder::default();
    let worker = Worker::builder(pool.clone(), registry())
        .config(config().one_shot(true))
        .middleware(recorder.clone())
        .build()
        .unwrap();
    run_one_shot(worker).await;
    let mut calls = recorder.0.lock().unwrap().clone();
    calls.sort();
    let mut expected = vec![
        format!("after {bad} failed"),
        format!("after {ok} succeeded"),
        format!("before {bad}"),
        format!("before {ok}"),
        format!("error {bad} ValidationError false"),
    ];
    expected.sort();
    assert_eq!(calls, expected);
}

/// Wraps attempts: logs going in and out, and lets through only jobs
/// whose arguments do not say `"skip": true` (those succeed unrun).
struct Wrap {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Middleware for Wrap {
    fn wrap<'a>(&'a self, attempt: Attempt<'a>) -> BoxAttempt<'a> {
        Box::pin(async move {
            let id = attempt.job().id;
            if attempt.job().args.get("skip") == Some(&json!(true)) {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("{} skips {id}", self.name));
                return Ok(());
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("{} in {id}", self.name));
            let result = attempt.run().await;
            self.log.lock().unwrap().push(format!(
                "{} out {id} {}",
                self.name,
                result
                    .as_ref()
                    .map_or_else(|e| e.kind().to_string(), |()| "ok".into())
            ));
            result
        })
    }
}

#[tokio::test]
async fn middleware_wraps_attempts_in_order_and_can_short_circuit_them() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let failing = defer(
        pool,
        &NewJob::new("test.quick", json!({"fail": true})).unwrap(),
    )
    .await
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let worker = || {
        Worker::builder(pool.clone(), registry())
            .config(config().one_shot(true))
            .middleware(Wrap {
                name: "outer",
                log: log.clone(),
            })
            .middleware(Wrap {
                name: "inner",
                log: log.clone(),
            })
            .build()
            .unwrap()
    };
    run_one_shot(worker()).await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            format!("outer in {failing}"),
            format!("inner in {failing}"),
            format!("inner out {failing} ValidationError"),
            format!("outer out {failing} ValidationError"),
        ]
    );

    // Short-circuited: the task, which would fail, never runs.
    log.lock().unwrap().clear();
    let skipped = defer(
        pool,
        &NewJob::new("test.quick", json!({"fail": true, "skip": true})).unwrap(),
    )
    .await
    .unwrap();
    run_one_shot(worker()).await;
    assert_eq!(*log.lock().unwrap(), [format!("outer skips {skipped}")]);
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
            .bind(skipped)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
}

#[tokio::test]
async fn follow_up_jobs_exist_only_if_the_success_is_recorded() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let ok = defer(
        pool,
        &NewJob::new("test.chain", json!({"fail": false})).unwrap(),
    )
    .await
    .unwrap();
    let bad = defer(
        pool,
        &NewJob::new("test.chain", json!({"fail": true})).unwrap(),
    )
    .await
    .unwrap();
    drain_with(pool, registry(), config()).await;
    let after: Vec<i64> = sqlx::query_scalar(
        "SELECT (args->>'after')::bigint FROM procrastinate_jobs WHERE task_name = 'test.quick'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        after,
        [ok],
        "only the successful job's follow-up exists (not {bad}'s)"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'test.quick' AND status = 'succeeded'").await,
        1,
        "and it ran"
    );
}

#[tokio::test]
async fn ticks_missed_while_no_worker_ran_are_not_replayed() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    // The last tick deferred was an hour ago: thousands of ticks were missed.
    sqlx::query(
        "INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp)
         VALUES ('test.quick', '', extract(epoch FROM now() - interval '1 hour')::bigint)",
    )
    .execute(pool)
    .await
    .unwrap();
    let started = chrono::Utc::now().timestamp();
    let mut every_second = registry();
    every_second.add_periodic(Periodic::new(
        "test.quick",
        Schedule::parse("* * * * * *").unwrap(),
    ));
    let worker = Worker::new(pool.clone(), every_second, config()).start();
    eventually("two ticks", async || {
        count(pool, "SELECT count(*) FROM procrastinate_jobs").await >= 2
    })
    .await;
    worker.shutdown().await.unwrap();
    let earliest: i64 =
        sqlx::query_scalar("SELECT min((args->>'timestamp')::bigint) FROM procrastinate_jobs")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        earliest >= started,
        "a missed tick ({earliest}) was replayed (worker started at {started})"
    );
    let jobs = count(pool, "SELECT count(*) FROM procrastinate_jobs").await;
    assert!(jobs <= 4, "{jobs} jobs: a burst");
}

#[tokio::test]
async fn a_retry_runs_when_due_without_waiting_for_the_next_poll() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = defer(pool, &NewJob::new("test.second_time", json!({})).unwrap())
        .await
        .unwrap();
    // An hour between polls: only the worker's timer for the earliest
    // scheduled job can run the retry within the deadline.
    let worker = Worker::new(
        pool.clone(),
        registry(),
        config().poll_interval(Duration::from_secs(3600)),
    )
    .start();
    let mut events = worker.events();
    let recorded = common::recorded(&mut events, DEADLINE, "the retry to succeed", |seen| {
        common::outcomes_of(seen, id).contains(&JobOutcome::Succeeded)
    })
    .await;
    let outcomes = common::outcomes_of(&recorded, id);
    assert!(
        matches!(
            outcomes[..],
            [JobOutcome::Retrying { .. }, JobOutcome::Succeeded]
        ),
        "{outcomes:?}"
    );
    assert_eq!(status(pool, id).await, "succeeded");
    worker.shutdown().await.unwrap();
    assert_eq!(
        count(
            pool,
            &format!("SELECT attempts::bigint FROM procrastinate_jobs WHERE id = {id}")
        )
        .await,
        2
    );
}

#[tokio::test]
async fn a_worker_presumed_dead_cannot_overwrite_the_attempt_of_another() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = defer(
        pool,
        &NewJob::new("test.stubborn", json!({"seconds": 1.0})).unwrap(),
    )
    .await
    .unwrap();
    let worker = Worker::new(pool.clone(), registry(), config()).start();
    eventually("the job to start", async || {
        status(pool, id).await == "doing"
    })
    .await;
    // Meanwhile the job was rescued and claimed by another worker.
    let other: i64 = sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE procrastinate_jobs SET worker_id = $2 WHERE id = $1")
        .bind(id)
        .bind(other)
        .execute(pool)
        .await
        .unwrap();
    let report = worker.shutdown().await.unwrap();
    assert_eq!(
        report.succeeded, 1,
        "the first worker did finish its attempt"
    );
    assert_eq!(
        status(pool, id).await,
        "doing",
        "but the other worker's attempt stands"
    );
    assert!(!common::event_types(pool, id)
        .await
        .contains(&"succeeded".to_string()));
}

#[tokio::test]
async fn tasks_reach_shared_state_through_their_context() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    for _ in 0..3 {
        defer(pool, &NewJob::new("test.count", json!({})).unwrap())
            .await
            .unwrap();
    }
    let counter = Counter::default();
    let mut with_state = registry();
    with_state.with_state(counter.clone());
    let report = run_one_shot(Worker::new(
        pool.clone(),
        with_state,
        config().one_shot(true),
    ))
    .await;
    assert_eq!(report.succeeded, 3);
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Without the state, the task says what is missing.
    defer(pool, &NewJob::new("test.count", json!({})).unwrap())
        .await
        .unwrap();
    let report = run_one_shot(Worker::new(
        pool.clone(),
        registry(),
        config().one_shot(true),
    ))
    .await;
    assert_eq!(report.failed, 1);
}
