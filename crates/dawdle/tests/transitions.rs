//! The Procrastinate 3.x functions and the history, notifications and
//! timestamps the triggers keep, whoever makes a transition: the functions,
//! a batch statement, or a person at psql running the runbook's SQL.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use dawdle::testing::TestDatabase;
use dawdle::{defer, defer_batch, NewJob};
use serde_json::json;
use sqlx::PgPool;

async fn job(pool: &PgPool, task: &str) -> i64 {
    defer(pool, &NewJob::new(task, json!({})).unwrap())
        .await
        .unwrap()
}

async fn register_worker(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Claims one job the way the Python worker does; `None` when nothing is runnable.
async fn fetch_one(pool: &PgPool, queues: Option<&[&str]>, worker: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v2($1::varchar[], $2)")
        .bind(queues)
        .bind(worker)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn fetch_honours_priority_queue_schedule_and_locks() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    let low = defer(pool, &NewJob::new("t", json!({})).unwrap())
        .await
        .unwrap();
    let high = defer(pool, &NewJob::new("t", json!({})).unwrap().priority(10))
        .await
        .unwrap();
    let other_queue = defer(pool, &NewJob::new("t", json!({})).unwrap().queue("other"))
        .await
        .unwrap();
    let _future = defer(
        pool,
        &NewJob::new("t", json!({}))
            .unwrap()
            .scheduled_in(Duration::from_secs(3600))
            .unwrap(),
    )
    .await
    .unwrap();

    assert_eq!(
        fetch_one(pool, Some(&["default"]), worker).await,
        Some(high)
    );
    assert_eq!(fetch_one(pool, Some(&["default"]), worker).await, Some(low));
    assert_eq!(fetch_one(pool, Some(&["default"]), worker).await, None);
    assert_eq!(fetch_one(pool, None, worker).await, Some(other_queue));
    assert_eq!(fetch_one(pool, None, worker).await, None);

    let (status, worker_id, started): (String, Option<i64>, bool) = sqlx::query_as(
        "SELECT status::text, worker_id, started_at IS NOT NULL FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(high)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), worker_id, started),
        ("doing", Some(worker), true)
    );
}

/// The Python library's fetch over several listed queues (one named twice,
/// one that holds nothing) takes the most urgent job among them, then the
/// oldest; with no list, every queue that is not paused. Its finish leaves
/// the job without a worker, with its end time and its history.
#[tokio::test]
async fn fetch_takes_the_most_urgent_then_oldest_of_listed_queues_and_finish_unlinks_the_worker() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    let on = |queue: &str, priority: i32| {
        NewJob::new("t", json!({}))
            .unwrap()
            .queue(queue)
            .priority(priority)
    };
    let mail_old = defer(pool, &on("mail", 0)).await.unwrap();
    let sms_urgent = defer(pool, &on("sms", 3)).await.unwrap();
    let mail_urgent = defer(pool, &on("mail", 3)).await.unwrap();
    let push = defer(pool, &on("push", 9)).await.unwrap();

    let listed: &[&str] = &["mail", "sms", "mail", "nowhere"];
    assert_eq!(
        fetch_one(pool, Some(listed), worker).await,
        Some(sms_urgent)
    );
    assert_eq!(
        fetch_one(pool, Some(listed), worker).await,
        Some(mail_urgent)
    );
    assert_eq!(fetch_one(pool, Some(listed), worker).await, Some(mail_old));
    assert_eq!(fetch_one(pool, Some(listed), worker).await, None);

    dawdle::admin::pause_queue(pool, "push", None, None)
        .await
        .unwrap();
    assert_eq!(fetch_one(pool, None, worker).await, None);
    dawdle::admin::resume_queue(pool, "push").await.unwrap();
    assert_eq!(fetch_one(pool, None, worker).await, Some(push));

    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({push}, 'succeeded', false)"),
    )
    .await;
    let (status, worker_id, attempts, timed): (String, Option<i64>, i32, bool) = sqlx::query_as(
        "SELECT status::text, worker_id, attempts,
                started_at IS NOT NULL AND finished_at >= started_at
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(push)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), worker_id, attempts, timed),
        ("succeeded", None, 1, true)
    );
    assert_eq!(
        common::event_types(pool, push).await,
        ["deferred", "started", "succeeded"]
    );
}

