//! A job that releases its lock wakes the workers for the lock's next job
//! (migration 0005): chains of jobs on one lock run back to back, on one
//! worker or across several, without waiting for anyone's poll interval.
//!
//! Every worker here polls once a minute, so a job that runs within the
//! tests' deadlines was started by a notification.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dawdle::testing::{eventually, TestDatabase};
use dawdle::worker::Retention;
use dawdle::{
    defer_batch, JobContext, NewJob, Registry, RetryStrategy, Task, TaskError, Worker,
    WorkerConfig, WorkerReport,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// Far longer than any test here may take: only notifications wake workers.
const POLL: Duration = Duration::from_secs(60);

/// How long ten 10 ms jobs may take; without hand-off wake-ups they would
/// need nine poll intervals.
const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the test inserts a row into `released`, then fails and asks
/// to be retried in an hour.
#[derive(Debug, Serialize, Deserialize)]
struct RetryLater {}

impl Task for RetryLater {
    const NAME: &'static str = "test.retry_later";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(1, Duration::from_secs(3600))
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        while !sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM released)")
            .fetch_one(ctx.pool())
            .await?
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(TaskError::new("Unavailable", "try again later"))
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry.register::<RetryLater>();
    registry
}

/// Runs a worker in the background until the returned sender fires.
fn spawn_worker(
    pool: &PgPool,
    config: WorkerConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<WorkerReport, dawdle::worker::WorkerError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(pool.clone(), registry(), config);
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn slow_poller() -> WorkerConfig {
    WorkerConfig::default().poll_interval(POLL)
}

fn sleep_job(lock: &str) -> NewJob {
    NewJob::new("dawdle.sleep", json!({"seconds": 0.01}))
        .unwrap()
        .lock(lock)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn succeeded(pool: &PgPool, ids: &[i64]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY ($1) AND status = 'succeeded'",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Panics unless the jobs ran one at a time: sorted by start, each ended
/// before the next started.
async fn assert_one_at_a_time(pool: &PgPool, ids: &[i64]) {
    let runs: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, started_at, finished_at FROM procrastinate_jobs
         WHERE id = ANY ($1) ORDER BY started_at",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), ids.len());
    for pair in runs.windows(2) {
        eprintln!(
            "DEBUGGAP {:?} run {:?}",
            pair[1].1 - pair[0].2,
            pair[0].2 - pair[0].1
        );
        let (earlier, _, earlier_end) = pair[0];
        let (later, later_start, _) = pair[1];
        assert!(
            earlier_end <= later_start,
            "job {later} started at {later_start} while job {earlier} ran until {earlier_end}"
        );
    }
}

async fn stop(
    stop: tokio::sync::oneshot::Sender<()>,
    worker: tokio::task::JoinHandle<Result<WorkerReport, dawdle::worker::WorkerError>>,
) -> WorkerReport {
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap()
}

#[tokio::test]
async fn ten_jobs_on_one_lock_run_back_to_back_on_one_worker() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let jobs: Vec<NewJob> = (0..10).map(|_| sleep_job("L")).collect();
    let ids = defer_batch(&pool, &jobs).await.unwrap();

    let started = tokio::time::Instant::now();
    let (stop_worker, worker) = spawn_worker(&pool, slow_poller());
    eventually(DEADLINE, "all ten jobs to succeed", || async {
        succeeded(&pool, &ids).await == 10
    })
    .await;
    let took = started.elapsed();
    let report = stop(stop_worker, worker).await;
    assert_eq!(report.succeeded, 10);
    assert_one_at_a_time(&pool, &ids).await;
    eprintln!("ten 10 ms jobs on one lock took {took:?}");
}

#[tokio::test]
async fn the_hand_off_crosses_workers() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    // One lock, queues alternating between the two workers' queues: every
    // hand-off goes to the other worker.
    let jobs: Vec<NewJob> = (0..10)
        .map(|i| sleep_job("L").queue(if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    let ids = defer_batch(&pool, &jobs).await.unwrap();

    let on_queue = |queue: &str| slow_poller().queues(Some(vec![queue.to_string()]));
    let (stop_a, worker_a) = spawn_worker(&pool, on_queue("a"));
    let (stop_b, worker_b) = spawn_worker(&pool, on_queue("b"));
    eventually(DEADLINE, "all ten jobs to succeed", || async {
        succeeded(&pool, &ids).await == 10
    })
    .await;
    let report_a = stop(stop_a, worker_a).await;
    let report_b = stop(stop_b, worker_b).await;
    assert_eq!((report_a.succeeded, report_b.succeeded), (5, 5));
    assert_one_at_a_time(&pool, &ids).await;
}

#[tokio::test]
async fn two_workers_on_the_same_queue_share_a_lock_one_job_at_a_time() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let jobs: Vec<NewJob> = (0..10).map(|_| sleep_job("L")).collect();
    let ids = defer_batch(&pool, &jobs).await.unwrap();

    let (stop_a, worker_a) = spawn_worker(&pool, slow_poller());
    let (stop_b, worker_b) = spawn_worker(&pool, slow_poller());
    eventually(DEADLINE, "all ten jobs to succeed", || async {
        succeeded(&pool, &ids).await == 10
    })
    .await;
    let report_a = stop(stop_a, worker_a).await;
    let report_b = stop(stop_b, worker_b).await;
    assert_eq!(report_a.succeeded + report_b.succeeded, 10);
    assert_one_at_a_time(&pool, &ids).await;
}

#[tokio::test]
async fn a_job_that_fails_for_good_hands_its_lock_on() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let mut jobs = vec![NewJob::new("dawdle.fail", json!({})).unwrap().lock("L")];
    jobs.extend((0..4).map(|_| sleep_job("L")));
    let ids = defer_batch(&pool, &jobs).await.unwrap();

    let (stop_worker, worker) = spawn_worker(&pool, slow_poller());
    eventually(
        DEADLINE,
        "the jobs after the failure to succeed",
        || async { succeeded(&pool, &ids[1..]).await == 4 },
    )
    .await;
    let report = stop(stop_worker, worker).await;
    assert_eq!((report.failed, report.succeeded), (1, 4));
    assert_one_at_a_time(&pool, &ids).await;
}

#[tokio::test]
async fn a_job_retried_later_lets_an_earlier_job_of_its_lock_run_now() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    sqlx::query("CREATE TABLE released (at timestamptz)")
        .execute(&pool)
        .await
        .unwrap();
    let retried = defer_batch(
        &pool,
        &[NewJob::new("test.retry_later", json!({}))
            .unwrap()
            .lock("L")],
    )
    .await
    .unwrap()[0];
    let (stop_worker, worker) = spawn_worker(&pool, slow_poller());
    eventually(DEADLINE, "the first job to start", || async {
        count(
            &pool,
            "SELECT count(*) FROM procrastinate_events WHERE type = 'started'",
        )
        .await
            == 1
    })
    .await;
    // Deferred while the first one runs, with a higher priority: its own
    // wake-up finds the lock held. Once the first one goes back to wait an
    // hour, this one comes first in the lock's order, and nothing but the
    // hand-off announces it.
    let urgent = defer_batch(&pool, &[sleep_job("L").priority(10)])
        .await
        .unwrap()[0];
    sqlx::query("INSERT INTO released VALUES (now())")
        .execute(&pool)
        .await
        .unwrap();
    eventually(DEADLINE, "the urgent job to succeed", || async {
        succeeded(&pool, &[urgent]).await == 1
    })
    .await;
    let report = stop(stop_worker, worker).await;
    assert_eq!((report.retried, report.succeeded), (1, 1));
    let (status, retry_in_minutes): (String, f64) = sqlx::query_as(
        "SELECT status::text, EXTRACT(EPOCH FROM scheduled_at - now())::float8 / 60
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(retried)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "todo");
    assert!(retry_in_minutes > 50.0, "{retry_in_minutes}");
}

