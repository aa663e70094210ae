//! Operations that change jobs: the runbook's procedures as safe commands.
//!
//! Each one changes only jobs in the state the procedure is about (a retry
//! only touches `failed` jobs, a reset only `doing` ones), says how many it
//! changed, and leaves a trace in the jobs' history through the same triggers
//! as every other transition.

use std::time::Duration;

use sqlx::PgPool;

use crate::job::JobStatus;
use crate::state::{self, PutBack, Selection};
use crate::task_error::ErrorKind;

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
    state::retry_one(pool, id).await.map_err(database(ACTION))
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
    state::retry_matching(pool, filter.queue.as_deref(), filter.task.as_deref())
        .await
        .map_err(database(ACTION))
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
        ResetTarget::OlderThan(age) => (None, Some(*age)),
    };
    let reset = state::put_back(
        pool,
        &PutBack {
            which: Selection {
                job_id: id,
                started_before: older_than,
                ..Selection::default()
            },
            count_attempt: false,
            note: Some((
                ErrorKind::Stalled,
                "reset from doing to todo by an operator (`dawdle reset-stalled`)".to_string(),
            )),
        },
    )
    .await
    .map_err(database(ACTION))?;
    Ok(reset.into_iter().map(|(id, _)| id).collect())
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
    let changed = state::cancel(pool, id).await.map_err(database(ACTION))?;
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
    state::clear_pending(pool, queue)
        .await
        .map_err(database("clear pending jobs"))
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
        let (removed, last) = state::purge_window(
            pool,
            after,
            window,
            &statuses,
            options.older_than,
            options.queue.as_deref(),
        )
        .await
        .map_err(database(ACTION))?;
        let Some(last) = last else { break };
        after = last;
        deleted += removed;
        progress(PurgeProgress {
            deleted,
            scanned_up_to: after,
            max_id,
        });
    }
    Ok(deleted)
}