/// Hostile arguments and rows for the Python library's fetch and finish: a
/// megabyte queue name, ten thousand listed queues with a NULL among them,
/// schedules at minus and plus infinity, an id beyond any job. Each gets an
/// answer (a job, none, or the library's own error), never a crash.
#[tokio::test]
async fn fetch_and_finish_answer_hostile_arguments() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    let ever: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, scheduled_at)
         VALUES ('q', 't', '-infinity'), ('q', 't', 'infinity') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();

    let huge = "x".repeat(1 << 20);
    assert_eq!(fetch_one(pool, Some(&[huge.as_str()]), worker).await, None);

    let many: Vec<Option<String>> = (0..10_000)
        .map(|i| Some(format!("n{i}")))
        .chain([None, Some("q".to_string())])
        .collect();
    let fetched: Option<i64> =
        sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v2($1::varchar[], $2)")
            .bind(&many)
            .bind(worker)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(fetched, Some(ever), "the job scheduled at -infinity is due");
    assert_eq!(
        fetch_one(pool, Some(&["q"]), worker).await,
        None,
        "a job scheduled at infinity never comes due"
    );

    let error = sqlx::query("SELECT procrastinate_finish_job_v1($1, 'succeeded', false)")
        .bind(i64::MAX)
        .execute(pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Job was not found or not in \"doing\" or \"todo\" status"),
        "{error}"
    );
}

