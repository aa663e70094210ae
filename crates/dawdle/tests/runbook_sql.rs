//! The SQL of the operations runbook, run exactly as written there, against
//! jobs in known states: each statement must run unmodified and mean what its
//! comment in the runbook says.

mod common;

use dawdle::testing::TestDatabase;
use dawdle::{defer, NewJob};
use serde_json::json;
use sqlx::PgPool;

const CLEAR_PENDING: &str = "DELETE FROM procrastinate_jobs WHERE status = 'todo';";

const RESET_STUCK_JOB: &str = "UPDATE procrastinate_jobs
SET status = 'todo', started_at = NULL
WHERE id = <job_id> AND status = 'doing';";

const BULK_RESET_STUCK: &str = "UPDATE procrastinate_jobs
SET status = 'todo', started_at = NULL
WHERE status = 'doing'
  AND started_at < NOW() - INTERVAL '10 minutes';";

/// The SQL of one of the runbook's monitoring queries, as `dawdle check`
/// runs it (docs/runbook.md holds the same text, which its own test checks).
fn check_sql(name: &str) -> &'static str {
    dawdle::admin::CHECKS
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .sql
}

async fn new_job(pool: &PgPool, task: &str, queue: &str) -> i64 {
    defer(pool, &NewJob::new(task, json!({})).unwrap().queue(queue))
        .await
        .unwrap()
}

/// Puts a job in `doing` as if it had started `minutes_ago`.
async fn start(pool: &PgPool, id: i64, minutes_ago: i32) {
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = 'doing',
                started_at = now() - make_interval(mins => $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(minutes_ago)
    .execute(pool)
    .await
    .unwrap();
}

async fn finish(pool: &PgPool, id: i64, status: &str, seconds: f64) {
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = $2::procrastinate_job_status,
                started_at = now() - make_interval(secs => $3), finished_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(seconds)
    .execute(pool)
    .await
    .unwrap();
}

async fn ids(pool: &PgPool, sql: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT id FROM ({}) AS q",
        sql.trim_end_matches(';')
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn monitoring_queries_mean_what_the_runbook_says() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();

    let stuck = new_job(pool, "email.send", "email").await;
    start(pool, stuck, 20).await;
    let recent = new_job(pool, "email.send", "email").await;
    start(pool, recent, 1).await;
    let _waiting_email = new_job(pool, "email.send", "email").await;
    let _waiting_crm = new_job(pool, "crm.notify", "crm").await;
    let _waiting_crm2 = new_job(pool, "crm.notify", "crm").await;
    for seconds in [2.0, 4.0] {
        let done = new_job(pool, "email.send", "email").await;
        finish(pool, done, "succeeded", seconds).await;
    }
    let failed = new_job(pool, "crm.notify", "crm").await;
    finish(pool, failed, "failed", 1.0).await;
    sqlx::query(
        "INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         VALUES ($1, 'error', 'ConnectionError', 'refused', 'ConnectionError: refused'),
                ($1, 'error', 'ConnectionError', 'refused', 'ConnectionError: refused'),
                ($1, 'error', 'TimeoutError', 'slow', 'TimeoutError: slow')",
    )
    .bind(failed)
    .execute(pool)
    .await
    .unwrap();

    assert_eq!(ids(pool, check_sql("stuck-doing")).await, [stuck]);

    let mut errors: Vec<(String, Option<String>, i64)> =
        sqlx::query_as(check_sql("errors-by-type"))
            .fetch_all(pool)
            .await
            .unwrap();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("crm.notify".into(), Some("ConnectionError".into()), 2),
            ("crm.notify".into(), Some("TimeoutError".into()), 1)
        ]
    );

    let failed_count: i64 = sqlx::query_scalar(check_sql("failed-last-hour"))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(failed_count, 1);

    let mut depth: Vec<(String, i64)> = sqlx::query_as(check_sql("queue-depth"))
        .fetch_all(pool)
        .await
        .unwrap();
    depth.sort();
    assert_eq!(depth, [("crm".into(), 2), ("email".into(), 1)]);

    let processed: i64 = sqlx::query_scalar(check_sql("processing-rate"))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(processed, 2);

    let averages: Vec<(String, f64)> = sqlx::query_as(&check_sql("avg-duration").replace(
        "AVG(EXTRACT(EPOCH FROM (finished_at - started_at)))",
        "AVG(EXTRACT(EPOCH FROM (finished_at - started_at)))::float8",
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(averages.len(), 1);
    assert_eq!(averages[0].0, "email.send");
    assert!((averages[0].1 - 3.0).abs() < 0.01, "{averages:?}");
    // And verbatim, as a monitoring system would send it.
    sqlx::raw_sql(check_sql("avg-duration"))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn reset_procedures_put_stuck_jobs_back_with_history() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let stuck = new_job(pool, "t", "default").await;
    start(pool, stuck, 30).await;
    // An abort request on the stuck attempt must not make the reset fail.
    sqlx::query("UPDATE procrastinate_jobs SET abort_requested = true WHERE id = $1")
        .bind(stuck)
        .execute(pool)
        .await
        .unwrap();
    let old_a = new_job(pool, "t", "default").await;
    start(pool, old_a, 15).await;
    let young = new_job(pool, "t", "default").await;
    start(pool, young, 2).await;
    let done = new_job(pool, "t", "default").await;
    finish(pool, done, "succeeded", 1.0).await;

    let single = RESET_STUCK_JOB.replace("<job_id>", &stuck.to_string());
    let result = sqlx::raw_sql(&single).execute(pool).await.unwrap();
    assert_eq!(result.rows_affected(), 1);
    // Only jobs in doing: the finished one is untouched.
    let again = RESET_STUCK_JOB.replace("<job_id>", &done.to_string());
    assert_eq!(
        sqlx::raw_sql(&again)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        0
    );

    let bulk = sqlx::raw_sql(BULK_RESET_STUCK).execute(pool).await.unwrap();
    assert_eq!(
        bulk.rows_affected(),
        1,
        "only the job started 15 minutes ago"
    );

    for id in [stuck, old_a] {
        let (status, started, abort): (String, bool, bool) = sqlx::query_as(
            "SELECT status::text, started_at IS NULL, abort_requested FROM procrastinate_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!((status.as_str(), started, abort), ("todo", true, false));
        assert_eq!(
            common::event_types(pool, id).await.last().unwrap(),
            "deferred_for_retry"
        );
    }
    assert_eq!(common::status(pool, young).await, "doing");
    assert_eq!(common::status(pool, done).await, "succeeded");
}

#[tokio::test]
async fn clear_pending_deletes_only_waiting_jobs_and_their_history() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let waiting = new_job(pool, "t", "default").await;
    let running = new_job(pool, "t", "default").await;
    start(pool, running, 1).await;
    let deleted = sqlx::raw_sql(CLEAR_PENDING).execute(pool).await.unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    assert!(common::event_types(pool, waiting).await.is_empty());
    assert_eq!(common::status(pool, running).await, "doing");
}