#[tokio::test]
async fn a_worker_that_deletes_finished_jobs_hands_their_locks_on() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let jobs: Vec<NewJob> = (0..10).map(|_| sleep_job("L")).collect();
    defer_batch(&pool, &jobs).await.unwrap();

    let (stop_worker, worker) = spawn_worker(&pool, slow_poller().retention(Retention::DeleteAll));
    eventually(DEADLINE, "all ten jobs to run and be deleted", || async {
        count(&pool, "SELECT count(*) FROM procrastinate_jobs").await == 0
    })
    .await;
    let report = stop(stop_worker, worker).await;
    assert_eq!(report.succeeded, 10);
}

// ---------------------------------------------------------------- the notifications

async fn listener(pool: &PgPool) -> PgListener {
    let mut listener = PgListener::connect_with(pool).await.unwrap();
    listener
        .listen_all([
            "procrastinate_queue_v1#a",
            "procrastinate_queue_v1#b",
            "procrastinate_any_queue_v1",
        ])
        .await
        .unwrap();
    listener
}

/// Runs `sql`, then returns every notification it sent as (channel,
/// payload), sorted; a marker notification tells when all have arrived.
async fn notifications_of(
    pool: &PgPool,
    listener: &mut PgListener,
    sql: &str,
) -> Vec<(String, Value)> {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    sqlx::query("SELECT pg_notify('procrastinate_any_queue_v1', 'end')")
        .execute(pool)
        .await
        .unwrap();
    let mut received: Vec<(String, Value)> = Vec::new();
    loop {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notifications within 10 s")
            .unwrap();
        if notification.payload() == "end" {
            break;
        }
        received.push((
            notification.channel().to_string(),
            serde_json::from_str(notification.payload()).unwrap(),
        ));
    }
    received.sort_by_key(|(channel, payload)| (channel.clone(), payload.to_string()));
    received
}