/// Four claimers side by side, each a registered worker calling `claim`
/// (the jobs one call got) until a call gets none; every job they got,
/// checked to have gone to one claimer only.
async fn claimed_side_by_side<F, Fut>(pool: &PgPool, claim: F) -> HashSet<i64>
where
    F: Fn(PgPool, i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Vec<i64>> + Send,
{
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        let claim = claim.clone();
        claimers.push(tokio::spawn(async move {
            let worker = register_worker(&pool).await;
            let mut mine = Vec::new();
            loop {
                let got = claim(pool.clone(), worker).await;
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    seen
}

/// Python workers fetching one job at a time side by side never get the
/// same job, and together get every one.
#[tokio::test]
async fn concurrent_python_fetches_never_get_the_same_job() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("t", json!({})).unwrap().priority(i % 3))
        .collect();
    let deferred: HashSet<i64> = defer_batch(db.pool(), &jobs)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let seen = claimed_side_by_side(db.pool(), |pool, worker| async move {
        Vec::from_iter(fetch_one(&pool, Some(&["default"]), worker).await)
    })
    .await;
    assert_eq!(seen, deferred);
}

/// Index entries the statement just run on `conn` read from the jobs
/// table's indexes, from the server's statistics: `statement` runs with a
/// forced flush of this session's counters after it.
async fn index_entries_read_by(conn: &mut sqlx::PgConnection, statement: &str) -> i64 {
    let before = index_entries_read(conn).await;
    sqlx::raw_sql(&format!("{statement}; SELECT pg_stat_force_next_flush();"))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    index_entries_read(conn).await - before
}

/// Index entries read from the jobs table's indexes so far, as the
/// statistics show them now (not the transaction's snapshot of them).
async fn index_entries_read(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT sum(idx_tup_read)::bigint FROM pg_stat_user_indexes
         WHERE relname = 'procrastinate_jobs'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// A claim for listed queues starts at each listed queue's first job in the
/// per-queue index: however many jobs of other queues come before it in
/// claim order, and whatever the statistics say about the queues, it never
/// reads through them. Both claims are checked: the Python
/// library's fetch and dawdle's own (with and without a floor).
#[tokio::test]
async fn a_claim_for_listed_queues_never_reads_through_other_queues_jobs() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    let backlog: Vec<NewJob> = (0..5_000)
        .map(|_| NewJob::new("t", json!({})).unwrap().queue("bulk"))
        .collect();
    defer_batch(pool, &backlog).await.unwrap();
    // Statistics that know of one queue only: those of a table analyzed
    // before the other queue had jobs, or whose sample missed its few.
    exec(pool, "ANALYZE procrastinate_jobs").await;
    let mail: Vec<NewJob> = (0..3)
        .map(|_| NewJob::new("t", json!({})).unwrap().queue("mail"))
        .collect();
    let mail = defer_batch(pool, &mail).await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    for (claim, statement) in [
        (
            "procrastinate_fetch_job_v2",
            format!("SELECT id FROM procrastinate_fetch_job_v2(ARRAY['mail'], {worker})"),
        ),
        (
            "dawdle_claim_jobs_v2 without a floor",
            format!("SELECT * FROM dawdle_claim_jobs_v2(ARRAY['mail'], {worker}, 10, NULL, NULL)"),
        ),
        (
            "dawdle_claim_jobs_v2 from a floor",
            format!(
                "SELECT * FROM dawdle_claim_jobs_v2(ARRAY['mail'], {worker}, 10, 0, {})",
                mail[0]
            ),
        ),
    ] {
        exec(
            pool,
            "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL
             WHERE queue_name = 'mail'",
        )
        .await;
        let read = index_entries_read_by(&mut conn, &statement).await;
        let claimed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'mail' AND status = 'doing'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(claimed > 0, "{claim} claimed none of the mail queue's jobs");
        assert!(
            read < 100,
            "{claim} read {read} index entries to claim the mail queue's jobs behind 5,000 of another queue"
        );
    }
}

#[tokio::test]
async fn a_lock_runs_one_job_at_a_time_in_priority_then_id_order() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    let first = defer(pool, &NewJob::new("t", json!({})).unwrap().lock("L"))
        .await
        .unwrap();
    let second = defer(pool, &NewJob::new("t", json!({})).unwrap().lock("L"))
        .await
        .unwrap();
    let urgent = defer(
        pool,
        &NewJob::new("t", json!({})).unwrap().lock("L").priority(5),
    )
    .await
    .unwrap();
    let free = job(pool, "t").await;

    // A batch claim takes at most one job of a lock: the most urgent.
    let claimed: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM dawdle_fetch_jobs_v1(NULL, $1, 10) ORDER BY id")
            .bind(worker)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(claimed, [urgent, free]);
    // While it runs, the lock's other jobs wait.
    assert_eq!(fetch_one(pool, None, worker).await, None);
    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({urgent}, 'succeeded', false)"),
    )
    .await;
    assert_eq!(fetch_one(pool, None, worker).await, Some(first));
    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({first}, 'failed', false)"),
    )
    .await;
    assert_eq!(fetch_one(pool, None, worker).await, Some(second));
}

#[tokio::test]
async fn an_earlier_waiting_job_blocks_its_lock_even_when_scheduled_later() {
    // Procrastinate's rule: any earlier todo job of the lock blocks, whatever
    // its schedule or queue.
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;
    defer(
        pool,
        &NewJob::new("t", json!({}))
            .unwrap()
            .lock("L")
            .queue("elsewhere")
            .scheduled_in(Duration::from_secs(3600))
            .unwrap(),
    )
    .await
    .unwrap();
    defer(pool, &NewJob::new("t", json!({})).unwrap().lock("L"))
        .await
        .unwrap();
    assert_eq!(fetch_one(pool, Some(&["default"]), worker).await, None);
}

