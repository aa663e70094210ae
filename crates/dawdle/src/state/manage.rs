//! The transitions people ask for: retry, cancel, clear, purge. The admin
//! module checks and explains; these only change rows.

use std::time::Duration;

use sqlx::PgPool;

use super::refused::{refused_for_its_data, why_refused};

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

/// The failed jobs of `queue` and `task` (each `None` for all) that a
/// retry can put back to `todo` together: of those sharing a queueing
/// lock, only the newest, and none whose queueing lock a waiting job holds
/// (at most one waiting job per queueing lock). Columns: id, and why it is
/// left out (null for the jobs retried).
const RETRYABLE: &str = "
    SELECT job.id,
           CASE WHEN job.queueing_lock IS NULL THEN NULL
                WHEN EXISTS (SELECT 1 FROM procrastinate_jobs AS waiting
                             WHERE waiting.status = 'todo'
                               AND waiting.queueing_lock = job.queueing_lock)
                THEN 'another job waits with the same queueing lock'
                WHEN row_number() OVER (PARTITION BY job.queueing_lock ORDER BY job.id DESC) > 1
                THEN 'a newer failed job with the same queueing lock is retried instead'
           END AS left_out
    FROM procrastinate_jobs AS job
    WHERE job.status = 'failed'
      AND ($1::varchar IS NULL OR job.queue_name = $1)
      AND ($2::varchar IS NULL OR job.task_name = $2)";

/// What [`retry_matching`] did, or would do.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retried {
    pub(crate) retried: u64,
    /// Jobs left failed, each with why.
    pub(crate) left_out: Vec<(i64, String)>,
}

/// [`retry_one`] for every failed job of `queue` and `task` (each `None`
/// for all) at once, but for those that cannot go back together (see
/// [`RETRYABLE`]); with `dry_run`, only counts. When the database refuses
/// the statement for what one job holds, each job is retried alone, so one
/// cannot hold back the others.
pub(crate) async fn retry_matching(
    pool: &PgPool,
    queue: Option<&str>,
    task: Option<&str>,
    dry_run: bool,
) -> Result<Retried, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let candidates: Vec<(i64, Option<String>)> =
        sqlx::query_as(&format!("{RETRYABLE} ORDER BY job.id"))
            .bind(queue)
            .bind(task)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
    let mut done = Retried::default();
    let mut ids = Vec::with_capacity(candidates.len());
    for (id, left_out) in candidates {
        match left_out {
            Some(why) => done.left_out.push((id, why)),
            None => ids.push(id),
        }
    }
    if dry_run {
        done.retried = ids.len() as u64;
        return Ok(done);
    }
    const RETRY: &str = "UPDATE procrastinate_jobs
         SET status = 'todo',
             attempts = attempts + CASE WHEN attempts < 2147483647 THEN 1 ELSE 0 END,
             scheduled_at = now(), started_at = NULL, finished_at = NULL,
             abort_requested = false
         WHERE id = ANY ($1) AND status = 'failed'";
    {
        use sqlx::Connection;
        let mut all = (*tx).begin().await?;
        match sqlx::query(RETRY).bind(&ids).execute(&mut *all).await {
            Ok(changed) => {
                all.commit().await?;
                tx.commit().await?;
                done.retried = changed.rows_affected();
                return Ok(done);
            }
            Err(error) if refused_for_its_data(&error) => all.rollback().await?,
            Err(error) => return Err(error),
        }
        for id in ids {
            let mut one = (*tx).begin().await?;
            match sqlx::query(RETRY).bind([id]).execute(&mut *one).await {
                Ok(changed) => {
                    one.commit().await?;
                    done.retried += changed.rows_affected();
                }
                Err(error) if refused_for_its_data(&error) => {
                    one.rollback().await?;
                    done.left_out.push((id, why_refused(&error)));
                }
                Err(error) => return Err(error),
            }
        }
    }
    tx.commit().await?;
    done.left_out.sort_unstable();
    Ok(done)
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
    .bind(crate::duration::age_seconds(older_than))
    .bind(queue)
    .bind(window)
    .fetch_one(pool)
    .await?;
    Ok((removed as u64, last))
}
