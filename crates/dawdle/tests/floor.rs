//! The worker's claims start where its last one ended (the claim floor), so
//! jobs that appear below that point must still be found: a defer that
//! commits after later jobs were claimed, a job scheduled earlier that comes
//! due, a job whose lock frees up.
//!
//! The workers here poll once a minute and claim from the head of the claim
//! order at least every 30 s: a job that runs within the deadlines was found
//! through what announced it, from the floor.

use std::time::Duration;

use chrono::Utc;
use dawdle::testing::{eventually, TestDatabase};
use dawdle::{defer, NewJob, Registry, Worker, WorkerConfig, WorkerReport};
use serde_json::json;
use sqlx::PgPool;

const POLL: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(10);

type Stop = tokio::sync::oneshot::Sender<()>;
type Running = tokio::task::JoinHandle<Result<WorkerReport, dawdle::worker::WorkerError>>;

fn spawn_worker(pool: &PgPool) -> (Stop, Running) {
    spawn_worker_with(pool, diagnostics(), POLL)
}

/// The diagnostic tasks.
fn diagnostics() -> Registry {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry
}

/// A worker running `registry`'s tasks, polling every `poll`.
fn spawn_worker_with(pool: &PgPool, registry: Registry, poll: Duration) -> (Stop, Running) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(
        pool.clone(),
        registry,
        WorkerConfig::default().poll_interval(poll),
    );
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn noop() -> NewJob {
    NewJob::new("dawdle.noop", json!({})).unwrap()
}

async fn status(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn succeeded(pool: &PgPool, ids: &[i64], what: &str) {
    eventually(DEADLINE, what, async || {
        for id in ids {
            if status(pool, *id).await != "succeeded" {
                return false;
            }
        }
        true
    })
    .await;
}

/// Waits until the worker has registered and listens, so that what the
/// test defers next is announced to it.
async fn listening(pool: &PgPool) {
    eventually(DEADLINE, "the worker to listen", async || {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM procrastinate_workers)
                AND EXISTS (SELECT FROM pg_stat_activity
                            WHERE datname = current_database() AND query ILIKE 'LISTEN%')",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_defer_that_commits_after_later_jobs_ran_still_runs_at_once() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let (stop, worker) = spawn_worker(pool);
    listening(pool).await;

    // The job's id is handed out now, its row committed later.
    let mut late = pool.begin().await.unwrap();
    let late_id = defer(&mut *late, &noop()).await.unwrap();
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(defer(pool, &noop()).await.unwrap());
        succeeded(pool, &later, "the later jobs to run").await;
    }
    assert!(later.iter().all(|id| *id > late_id));
    late.commit().await.unwrap();
    succeeded(pool, &[late_id], "the late job to run").await;

    stop.send(()).unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 4);
}

#[tokio::test]
async fn a_job_scheduled_before_later_ones_ran_runs_when_it_comes_due() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let (stop, worker) = spawn_worker(pool);
    listening(pool).await;

    let due_soon = defer(
        pool,
        &noop().scheduled_at(Utc::now() + chrono::Duration::milliseconds(1500)),
    )
    .await
    .unwrap();
    let now = defer(pool, &noop()).await.unwrap();
    succeeded(pool, &[now], "the job deferred for now to run").await;
    assert_eq!(status(pool, due_soon).await, "todo");
    succeeded(pool, &[due_soon], "the scheduled job to run once due").await;

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_next_job_of_a_lock_runs_when_the_lock_frees_up_below_the_floor() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let (stop, worker) = spawn_worker(pool);
    listening(pool).await;

    // The first job of the lock holds it for a while; the second waits
    // below the jobs deferred after it, which run meanwhile.
    let holder = defer(
        pool,
        &NewJob::new("dawdle.sleep", json!({"seconds": 1.0}))
            .unwrap()
            .lock("l"),
    )
    .await
    .unwrap();
    let waiting = defer(pool, &noop().lock("l")).await.unwrap();
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(defer(pool, &noop()).await.unwrap());
    }
    succeeded(pool, &later, "the jobs deferred after the lock's to run").await;
    succeeded(pool, &[holder, waiting], "both jobs of the lock to run").await;

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_this_worker_retried_runs_again_when_its_wait_ends() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let mut registry = diagnostics();
    registry.register_with::<dawdle::diagnostics::Fail>(
        dawdle::TaskOptions::new()
            .retry(dawdle::RetryStrategy::constant(1, Duration::from_secs(1))),
    );
    let (stop, worker) = spawn_worker_with(pool, registry, POLL);
    listening(pool).await;

    let failing = defer(pool, &NewJob::new("dawdle.fail", json!({})).unwrap())
        .await
        .unwrap();
    let later = defer(pool, &noop()).await.unwrap();
    succeeded(
        pool,
        &[later],
        "the job deferred after the failing one to run",
    )
    .await;
    eventually(DEADLINE, "the retried job to fail for good", async || {
        status(pool, failing).await == "failed"
    })
    .await;
    // From the retry's event to the second start: the wait, not the 30 s
    // after which the worker reads from the head of the claim order anyway.
    let gap: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(at) FILTER (WHERE type = 'started')
                                 - min(at) FILTER (WHERE type = 'deferred_for_retry'))::float8
         FROM procrastinate_events WHERE job_id = $1",
    )
    .bind(failing)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        (0.8..5.0).contains(&gap),
        "second start {gap:.3} s after the retry"
    );

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_brought_forward_below_the_floor_runs_at_once() {
    // A person at psql brings a job scheduled for later forward. It lies
    // below the floor, and the worker polls once a minute: the update's
    // wake-up names the job, and the worker lowers its floor to it.
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let (stop, worker) = spawn_worker(pool);
    listening(pool).await;

    let brought_forward = defer(
        pool,
        &noop().scheduled_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    let now = defer(pool, &noop()).await.unwrap();
    succeeded(pool, &[now], "the job deferred for now to run").await;
    sqlx::query("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1")
        .bind(brought_forward)
        .execute(pool)
        .await
        .unwrap();
    succeeded(pool, &[brought_forward], "the job brought forward to run").await;

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}