#[tokio::test]
async fn concurrent_claimers_never_get_the_same_job() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..400)
        .map(|_| NewJob::new("t", json!({})).unwrap())
        .collect();
    defer_batch(db.pool(), &jobs).await.unwrap();
    let seen = claimed_side_by_side(db.pool(), |pool, worker| async move {
        sqlx::query_scalar("SELECT id FROM dawdle_fetch_jobs_v1(NULL, $1, 7)")
            .bind(worker)
            .fetch_all(&pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(seen.len(), 400);
    let started: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_events WHERE type = 'started'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(started, 400);
}

#[tokio::test]
async fn every_transition_records_its_event_and_timestamps() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker = register_worker(pool).await;

    // Success.
    let ok = job(pool, "t").await;
    assert_eq!(fetch_one(pool, None, worker).await, Some(ok));
    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({ok}, 'succeeded', false)"),
    )
    .await;
    assert_eq!(
        common::event_types(pool, ok).await,
        ["deferred", "started", "succeeded"]
    );
    let (attempts, started, finished, ordered): (i32, bool, bool, bool) = sqlx::query_as(
        "SELECT attempts, started_at IS NOT NULL, finished_at IS NOT NULL,
                created_at <= started_at AND started_at <= finished_at
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(ok)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (attempts, started, finished, ordered),
        (1, true, true, true)
    );

    // Retry, then failure, then manual retry (v2), then cancel.
    let flaky = job(pool, "t").await;
    assert_eq!(fetch_one(pool, None, worker).await, Some(flaky));
    exec(
        pool,
        &format!("SELECT procrastinate_retry_job_v2({flaky}, now(), NULL, NULL, NULL)"),
    )
    .await;
    let (status, attempts, started): (String, i32, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "SELECT status::text, attempts, started_at FROM procrastinate_jobs WHERE id = $1",
        )
        .bind(flaky)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!((status.as_str(), attempts, started), ("todo", 1, None));
    assert_eq!(fetch_one(pool, None, worker).await, Some(flaky));
    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({flaky}, 'failed', false)"),
    )
    .await;
    // v1 only retries running jobs.
    let error = sqlx::query(&format!(
        "SELECT procrastinate_retry_job_v1({flaky}, now(), NULL, NULL, NULL)"
    ))
    .execute(pool)
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains(r#"not in "doing" status"#),
        "{error}"
    );
    exec(
        pool,
        &format!("SELECT procrastinate_retry_job_v2({flaky}, NULL, 4, 'q2', 'L2')"),
    )
    .await;
    let (status, priority, queue, lock, finished): (String, i32, String, String, bool) = sqlx::query_as(
        "SELECT status::text, priority, queue_name, lock, finished_at IS NULL FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(flaky)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (
            status.as_str(),
            priority,
            queue.as_str(),
            lock.as_str(),
            finished
        ),
        ("todo", 4, "q2", "L2", true)
    );
    let cancelled: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT procrastinate_cancel_job_v1({flaky}, false, false)"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(cancelled, Some(flaky));
    assert_eq!(
        common::event_types(pool, flaky).await,
        [
            "deferred",
            "started",
            "scheduled",
            "deferred_for_retry",
            "started",
            "failed",
            "retried",
            "cancelled"
        ]
    );

    // Abort of a running job: flag, event; a retry then fails it without
    // counting an attempt.
    let long = job(pool, "t").await;
    assert_eq!(fetch_one(pool, None, worker).await, Some(long));
    exec(
        pool,
        &format!("SELECT procrastinate_cancel_job_v1({long}, true, false)"),
    )
    .await;
    exec(
        pool,
        &format!("SELECT procrastinate_retry_job_v2({long}, now(), NULL, NULL, NULL)"),
    )
    .await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status::text, attempts FROM procrastinate_jobs WHERE id = $1")
            .bind(long)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("failed", 0));
    assert_eq!(
        common::event_types(pool, long).await,
        ["deferred", "started", "abort_requested", "failed"]
    );

    // Finishing a job that never ran counts as cancelling it.
    let never = job(pool, "t").await;
    exec(
        pool,
        &format!("SELECT procrastinate_finish_job_v1({never}, 'succeeded', false)"),
    )
    .await;
    assert_eq!(
        common::event_types(pool, never).await,
        ["deferred", "cancelled"]
    );
}

