//! Putting `doing` jobs back to `todo`: one statement for every reason a
//! job goes back without an outcome of its own.
//!
//! A worker puts back the jobs a lost claim left under it and, after a
//! crash, every job it still held; upkeep puts back the jobs of workers that
//! stopped sending heartbeats; an operator resets stuck jobs. They differ
//! only in which jobs, whether the attempt counts, and the note left in the
//! history, so those are the parameters and the rest is written once.

use std::time::Duration;

use crate::task_error::ErrorKind;

/// Which `doing` jobs go back. Every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection<'a> {
    /// Only jobs claimed by this worker.
    pub(crate) worker_id: Option<i64>,
    /// Except these (jobs the worker still runs, holds or has an outcome for).
    pub(crate) except: Option<&'a [i64]>,
    /// Only this job.
    pub(crate) job_id: Option<i64>,
    /// Only jobs started longer ago than this.
    pub(crate) started_before: Option<Duration>,
    /// Only jobs whose worker is gone (pruned, unregistered, or never known).
    pub(crate) orphaned: bool,
}

/// What going back leaves behind.
#[derive(Debug, Clone)]
pub(crate) struct PutBack<'a> {
    pub(crate) which: Selection<'a>,
    /// Whether the interrupted run counts as an attempt.
    pub(crate) count_attempt: bool,
    /// An `error` event for each job: kind and message (its traceback is
    /// `kind: message`). `None` leaves only the `deferred_for_retry` event
    /// that every return to `todo` records.
    pub(crate) note: Option<(ErrorKind, String)>,
}

/// Puts the selected jobs back to `todo` (runnable at once, schedule kept)
/// and returns `(id, task name)` of each. Rows locked by someone else are
/// skipped, so two rescuers never put one job back twice.
pub(crate) async fn put_back(
    executor: impl sqlx::PgExecutor<'_>,
    put_back: &PutBack<'_>,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let which = &put_back.which;
    let (kind, message) = match &put_back.note {
        Some((kind, message)) => (Some(kind.as_str()), Some(message.as_str())),
        None => (None, None),
    };
    sqlx::query_as(
        "WITH target AS (
             SELECT job.id
             FROM procrastinate_jobs AS job
             WHERE job.status = 'doing'
               AND ($1::bigint IS NULL OR job.worker_id = $1)
               AND ($2::bigint[] IS NULL OR NOT (job.id = ANY ($2)))
               AND ($3::bigint IS NULL OR job.id = $3)
               AND ($4::float8 IS NULL OR job.started_at < now() - make_interval(secs => $4))
               AND (NOT $5 OR job.worker_id IS NULL
                    OR NOT EXISTS (SELECT 1 FROM procrastinate_workers AS worker
                                   WHERE worker.id = job.worker_id))
             FOR UPDATE OF job SKIP LOCKED
         ),
         back AS (
             UPDATE procrastinate_jobs AS job
             SET status = 'todo', attempts = job.attempts + $6::int, worker_id = NULL,
                 started_at = NULL, finished_at = NULL, abort_requested = false
             FROM target
             WHERE job.id = target.id
             RETURNING job.id, job.task_name::text
         ),
         noted AS (
             INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
             SELECT id, 'error', $7, $8, $7 || ': ' || $8
             FROM back
             WHERE $7 IS NOT NULL
         )
         SELECT id, task_name FROM back ORDER BY id",
    )
    .bind(which.worker_id)
    .bind(which.except)
    .bind(which.job_id)
    .bind(which.started_before.map(|age| age.as_secs_f64()))
    .bind(which.orphaned)
    .bind(i32::from(put_back.count_attempt))
    .bind(kind)
    .bind(message)
    // Planned with its parameters each time: the unused conditions fold
    // away and the used ones can use the indexes.
    .persistent(false)
    .fetch_all(executor)
    .await
}
