//! The worker behind a real PgBouncer (Debian's package) in transaction
//! pooling, with fewer server connections than the worker runs jobs at
//! once, so that client transactions really share server connections.
//! Skipped loudly when PgBouncer is not installed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dawdle::admin::{pause_queue, resume_queue};
use dawdle::testing::{eventually, PgBouncer, TestDatabase};
use dawdle::{
    defer_batch, JobContext, NewJob, Registry, RetryStrategy, Task, TaskError, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

const SERVER_CONNECTIONS: u32 = 2;
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs per job id, shared with the tasks.
type Runs = Arc<Mutex<HashMap<i64, u32>>>;

#[derive(Serialize, Deserialize)]
struct Flaky {
    fail_first: bool,
}

impl Task for Flaky {
    const NAME: &'static str = "test.flaky";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(1, Duration::ZERO)
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let runs = ctx.state::<Runs>().expect("the runs").clone();
        *runs.lock().unwrap().entry(ctx.job_id).or_default() += 1;
        if self.fail_first && ctx.attempts == 0 {
            return Err(TaskError::new("ConnectionError", "the first attempt fails"));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct UntilAborted {}

impl Task for UntilAborted {
    const NAME: &'static str = "test.until_aborted";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        ctx.abort_requested().await;
        Err(TaskError::new("Aborted", "stopped on request"))
    }
}

/// A pool through PgBouncer: more client connections than it has servers.
async fn bouncer_pool(bouncer: &PgBouncer) -> PgPool {
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(bouncer.connect_options())
        .await
        .expect("connect through pgbouncer")
}

/// Defers `jobs` through PgBouncer the way an application must: in a
/// transaction, with the statements it prepared closed before it ends.
async fn defer_through(pool: &PgPool, jobs: &[NewJob]) -> Vec<i64> {
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let ids = defer_batch(&mut *tx, jobs).await.unwrap();
    tx.clear_cached_statements().await.unwrap();
    tx.commit().await.unwrap();
    ids
}

fn worker(pool: &PgPool, runs: &Runs, config: WorkerConfig) -> dawdle::WorkerHandle {
    worker_listening_through(pool, None, runs, config)
}

/// A worker on `pool`, LISTENing on `listen` when given.
fn worker_listening_through(
    pool: &PgPool,
    listen: Option<PgPool>,
    runs: &Runs,
    config: WorkerConfig,
) -> dawdle::WorkerHandle {
    let mut registry = Registry::new();
    registry.register::<Flaky>();
    registry.register::<UntilAborted>();
    dawdle::diagnostics::register(&mut registry);
    registry.with_state(runs.clone());
    let mut builder = Worker::builder(pool.clone(), registry).config(config);
    if let Some(listen) = listen {
        builder = builder.listen_through(listen);
    }
    builder.build().unwrap().start()
}

fn pgbouncer_mode() -> WorkerConfig {
    WorkerConfig::default()
        .pgbouncer(true)
        .concurrency(8)
        .poll_interval(Duration::from_millis(200))
        .heartbeat_interval(Duration::from_millis(300))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Job `id`'s status, read on `pool`.
async fn status(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Server sessions of the database `pool` reaches that LISTEN.
async fn listening(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_runs_exactly_once_through_pgbouncer() {
    let db = TestDatabase::with_schema().await;
    let Some(bouncer) = PgBouncer::start(&db, SERVER_CONNECTIONS).await else {
        return;
    };
    let pool = bouncer_pool(&bouncer).await;
    let jobs: Vec<NewJob> = (0..2000)
        .map(|i| {
            let job = NewJob::new("test.flaky", json!({"fail_first": i % 50 == 0})).unwrap();
            match i % 10 {
                // Queueing locks: one waiting job each, so all distinct.
                1 => job.queueing_lock(format!("ql-{i}")),
                // Locks shared by several jobs: they run one at a time.
                2 => job.lock(format!("lock-{}", i % 7)),
                _ => job,
            }
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(500) {
        ids.extend(defer_through(&pool, chunk).await);
    }
    assert_eq!(ids.len(), 2000);
    let runs = Runs::default();
    let handle = worker(&pool, &runs, pgbouncer_mode());
    handle.ready().await.unwrap();
    eventually(DEADLINE, "every job to finish", async || {
        count(
            db.pool(),
            "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
        )
        .await
            == 0
    })
    .await;
    let report = handle.shutdown().await.unwrap();
    assert_eq!(report.succeeded, 2000);
    assert_eq!(report.retried, 40);
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2000, "every job ran");
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 50 == 0 { 2 } else { 1 };
        assert_eq!(runs.get(id), Some(&expected), "runs of job {id}");
    }
    // The history agrees: one `started` per attempt, attempts as run.
    let disagreeing = count(
        db.pool(),
        "SELECT count(*) FROM procrastinate_jobs AS job
         WHERE job.attempts <> (SELECT count(*) FROM procrastinate_events AS event
                                WHERE event.job_id = job.id AND event.type = 'started')
            OR job.attempts <> CASE WHEN (job.args->>'fail_first')::bool THEN 2 ELSE 1 END",
    )
    .await;
    assert_eq!(disagreeing, 0);
    assert!(
        !bouncer.log().contains("prepared statement"),
        "{}",
        bouncer.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_deferred_while_idle_are_found_by_polling() {
    let db = TestDatabase::with_schema().await;
    let Some(bouncer) = PgBouncer::start(&db, SERVER_CONNECTIONS).await else {
        return;
    };
    let pool = bouncer_pool(&bouncer).await;
    let runs = Runs::default();
    let handle = worker(&pool, &runs, pgbouncer_mode());
    handle.ready().await.unwrap();
    // No server session of this database listens: nothing was LISTENed.
    assert_eq!(listening(db.pool()).await, 0);
    let ids = defer_through(
        &pool,
        &[NewJob::new("test.flaky", json!({"fail_first": false})).unwrap()],
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the job to be polled and run",
        async || {
            count(
                db.pool(),
                &format!(
                "SELECT count(*) FROM procrastinate_jobs WHERE id = {} AND status = 'succeeded'",
                ids[0]
            ),
            )
            .await
                == 1
        },
    )
    .await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_requests_and_paused_queues_reach_the_worker() {
    let db = TestDatabase::with_schema().await;
    let Some(bouncer) = PgBouncer::start(&db, SERVER_CONNECTIONS).await else {
        return;
    };
    let pool = bouncer_pool(&bouncer).await;
    let runs = Runs::default();
    let handle = worker(&pool, &runs, pgbouncer_mode());
    handle.ready().await.unwrap();

    // An abort request, made on a direct connection, ends a running job.
    let running = defer_through(
        &pool,
        &[NewJob::new("test.until_aborted", json!({})).unwrap()],
    )
    .await[0];
    let status = |id: i64| status(db.pool(), id);
    eventually(DEADLINE, "the job to start", async || {
        status(running).await == "doing"
    })
    .await;
    dawdle::admin::cancel(db.pool(), running).await.unwrap();
    eventually(DEADLINE, "the job to be aborted", async || {
        status(running).await == "aborted"
    })
    .await;

    // A paused queue's job waits while another queue's runs, then runs
    // once resumed.
    assert!(pause_queue(db.pool(), "mail", None, None).await.unwrap());
    let paused = defer_through(
        &pool,
        &[NewJob::new("dawdle.noop", json!({})).unwrap().queue("mail")],
    )
    .await[0];
    let other = defer_through(
        &pool,
        &[NewJob::new("dawdle.noop", json!({}))
            .unwrap()
            .queue("other")],
    )
    .await[0];
    eventually(DEADLINE, "the other queue's job to run", async || {
        status(other).await == "succeeded"
    })
    .await;
    // Two more polls after it: the paused job is still waiting.
    let polled = tokio::time::Instant::now();
    eventually(DEADLINE, "two more polls", async || {
        polled.elapsed() > Duration::from_millis(400)
    })
    .await;
    assert_eq!(status(paused).await, "todo");
    assert!(resume_queue(db.pool(), "mail").await.unwrap());
    eventually(DEADLINE, "the resumed queue's job to run", async || {
        status(paused).await == "succeeded"
    })
    .await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_listen_connection_brings_new_jobs_and_aborts_before_any_poll() {
    let db = TestDatabase::with_schema().await;
    let Some(bouncer) = PgBouncer::start(&db, SERVER_CONNECTIONS).await else {
        return;
    };
    let pool = bouncer_pool(&bouncer).await;
    let runs = Runs::default();
    // Polls and heartbeats far apart: only a notification can bring the
    // job or the abort request within the deadlines below.
    let config = pgbouncer_mode()
        .poll_interval(Duration::from_secs(300))
        .heartbeat_interval(Duration::from_secs(300))
        .stalled_after(Duration::from_secs(900));
    let listen = dawdle::JobsDatabase::from_url(&db.url())
        .unwrap()
        .listen_pool();
    let handle = worker_listening_through(&pool, Some(listen), &runs, config);
    handle.ready().await.unwrap();
    eventually(
        DEADLINE,
        "the worker to LISTEN on its direct connection",
        async || listening(db.pool()).await == 1,
    )
    .await;
    let status = |id: i64| status(db.pool(), id);
    let quick = Duration::from_secs(30);

    // Deferred through PgBouncer while the worker is idle.
    let job = defer_through(
        &pool,
        &[NewJob::new("test.flaky", json!({"fail_first": false})).unwrap()],
    )
    .await[0];
    eventually(quick, "the job to run on its notification", async || {
        status(job).await == "succeeded"
    })
    .await;

    let running = defer_through(
        &pool,
        &[NewJob::new("test.until_aborted", json!({})).unwrap()],
    )
    .await[0];
    eventually(quick, "the job to start", async || {
        status(running).await == "doing"
    })
    .await;
    dawdle::admin::cancel(db.pool(), running).await.unwrap();
    eventually(quick, "the abort request to reach the job", async || {
        status(running).await == "aborted"
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(runs.lock().unwrap().get(&job), Some(&1));
}