#[tokio::test]
async fn the_functions_reject_what_procrastinate_rejects() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = job(pool, "t").await;
    let bad_status = sqlx::query(&format!(
        "SELECT procrastinate_finish_job_v1({id}, 'todo', false)"
    ))
    .execute(pool)
    .await
    .unwrap_err();
    assert!(
        bad_status
            .to_string()
            .contains("End status should be either"),
        "{bad_status}"
    );
    let missing = sqlx::query("SELECT procrastinate_finish_job_v1(999999, 'succeeded', false)")
        .execute(pool)
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Job was not found"),
        "{missing}"
    );
    let nothing: Option<i64> =
        sqlx::query_scalar("SELECT procrastinate_cancel_job_v1(999999, true, false)")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(nothing, None);
    // A todo job may never carry an abort request.
    let violation = sqlx::query(&format!(
        "UPDATE procrastinate_jobs SET abort_requested = true WHERE id = {id}"
    ))
    .execute(pool)
    .await
    .unwrap_err();
    assert!(
        violation
            .to_string()
            .contains("check_not_todo_abort_requested"),
        "{violation}"
    );
}

#[tokio::test]
async fn deleting_a_job_deletes_its_history_and_unlinks_periodic_defers() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let periodic = "SELECT procrastinate_defer_periodic_job_v2('default', NULL, NULL, 'tick', 0, 'p', $1, '{\"timestamp\": 1}')";
    let first: Option<i64> = sqlx::query_scalar(periodic)
        .bind(100_i64)
        .fetch_one(pool)
        .await
        .unwrap();
    let again: Option<i64> = sqlx::query_scalar(periodic)
        .bind(100_i64)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(again, None, "a tick is deferred once");
    let next: Option<i64> = sqlx::query_scalar(periodic)
        .bind(160_i64)
        .fetch_one(pool)
        .await
        .unwrap();
    let rows: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT defer_timestamp, job_id FROM procrastinate_periodic_defers")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(rows, [(160, next)], "older ticks are forgotten");

    // delete_job=true removes the row and its events; the defer row is unlinked.
    let worker = register_worker(pool).await;
    assert_eq!(fetch_one(pool, None, worker).await, first);
    exec(
        pool,
        &format!(
            "SELECT procrastinate_finish_job_v1({}, 'succeeded', true)",
            first.unwrap()
        ),
    )
    .await;
    assert!(common::event_types(pool, first.unwrap()).await.is_empty());
    exec(
        pool,
        &format!(
            "DELETE FROM procrastinate_jobs WHERE id = {}",
            next.unwrap()
        ),
    )
    .await;
    let unlinked: Option<i64> =
        sqlx::query_scalar("SELECT job_id FROM procrastinate_periodic_defers")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(unlinked, None);
}

