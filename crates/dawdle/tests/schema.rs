//! The schema's migrations: applying, re-applying, concurrent applies, and
//! `check` reporting what is missing.

use dawdle::schema;
use dawdle::testing::TestDatabase;

#[tokio::test]
async fn apply_creates_the_schema_and_is_idempotent() {
    let db = TestDatabase::empty().await;
    let mut conn = db.pool().acquire().await.unwrap();

    let before = schema::check(&mut conn).await.unwrap();
    assert!(!before.is_current());
    assert_eq!(before.version, 0);
    assert!(
        before.problems[0].contains("schema not applied"),
        "{before:?}"
    );

    let first = schema::apply(&mut conn).await.unwrap();
    assert_eq!(first.applied.len(), schema::MIGRATIONS.len());
    assert_eq!(first.version, schema::latest_version());

    let second = schema::apply(&mut conn).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");

    let after = schema::check(&mut conn).await.unwrap();
    assert!(after.is_current(), "{after:?}");
    assert_eq!(after.version, schema::latest_version());
}

#[tokio::test]
async fn concurrent_applies_serialise_and_apply_once() {
    let db = TestDatabase::empty().await;
    // Four connections applying at once (joined, not spawned: the futures
    // borrow their connections).
    let apply_on_own_connection = || async {
        let mut conn = db.pool().acquire().await.unwrap();
        schema::apply(&mut conn).await.unwrap()
    };
    let reports = tokio::join!(
        apply_on_own_connection(),
        apply_on_own_connection(),
        apply_on_own_connection(),
        apply_on_own_connection()
    );
    let applied_total = reports.0.applied.len()
        + reports.1.applied.len()
        + reports.2.applied.len()
        + reports.3.applied.len();
    assert_eq!(applied_total, schema::MIGRATIONS.len());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM dawdle_migrations")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, schema::MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn check_reports_a_dropped_function_and_index() {
    let db = TestDatabase::with_schema().await;
    sqlx::raw_sql(
        "DROP FUNCTION procrastinate_fetch_job_v2(varchar[], bigint);
         DROP INDEX procrastinate_jobs_queueing_lock_idx_v1;",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let report = schema::check(&mut conn).await.unwrap();
    assert!(!report.is_current());
    let problems = report.problems.join("\n");
    assert!(
        problems.contains("missing function procrastinate_fetch_job_v2(varchar[], bigint)"),
        "{problems}"
    );
    assert!(
        problems.contains("missing table or index procrastinate_jobs_queueing_lock_idx_v1"),
        "{problems}"
    );
}

#[tokio::test]
async fn apply_refuses_a_schema_it_did_not_create() {
    let db = TestDatabase::empty().await;
    sqlx::query("CREATE TABLE procrastinate_jobs (id bigserial PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let error = schema::apply(&mut conn).await.unwrap_err();
    assert!(
        matches!(error, schema::SchemaError::ForeignSchema { .. }),
        "{error}"
    );
    // A table without Procrastinate 3's abort_requested column is older
    // than what dawdle adopts: the message says how to upgrade it.
    let message = error.to_string();
    assert!(message.contains("2.x or older"), "{message}");
    assert!(message.contains("upgrade this one to 3.x"), "{message}");
    // Nothing was created next to the foreign table.
    let ours: bool = sqlx::query_scalar("SELECT to_regclass('dawdle_migrations') IS NOT NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(!ours);
}

#[tokio::test]
async fn apply_refuses_a_migration_applied_with_other_contents() {
    let db = TestDatabase::with_schema().await;
    sqlx::query("UPDATE dawdle_migrations SET checksum = '0000' WHERE version = 1")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let error = schema::apply(&mut conn).await.unwrap_err();
    assert!(
        matches!(
            error,
            schema::SchemaError::ChecksumMismatch { version: 1, .. }
        ),
        "{error}"
    );
    let report = schema::check(&mut conn).await.unwrap();
    assert!(!report.is_current());
}

#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind() {
    // Something in the way of the first migration: it must roll back whole.
    let db = TestDatabase::empty().await;
    sqlx::query("CREATE TYPE procrastinate_job_to_defer_v1 AS (x int)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let error = schema::apply(&mut conn).await.unwrap_err();
    assert!(
        matches!(error, schema::SchemaError::Migration { version: 1, .. }),
        "{error}"
    );
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class
         WHERE relname IN ('procrastinate_jobs', 'procrastinate_events', 'dawdle_migrations')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
}

/// Migration 15 counts the queues as 100 for the planner; the figure takes
/// effect at the column's next ANALYZE, which `apply` runs once the
/// migration has committed (on a table with jobs), so a table whose
/// statistics saw one queue plans its listed-queue claims right from then on.
#[tokio::test]
async fn apply_gathers_the_queue_statistics_migration_15_fixes() {
    let db = TestDatabase::with_schema().await;
    let mut conn = db.pool().acquire().await.unwrap();
    // An empty table is not analyzed (it would be recorded as known empty).
    let tuples: f32 = sqlx::query_scalar(
        "SELECT reltuples FROM pg_class WHERE oid = 'procrastinate_jobs'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(tuples, -1.0);
    // A table analyzed with one queue, before migration 15 was applied.
    sqlx::raw_sql(
        "ALTER TABLE procrastinate_jobs ALTER COLUMN queue_name RESET (n_distinct);
         INSERT INTO procrastinate_jobs (queue_name, task_name)
         SELECT 'bulk', 't' FROM generate_series(1, 1000);
         ANALYZE procrastinate_jobs;
         DELETE FROM dawdle_migrations WHERE version = 15;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let queues = "SELECT n_distinct FROM pg_stats
                  WHERE schemaname = current_schema() AND tablename = 'procrastinate_jobs'
                    AND attname = 'queue_name'";
    let seen: f32 = sqlx::query_scalar(queues)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 1.0);

    let report = schema::apply(&mut conn).await.unwrap();
    assert_eq!(
        report.applied,
        [(15, "claims_for_listed_queues_read_only_their_jobs")]
    );
    let seen: f32 = sqlx::query_scalar(queues)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 100.0);
}
