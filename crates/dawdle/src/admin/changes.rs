//! Operations that change jobs: the runbook's procedures as safe commands.
//!
//! Each one changes only jobs in the state the procedure is about (a retry
//! only touches `failed` jobs, a reset only `doing` ones), says how many it
//! changed, and leaves a trace in the jobs' history through the same triggers
//! as every other transition.

use std::time::Duration;

use sqlx::PgPool;

use crate::job::JobStatus;

/// Why a change to one job was refused, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{action}: no job {id}")]
    NoSuchJob { action: &'static str, id: i64 },
    #[error("{action}: job {id} is {status}, {why}")]
    WrongStatus {
        action: &'static str,
        id: i64,
        status: JobStatus,
        why: &'static str,
    },
    #[error("{action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn database(action: &'static str) -> impl FnOnce(sqlx::Error) -> ChangeError {
    move |source| ChangeError::Database { action, source }
}

async fn status_of(pool: &PgPool, id: i64, action: &'static str) -> Result<JobStatus, ChangeError> {
    sqlx::query_scalar("SELECT status FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(database(action))?
        .ok_or(ChangeError::NoSuchJob { action, id })
}

/// Retries one failed job now (`procrastinate_retry_job_v2`, as the Python
/// shell does): back to `todo`, one more attempt counted, a `retried` event.
pub async fn retry(pool: &PgPool, id: i64) -> Result<(), ChangeError> {
    const ACTION: &str = "retry job";
    let status = status_of(pool, id, ACTION).await?;
    if status != JobStatus::Failed {
        return Err(ChangeError::WrongStatus {
            action: ACTION,
            id,
            status,
            why: match status {
                JobStatus::Todo => "already waiting to run",
                JobStatus::Doing => {
                    "running now; if it is stuck, use `dawdle reset-stalled` instead"
                }
                JobStatus::Succeeded => "already succeeded; defer a new job to run it again",
                _ => "not failed; only failed jobs can be retried",
            },
        });
    }
    sqlx::query("SELECT procrastinate_retry_job_v2($1, now(), NULL, NULL, NULL)")
        .bind(id)
        .execute(pool)
        .await
        .map_err(database(ACTION))?;
    Ok(())
}

/// Which failed jobs [`retry_failed`] retries.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter {
    pub queue: Option<String>,
    pub task: Option<String>,
    /// Count them, change nothing.
    pub dry_run: bool,
}

/// Retries every failed job matching `filter` with one statement; returns
/// how many (would be) retried.
pub async fn retry_failed(pool: &PgPool, filter: &RetryFilter) -> Result<u64, ChangeError> {
    const ACTION: &str = "retry failed jobs";
    if filter.dry_run {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM procrastinate_jobs
             WHERE status = 'failed'
               AND ($1::varchar IS NULL OR queue_name = $1)
               AND ($2::varchar IS NULL OR task_name = $2)",
        )
        .bind(&filter.queue)
        .bind(&filter.task)
        .fetch_one(pool)
        .await
        .map_err(database(ACTION))?;
        return Ok(count as u64);
    }
    // The same change as procrastinate_retry_job_v2, for every match at once.
    let done = sqlx::query(
        "UPDATE procrastinate_jobs
         SET status = 'todo', attempts = attempts + 1, scheduled_at = now(),
             started_at = NULL, finished_at = NULL, abort_requested = false
         WHERE status = 'failed'
           AND ($1::varchar IS NULL OR queue_name = $1)
           AND ($2::varchar IS NULL OR task_name = $2)",
    )
    .bind(&filter.queue)
    .bind(&filter.task)
    .execute(pool)
    .await
    .map_err(database(ACTION))?;
    Ok(done.rows_affected())
}

/// Which stuck jobs [`reset_stalled`] puts back.
#[derive(Debug, Clone)]
pub enum ResetTarget {
    /// One job, which must be in `doing`.
    Job(i64),
    /// Every job in `doing` that started longer ago than this.
    OlderThan(Duration),
}

/// The runbook's "reset a stuck job" and "bulk reset": jobs in `doing` go
/// back to `todo`, with a `deferred_for_retry` event and an `error` event of
/// kind `Stalled` saying who reset them. Returns the ids reset.
pub async fn reset_stalled(pool: &PgPool, target: &ResetTarget) -> Result<Vec<i64>, ChangeError> {
    const ACTION: &str = "reset stalled jobs";
    let (id, older_than) = match target {
        ResetTarget::Job(id) => {
            let status = status_of(pool, *id, ACTION).await?;
            if status != JobStatus::Doing {
                return Err(ChangeError::WrongStatus {
                    action: ACTION,
                    id: *id,
                    status,
                    why: "not doing; only jobs in doing can be reset",
                });
            }
            (Some(*id), None)
        }
        ResetTarget::OlderThan(age) => (None, Some(age.as_secs_f64())),
    };
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "WITH reset AS (
             UPDATE procrastinate_jobs
             SET status = 'todo', started_at = NULL, finished_at = NULL, abort_requested = false
             WHERE status = 'doing'
               AND ($1::bigint IS NULL OR id = $1)
               AND ($2::float8 IS NULL OR started_at < now() - make_interval(secs => $2))
             RETURNING id, started_at
         ),
         noted AS (
             INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
             SELECT id, 'error', 'Stalled', 'reset from doing to todo by an operator',
                    'Stalled: the job was put back to todo by `dawdle reset-stalled`'
             FROM reset
         )
         SELECT id FROM reset",
    )
    .bind(id)
    .bind(older_than)
    .fetch_all(pool)
    .await
    .map_err(database(ACTION))?;
    ids.sort_unstable();
    Ok(ids)
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// A waiting job, now `cancelled`.
    Cancelled,
    /// A running job: abort requested; the worker stops it.
    AbortRequested,
}