#[tokio::test]
async fn stalled_workers_are_pruned_and_their_jobs_stay_doing_without_a_worker() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let alive = register_worker(pool).await;
    let dead = register_worker(pool).await;
    let id = job(pool, "t").await;
    assert_eq!(fetch_one(pool, None, dead).await, Some(id));
    exec(pool, &format!("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = {dead}")).await;
    exec(
        pool,
        &format!("SELECT procrastinate_update_heartbeat_v1({alive})"),
    )
    .await;
    let pruned: Vec<i64> =
        sqlx::query_scalar("SELECT worker_id FROM procrastinate_prune_stalled_workers_v1(60)")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(pruned, [dead]);
    let (status, worker): (String, Option<i64>) =
        sqlx::query_as("SELECT status::text, worker_id FROM procrastinate_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), worker), ("doing", None));
    exec(
        pool,
        &format!("SELECT procrastinate_unregister_worker_v1({alive})"),
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_batch_insert_notifies_once_per_queue_and_on_the_any_queue_channel() {
    let db = TestDatabase::with_schema().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pool())
        .await
        .unwrap();
    listener
        .listen_all([
            "procrastinate_queue_v1#a",
            "procrastinate_queue_v1#b",
            "procrastinate_any_queue_v1",
        ])
        .await
        .unwrap();
    let jobs: Vec<NewJob> = (0..10)
        .map(|i| {
            NewJob::new("t", json!({}))
                .unwrap()
                .queue(if i < 5 { "a" } else { "b" })
        })
        .collect();
    let ids = defer_batch(db.pool(), &jobs).await.unwrap();
    // A marker notification tells us everything before it has arrived.
    exec(
        db.pool(),
        "SELECT pg_notify('procrastinate_any_queue_v1', 'end')",
    )
    .await;
    let mut received = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notifications within 10 s")
            .unwrap();
        if n.payload() == "end" {
            break;
        }
        received.push((n.channel().to_string(), n.payload().to_string()));
    }
    let mut received: Vec<(String, serde_json::Value)> = received
        .into_iter()
        .map(|(channel, payload)| (channel, serde_json::from_str(&payload).unwrap()))
        .collect();
    received.sort_by_key(|(channel, payload)| (channel.clone(), payload.to_string()));
    let payload = |id: i64| json!({"type": "job_inserted", "job_id": id});
    let mut expected = vec![
        ("procrastinate_any_queue_v1".to_string(), payload(ids[0])),
        ("procrastinate_any_queue_v1".to_string(), payload(ids[5])),
        ("procrastinate_queue_v1#a".to_string(), payload(ids[0])),
        ("procrastinate_queue_v1#b".to_string(), payload(ids[5])),
    ];
    expected.sort_by_key(|(channel, payload)| (channel.clone(), payload.to_string()));
    assert_eq!(received, expected);
}

#[tokio::test]
async fn hand_written_transitions_keep_events_and_timestamps_right() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let id = job(pool, "t").await;
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = {id}"),
    )
    .await;
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = {id}"),
    )
    .await;
    let (started, finished): (bool, bool) = sqlx::query_as(
        "SELECT started_at IS NOT NULL, finished_at IS NOT NULL FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(started && finished);
    // "If bad data: manually mark as succeeded": a new finish time.
    let failed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT finished_at FROM procrastinate_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = {id}"),
    )
    .await;
    let succeeded_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT finished_at FROM procrastinate_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(succeeded_at > failed_at);
    // Back to todo by hand (a manual retry): both timestamps cleared.
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'todo' WHERE id = {id}"),
    )
    .await;
    let (started, finished): (bool, bool) = sqlx::query_as(
        "SELECT started_at IS NULL, finished_at IS NULL FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(started && finished);
    // failed -> succeeded and succeeded -> todo are not transitions of the
    // Procrastinate history, so they record nothing.
    assert_eq!(
        common::event_types(pool, id).await,
        ["deferred", "started", "failed"]
    );
}

/// Regression: the update trigger's join was planned once per session for
/// the first statement's size; a large update after a one-row one then took
/// quadratic time (seconds for ten thousand rows, minutes for more).
#[tokio::test]
async fn a_large_update_after_a_small_one_in_the_same_session_stays_linear() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|_| NewJob::new("t", json!({})).unwrap())
        .collect();
    defer_batch(db.pool(), &jobs).await.unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = (SELECT min(id) FROM procrastinate_jobs);
         UPDATE procrastinate_jobs SET status = 'doing' WHERE status = 'todo';",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(proconfig) FROM pg_proc WHERE proname = 'dawdle_jobs_after_update_v1'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    // 0004's planner setting, kept by 0005's version of the trigger, which
    // adds the JIT setting.
    assert_eq!(plan, ["enable_nestloop=off", "jit=off"]);
    let started: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_events WHERE type = 'started'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(started, 20_000);
}
