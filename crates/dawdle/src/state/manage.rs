//! The transitions people ask for: retry, cancel, clear, purge. The admin
//! module checks and explains; these only change rows.

use std::time::Duration;

use sqlx::PgPool;

/// One failed job back to `todo`, runnable now, one more attempt counted
/// (`procrastinate_retry_job_v2`, as the Python shell does it).
pub(crate) async fn retry_one(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    // A failed job may still carry the abort request of the attempt that
    // failed; the retry starts afresh (the function itself refuses such a
    // job, as Procrastinate's constraint does).
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE procrastinate_jobs SET abort_requested = false
         WHERE id = $1 AND status = 'failed' AND abort_requested",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT procrastinate_retry_job_v2($1, now(), NULL, NULL, NULL)")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// [`retry_one`] for every failed job of `queue` and `task` (each `None`
/// for all) at once; returns how many.
pub(crate) async fn retry_matching(
    pool: &PgPool,
    queue: Option<&str>,
    task: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE procrastinate_jobs
         SET status = 'todo', attempts = attempts + 1, scheduled_at = now(),
             started_at = NULL, finished_at = NULL, abort_requested = false
         WHERE status = 'failed'
           AND ($1::varchar IS NULL OR queue_name = $1)
           AND ($2::varchar IS NULL OR task_name = $2)",
    )
    .bind(queue)
    .bind(task)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels a `todo` job, or flags a `doing` one for abort
/// (`procrastinate_cancel_job_v1`); `None` when the job was in neither.
pub(crate) async fn cancel(pool: &PgPool, id: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT procrastinate_cancel_job_v1($1, true, false)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Deletes the `todo` jobs of `queue` (all queues when `None`); returns how many.
pub(crate) async fn clear_pending(pool: &PgPool, queue: Option<&str>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM procrastinate_jobs
         WHERE status = 'todo' AND ($1::varchar IS NULL OR queue_name = $1)",
    )
    .bind(queue)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes, among the `window` jobs with ids after `after`, those in one of
/// `statuses` that finished longer ago than `older_than` (of `queue`, if
/// given), skipping rows locked by others. Returns how many were deleted
/// and the last id examined (`None` past the last job).
pub(crate) async fn purge_window(
    pool: &PgPool,
    after: i64,
    window: i64,
    statuses: &[&str],
    older_than: Duration,
    queue: Option<&str>,
) -> Result<(u64, Option<i64>), sqlx::Error> {
    let (removed, last): (i64, Option<i64>) = sqlx::query_as(
        "WITH window_ids AS (
             SELECT id FROM procrastinate_jobs
             WHERE id > $1 ORDER BY id LIMIT $5
         ),
         doomed AS (
             SELECT job.id FROM procrastinate_jobs AS job
             JOIN window_ids USING (id)
             WHERE job.status = ANY ($2::text[]::procrastinate_job_status[])
               AND job.finished_at < now() - make_interval(secs => $3)
               AND ($4::varchar IS NULL OR job.queue_name = $4)
             FOR UPDATE OF job SKIP LOCKED
         ),
         removed AS (
             DELETE FROM procrastinate_jobs WHERE id IN (SELECT id FROM doomed) RETURNING id
         )
         SELECT (SELECT count(*) FROM removed), (SELECT max(id) FROM window_ids)",
    )
    .bind(after)
    .bind(statuses)
    .bind(older_than.as_secs_f64())
    .bind(queue)
    .bind(window)
    .fetch_one(pool)
    .await?;
    Ok((removed as u64, last))
}