/// Cancels a waiting job, or asks for a running one to be aborted.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<CancelOutcome, ChangeError> {
    const ACTION: &str = "cancel job";
    let status = status_of(pool, id, ACTION).await?;
    let outcome = match status {
        JobStatus::Todo => CancelOutcome::Cancelled,
        JobStatus::Doing => CancelOutcome::AbortRequested,
        _ => {
            return Err(ChangeError::WrongStatus {
                action: ACTION,
                id,
                status,
                why: "already finished; only waiting or running jobs can be cancelled",
            })
        }
    };
    let changed: Option<i64> =
        sqlx::query_scalar("SELECT procrastinate_cancel_job_v1($1, true, false)")
            .bind(id)
            .fetch_one(pool)
            .await
            .map_err(database(ACTION))?;
    match changed {
        Some(_) => Ok(outcome),
        // It finished between our look and our change.
        None => Err(ChangeError::WrongStatus {
            action: ACTION,
            id,
            status: status_of(pool, id, ACTION).await?,
            why: "finished meanwhile; nothing to cancel",
        }),
    }
}

/// The runbook's "clear all pending jobs": deletes waiting jobs (of one
/// queue, or all) and returns how many. Jobs are lost: callers confirm first.
pub async fn clear_pending(pool: &PgPool, queue: Option<&str>) -> Result<u64, ChangeError> {
    let done = sqlx::query(
        "DELETE FROM procrastinate_jobs WHERE status = 'todo' AND ($1::varchar IS NULL OR queue_name = $1)",
    )
    .bind(queue)
    .execute(pool)
    .await
    .map_err(database("clear pending jobs"))?;
    Ok(done.rows_affected())
}

/// What [`purge`] deletes.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Jobs that finished longer ago than this.
    pub older_than: Duration,
    /// Also failed jobs (by default only succeeded and cancelled ones).
    pub include_failed: bool,
    pub queue: Option<String>,
    /// Count, delete nothing.
    pub dry_run: bool,
    /// Job ids examined (and at most deleted) per statement: small batches
    /// keep locks short.
    pub batch_size: i64,
}

/// Progress of a purge, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeProgress {
    pub deleted: u64,
    /// Highest job id examined so far.
    pub scanned_up_to: i64,
    pub max_id: i64,
}

/// Deletes finished jobs by finish time, in batches walking the primary key,
/// so no statement holds many locks or scans the table twice. Their history
/// goes with them. Returns how many were (or, dry, would be) deleted.
pub async fn purge(
    pool: &PgPool,
    options: &PurgeOptions,
    mut progress: impl FnMut(PurgeProgress),
) -> Result<u64, ChangeError> {
    const ACTION: &str = "purge old jobs";
    let mut statuses = vec!["succeeded", "cancelled", "aborted"];
    if options.include_failed {
        statuses.push("failed");
    }
    let older_than = options.older_than.as_secs_f64();
    if options.dry_run {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM procrastinate_jobs
             WHERE status = ANY ($1::text[]::procrastinate_job_status[])
               AND finished_at < now() - make_interval(secs => $2)
               AND ($3::varchar IS NULL OR queue_name = $3)",
        )
        .bind(&statuses)
        .bind(older_than)
        .bind(&options.queue)
        .fetch_one(pool)
        .await
        .map_err(database(ACTION))?;
        return Ok(count as u64);
    }
    let max_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM procrastinate_jobs")
        .fetch_one(pool)
        .await
        .map_err(database(ACTION))?;
    let window = options.batch_size.max(1);
    let mut after = 0_i64;
    let mut deleted = 0_u64;
    while after < max_id {
        // Examine a window of ids; delete the matches found in it. Walking
        // the primary key makes the whole purge one pass over the table.
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
        .bind(&statuses)
        .bind(older_than)
        .bind(&options.queue)
        .bind(window)
        .fetch_one(pool)
        .await
        .map_err(database(ACTION))?;
        let Some(last) = last else { break };
        after = last;
        deleted += removed as u64;
        progress(PurgeProgress {
            deleted,
            scanned_up_to: after,
            max_id,
        });
    }
    Ok(deleted)
}