/// The wake-up for job `id` of queue `queue`, as the channels deliver it.
fn wake_up(queue: &str, id: i64) -> Vec<(String, Value)> {
    let payload = json!({"type": "job_inserted", "job_id": id});
    vec![
        ("procrastinate_any_queue_v1".to_string(), payload.clone()),
        (format!("procrastinate_queue_v1#{queue}"), payload),
    ]
}

async fn register_worker(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Claims one job as the Python worker does.
async fn fetch_one(pool: &PgPool, worker: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v2(NULL, $1)")
        .bind(worker)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The Python library's own calls: finishing, deleting and retrying a job
/// that holds a lock announce the lock's next job (on its queue's channel,
/// where a Python worker listens too); claims, lock-free jobs, jobs whose
/// lock stays held and successors scheduled for later announce nothing.
#[tokio::test]
async fn a_waiting_job_brought_forward_wakes_the_workers_and_no_other_update_does() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let later = Utc::now() + chrono::Duration::hours(1);
    let ids = defer_batch(
        pool,
        &[
            NewJob::new("t", json!({}))
                .unwrap()
                .queue("a")
                .scheduled_at(later),
            NewJob::new("t", json!({}))
                .unwrap()
                .queue("b")
                .scheduled_at(later),
            NewJob::new("t", json!({})).unwrap().queue("a"),
        ],
    )
    .await
    .unwrap();
    let (a, b, due) = (ids[0], ids[1], ids[2]);
    let mut listener = listener(pool).await;
    let quiet = [
        // Still scheduled for later: another column, an earlier time.
        format!("UPDATE procrastinate_jobs SET priority = 3 WHERE id = {a}"),
        format!(
            "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '30 minutes' WHERE id = {a}"
        ),
        // Already due: another column, or put off.
        format!("UPDATE procrastinate_jobs SET priority = 3 WHERE id = {due}"),
        format!(
            "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 hour' WHERE id = {due}"
        ),
    ];
    for sql in &quiet {
        assert_eq!(
            notifications_of(pool, &mut listener, sql).await,
            [],
            "{sql}"
        );
    }
    // Brought forward to the statement's now(), or to no schedule at all.
    let to_now = format!("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = {a}");
    assert_eq!(
        notifications_of(pool, &mut listener, &to_now).await,
        wake_up("a", a)
    );
    let unscheduled = format!("UPDATE procrastinate_jobs SET scheduled_at = NULL WHERE id = {b}");
    assert_eq!(
        notifications_of(pool, &mut listener, &unscheduled).await,
        wake_up("b", b)
    );
    // Schedules at the ends of time, as a person at psql may write them.
    let never = format!("UPDATE procrastinate_jobs SET scheduled_at = 'infinity' WHERE id = {a}");
    assert_eq!(notifications_of(pool, &mut listener, &never).await, []);
    let always = format!("UPDATE procrastinate_jobs SET scheduled_at = '-infinity' WHERE id = {a}");
    assert_eq!(
        notifications_of(pool, &mut listener, &always).await,
        wake_up("a", a)
    );
}

#[tokio::test]
async fn releasing_a_lock_announces_the_next_job_of_the_lock_and_nothing_else() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let job = |queue: &str, lock: Option<&str>| {
        let job = NewJob::new("t", json!({})).unwrap().queue(queue);
        match lock {
            Some(lock) => job.lock(lock),
            None => job,
        }
    };
    let ids = defer_batch(
        pool,
        &[
            job("a", Some("L")),
            job("b", Some("L")),
            job("a", Some("L")),
            job("a", Some("L")),
            job("b", None),
        ],
    )
    .await
    .unwrap();
    let worker = register_worker(pool).await;
    let mut listener = listener(pool).await;

    // The claim takes the lock's first job and the lock-free one.
    let claim = format!(
        "SELECT procrastinate_fetch_job_v2(NULL, {worker});
         SELECT procrastinate_fetch_job_v2(NULL, {worker});"
    );
    assert_eq!(notifications_of(pool, &mut listener, &claim).await, []);
    let free = ids[4];
    let finish_free = format!("SELECT procrastinate_finish_job_v1({free}, 'succeeded', false)");
    assert_eq!(
        notifications_of(pool, &mut listener, &finish_free).await,
        []
    );

    // An abort request keeps the job running and its lock held.
    let abort = format!(
        "SELECT procrastinate_cancel_job_v1({}, true, false)",
        ids[0]
    );
    let aborting = notifications_of(pool, &mut listener, &abort).await;
    assert!(
        aborting
            .iter()
            .all(|(_, payload)| payload["type"] == "abort_job_requested"),
        "{aborting:?}"
    );

    let finish = format!(
        "SELECT procrastinate_finish_job_v1({}, 'aborted', false)",
        ids[0]
    );
    assert_eq!(
        notifications_of(pool, &mut listener, &finish).await,
        wake_up("b", ids[1])
    );

    assert_eq!(fetch_one(pool, worker).await, Some(ids[1]));
    let delete = format!(
        "SELECT procrastinate_finish_job_v1({}, 'succeeded', true)",
        ids[1]
    );
    assert_eq!(
        notifications_of(pool, &mut listener, &delete).await,
        wake_up("a", ids[2])
    );

    // The next job is scheduled for later: its schedule, not the hand-off,
    // will wake the workers.
    assert_eq!(fetch_one(pool, worker).await, Some(ids[2]));
    sqlx::query(
        "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(ids[3])
    .execute(pool)
    .await
    .unwrap();
    let fail = format!(
        "SELECT procrastinate_finish_job_v1({}, 'failed', false)",
        ids[2]
    );
    assert_eq!(notifications_of(pool, &mut listener, &fail).await, []);

    // Brought forward, it is announced (migration 0016); its lock is free.
    let unscheduled = format!(
        "UPDATE procrastinate_jobs SET scheduled_at = NULL WHERE id = {}",
        ids[3]
    );
    assert_eq!(
        notifications_of(pool, &mut listener, &unscheduled).await,
        wake_up("a", ids[3])
    );
    // A retry at once: the retried job is its own successor, announced once.
    assert_eq!(fetch_one(pool, worker).await, Some(ids[3]));
    let retry = format!(
        "SELECT procrastinate_retry_job_v1({}, now(), NULL, NULL, NULL)",
        ids[3]
    );
    assert_eq!(
        notifications_of(pool, &mut listener, &retry).await,
        wake_up("a", ids[3])
    );
}

/// One statement that ends jobs of several locks announces each lock's
/// successor: one notification per queue, naming its smallest job.
#[tokio::test]
async fn a_batch_completion_announces_the_successors_of_every_lock_it_releases() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let jobs: Vec<NewJob> = ["L1", "L2", "L3", "L1", "L2", "L3"]
        .iter()
        .zip(["a", "a", "a", "a", "b", "b"])
        .map(|(lock, queue)| {
            NewJob::new("t", json!({}))
                .unwrap()
                .lock(*lock)
                .queue(queue)
        })
        .collect();
    let ids = defer_batch(pool, &jobs).await.unwrap();
    let worker = register_worker(pool).await;
    let claimed: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM dawdle_fetch_jobs_v1(NULL, $1, 10) ORDER BY id")
            .bind(worker)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(claimed, ids[..3]);
    let mut listener = listener(pool).await;
    let finish = "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'doing'";
    let mut expected = wake_up("a", ids[3]);
    expected.extend(wake_up("b", ids[4]));
    expected.sort_by_key(|(channel, payload)| (channel.clone(), payload.to_string()));
    assert_eq!(
        notifications_of(pool, &mut listener, finish).await,
        expected
    );
}

/// The update trigger plans with enable_nestloop = off (0004), which prices
/// the wake-ups' (and the abort notification's) unavoidable nested loops as
/// disabled plans, far above the JIT thresholds; compiled, a wake-up cost
/// 100-500 ms instead of one.
#[tokio::test]
async fn the_wake_ups_of_the_update_trigger_are_never_jit_compiled() {
    let db = TestDatabase::with_schema().await;
    let settings: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT proname::text, coalesce(proconfig, '{}') FROM pg_proc
         WHERE proname IN ('dawdle_notify_runnable_v1', 'dawdle_notify_lock_successors_v1',
                           'dawdle_jobs_after_update_v1')
         ORDER BY proname",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let jit_off = vec!["jit=off".to_string()];
    assert_eq!(
        settings,
        [
            (
                "dawdle_jobs_after_update_v1".to_string(),
                vec!["enable_nestloop=off".to_string(), "jit=off".to_string()]
            ),
            (
                "dawdle_notify_lock_successors_v1".to_string(),
                jit_off.clone()
            ),
            ("dawdle_notify_runnable_v1".to_string(), jit_off),
        ]
    );
}
