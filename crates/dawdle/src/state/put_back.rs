//! Putting `doing` jobs back to `todo`: one statement for every reason a
//! job goes back without an outcome of its own.
//!
//! A worker puts back the jobs a lost claim left under it and, after a
//! crash, every job it still held; upkeep puts back the jobs of workers that
//! stopped sending heartbeats; an operator resets stuck jobs. They differ
//! only in which jobs, whether the attempt counts, and the note left in the
//! history, so those are the parameters and the rest is written once.

use std::time::Duration;

use tracing::warn;

use super::refused::{fail_instead, refused_for_its_data};
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
    /// Only jobs whose worker is gone or has sent no heartbeat for this long.
    pub(crate) worker_silent_for: Option<Duration>,
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

/// What [`put_back`] did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Returned {
    /// `(id, task name)` of each job put back to `todo`.
    pub(crate) back: Vec<(i64, String)>,
    /// `(id, task name)` of each job the database refused to put back even
    /// alone (another job waiting with its queueing lock, say), ended
    /// `failed` instead with an event saying why.
    pub(crate) failed: Vec<(i64, String)>,
}

/// Puts the selected jobs back to `todo` (runnable at once, schedule kept).
/// Rows locked by someone else are skipped, so two rescuers never put one
/// job back twice. When the database refuses the statement for what one
/// job holds, each job is put back alone, so that one cannot hold back the
/// others, and a job refused even alone ends `failed` (see [`Returned`]).
/// Each try runs in a transaction of its own, or a savepoint of `conn`'s.
pub(crate) async fn put_back(
    conn: &mut sqlx::PgConnection,
    put_back: &PutBack<'_>,
) -> Result<Returned, sqlx::Error> {
    use sqlx::Connection;

    let mut all = conn.begin().await?;
    let error = match statement(&mut all, put_back).await {
        Ok(back) => {
            all.commit().await?;
            return Ok(Returned {
                back,
                failed: Vec::new(),
            });
        }
        Err(error) if refused_for_its_data(&error) => error,
        Err(error) => return Err(error),
    };
    all.rollback().await?;
    warn!(error = %error,
          "the database refused to put back a set of jobs; putting them back one by one");
    let mut returned = Returned::default();
    for (id, task, worker_id) in candidates(&mut *conn, &put_back.which).await? {
        let alone = PutBack {
            which: Selection {
                job_id: Some(id),
                ..put_back.which.clone()
            },
            ..put_back.clone()
        };
        let mut one = conn.begin().await?;
        match statement(&mut one, &alone).await {
            Ok(back) => {
                one.commit().await?;
                returned.back.extend(back);
                continue;
            }
            Err(refused) if refused_for_its_data(&refused) => {
                one.rollback().await?;
                let mut failing = conn.begin().await?;
                // Only if still the job seen: claimed meanwhile, it is not ours.
                let meant = "putting it back to todo";
                match fail_instead(&mut failing, id, worker_id, meant, &refused).await {
                    Ok(changed) => {
                        failing.commit().await?;
                        warn!(job_id = id, error = %refused,
                              "the database refuses to put this job back; it is failed instead");
                        if changed {
                            returned.failed.push((id, task));
                        }
                    }
                    Err(error) if refused_for_its_data(&error) => {
                        failing.rollback().await?;
                        tracing::error!(job_id = id, error = %refused, failing = %error,
                            "the database refuses to put this job back and to fail it; it stays doing");
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(returned)
}

/// Which jobs `which` selects, as the statement would, without locking
/// them; a worker is silent unless its heartbeat is live as the admin
/// commands judge it.
fn selected() -> String {
    format!(
        "job.status = 'doing'
         AND ($1::bigint IS NULL OR job.worker_id = $1)
         AND ($2::bigint[] IS NULL OR NOT (job.id = ANY ($2)))
         AND ($3::bigint IS NULL OR job.id = $3)
         AND ($4::float8 IS NULL OR job.started_at < now() - make_interval(secs => $4))
         AND (NOT $5 OR job.worker_id IS NULL
              OR NOT EXISTS (SELECT 1 FROM procrastinate_workers AS worker
                             WHERE worker.id = job.worker_id))
         AND ($6::float8 IS NULL OR job.worker_id IS NULL
              OR NOT EXISTS (SELECT 1 FROM procrastinate_workers AS worker
                             WHERE worker.id = job.worker_id AND {}))",
        crate::admin::live_heartbeat("$6")
    )
}

fn bind_selection<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    which: &'q Selection<'_>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(which.worker_id)
        .bind(which.except)
        .bind(which.job_id)
        .bind(which.started_before.map(crate::duration::age_seconds))
        .bind(which.orphaned)
        .bind(which.worker_silent_for.map(crate::duration::age_seconds))
}

async fn candidates(
    conn: &mut sqlx::PgConnection,
    which: &Selection<'_>,
) -> Result<Vec<(i64, String, Option<i64>)>, sqlx::Error> {
    let sql = format!(
        "SELECT job.id, job.task_name::text, job.worker_id FROM procrastinate_jobs AS job
         WHERE {} ORDER BY job.id",
        selected()
    );
    bind_selection(sqlx::query_as(&sql), which)
        .persistent(false)
        .fetch_all(conn)
        .await
}

/// The one statement: the selected jobs back to `todo`, with their notes.
async fn statement(
    conn: &mut sqlx::PgConnection,
    put_back: &PutBack<'_>,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let (kind, message) = match &put_back.note {
        Some((kind, message)) => (Some(kind.as_str()), Some(message.as_str())),
        None => (None, None),
    };
    let sql = format!(
        "WITH target AS (
             SELECT job.id
             FROM procrastinate_jobs AS job
             WHERE {}
             FOR UPDATE OF job SKIP LOCKED
         ),
         back AS (
             UPDATE procrastinate_jobs AS job
             SET status = 'todo', worker_id = NULL,
                 -- At the top of its range the count stays: a job refused
                 -- for it would stay doing for good.
                 attempts = job.attempts + CASE WHEN job.attempts < 2147483647
                                                THEN $7::int ELSE 0 END,
                 started_at = NULL, finished_at = NULL, abort_requested = false
             FROM target
             WHERE job.id = target.id
             RETURNING job.id, job.task_name::text
         ),
         noted AS (
             INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
             SELECT id, 'error', $8, $9, $8 || ': ' || $9
             FROM back
             WHERE $8 IS NOT NULL
         )
         SELECT id, task_name FROM back ORDER BY id",
        selected()
    );
    bind_selection(sqlx::query_as(&sql), &put_back.which)
        .bind(i32::from(put_back.count_attempt))
        .bind(kind)
        .bind(message)
        // Planned with its parameters each time: the unused conditions fold
        // away and the used ones can use the indexes.
        .persistent(false)
        .fetch_all(conn)
        .await
}
