//! Recording the outcomes of attempts: one statement for a batch of them,
//! status, attempts, schedule, timestamps and `error` events together, with
//! the follow-up jobs of the successes in the same transaction.

use std::time::Duration;

use crate::database::pinned::Db;
use chrono::{DateTime, Utc};
use tracing::warn;

use super::refused::{fail_instead, refused_for_its_data};
use crate::task_error::TaskError;

/// How an attempt ended, as the database must record it.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Succeeded,
    /// Back to `todo`, runnable at `at`.
    Retry {
        at: DateTime<Utc>,
    },
    Failed,
    /// The task asked to run again at `at`: back to `todo`, the attempt
    /// not counted.
    Snooze {
        at: DateTime<Utc>,
    },
    /// The task cancelled its own job.
    Cancelled,
    /// Stopped on request (`procrastinate_cancel_job_v1` with abort).
    Aborted,
    /// Claimed but never started: back to `todo` as it was, for any worker.
    Release,
}

impl Verdict {
    /// What the verdict makes of a job, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry { .. } => "retry",
            Verdict::Failed => "failed",
            Verdict::Snooze { .. } => "snooze",
            Verdict::Cancelled => "cancelled",
            Verdict::Aborted => "aborted",
            Verdict::Release => "put back unstarted",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) job_id: i64,
    /// The worker that claimed the job: an outcome only applies while the
    /// job is still that worker's (not rescued and claimed by another).
    pub(crate) worker_id: Option<i64>,
    pub(crate) verdict: Verdict,
    pub(crate) error: Option<TaskError>,
    /// Whether the job ran: only then does its attempt count.
    pub(crate) attempted: bool,
    /// How long the job waited in the worker between its claim and its
    /// start; its `started_at` (the claim's time) moves forward by as much.
    pub(crate) waited: Duration,
    /// Delete the job (and its history) instead of recording the outcome:
    /// the worker's retention setting.
    pub(crate) delete: bool,
    /// Jobs the task deferred with `JobContext::defer_after_success`:
    /// inserted in the transaction that records the success.
    pub(crate) follow_ups: Vec<crate::job::NewJob>,
}

/// Records `batch` with [`write`], and when the database refuses the batch for what one outcome
/// holds, each outcome alone, so one cannot hold back the others. An
/// outcome refused alone is recorded once more with its error details
/// replaced by why they could not be stored, and without follow-ups; one
/// refused even so ends `failed`, with an event saying why, rather than
/// staying `doing` with nobody to finish it.
///
/// Returns how many outcomes were refused even so, their jobs failed
/// instead.
pub(crate) async fn record(pool: &Db, batch: &[Outcome]) -> Result<u64, sqlx::Error> {
    let error = match write(pool, batch).await {
        Ok(()) => return Ok(0),
        Err(error) if batch.len() > 1 && refused_for_its_data(&error) => error,
        Err(error) if batch.len() == 1 && refused_for_its_data(&error) => {
            return write_plain(pool, &batch[0], &error).await;
        }
        Err(error) => return Err(error),
    };
    warn!(jobs = batch.len(), error = %error,
          "the database refused a batch of job outcomes; recording them one by one");
    let mut failed_instead = 0;
    for outcome in batch {
        match write(pool, std::slice::from_ref(outcome)).await {
            Ok(()) => {}
            Err(error) if refused_for_its_data(&error) => {
                failed_instead += write_plain(pool, outcome, &error).await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(failed_instead)
}

/// Records `outcome` with its error replaced by why it could not be stored.
async fn write_plain(
    pool: &Db,
    outcome: &Outcome,
    refused: &sqlx::Error,
) -> Result<u64, sqlx::Error> {
    let plain = Outcome {
        error: outcome.error.as_ref().map(|_| {
            TaskError::new(
                crate::task_error::GENERIC_ERROR,
                // Not the refusal's text: it may quote what was refused.
                format!(
                    "the attempt's error could not be stored: the database refused it with \
                     SQLSTATE {} (the worker's log has the details)",
                    refused
                        .as_database_error()
                        .and_then(|e| e.code())
                        .unwrap_or_default()
                ),
            )
        }),
        follow_ups: Vec::new(),
        ..outcome.clone()
    };
    match write(pool, std::slice::from_ref(&plain)).await {
        Ok(()) => {
            warn!(job_id = outcome.job_id, error = %refused,
                  "recorded a job outcome without the error details the database refused");
            Ok(0)
        }
        Err(error) if refused_for_its_data(&error) => {
            let mut conn = pool.begin().await?;
            let meant = format!("recording its outcome ({})", outcome.verdict.name());
            let failed =
                fail_instead(&mut conn, outcome.job_id, outcome.worker_id, &meant, &error).await;
            match conn.finish(failed).await {
                Ok(changed) => {
                    tracing::error!(job_id = outcome.job_id, error = %error,
                        "the database refuses this job's outcome; the job is failed instead");
                    Ok(u64::from(changed))
                }
                Err(failing) if refused_for_its_data(&failing) => {
                    tracing::error!(job_id = outcome.job_id, error = %error, failing = %failing,
                        "the database refuses this job's outcome and its failure; it stays doing");
                    Ok(0)
                }
                Err(failing) => Err(failing),
            }
        }
        Err(error) => Err(error),
    }
}

/// One statement: every outcome's status, attempt count, schedule and
/// timestamps, and an `error` event for each failed attempt. The statement's
/// trigger records `succeeded`, `failed` and `deferred_for_retry` (and
/// `scheduled`) after the error events, so a job's history reads in order.
async fn write(pool: &Db, batch: &[Outcome]) -> Result<(), sqlx::Error> {
    let mut conn = pool.begin().await?;
    let written = write_on(&mut conn, batch).await;
    conn.finish(written).await
}

async fn write_on(conn: &mut sqlx::PgConnection, batch: &[Outcome]) -> Result<(), sqlx::Error> {
    use sqlx::Connection;

    let has_follow_ups = batch.iter().any(|outcome| !outcome.follow_ups.is_empty());
    let mut ids = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut retry_at = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut messages = Vec::with_capacity(batch.len());
    let mut tracebacks = Vec::with_capacity(batch.len());
    let mut deletes = Vec::with_capacity(batch.len());
    let mut workers = Vec::with_capacity(batch.len());
    let mut attempted = Vec::with_capacity(batch.len());
    let mut waited = Vec::with_capacity(batch.len());
    for outcome in batch {
        ids.push(outcome.job_id);
        workers.push(outcome.worker_id);
        let (status, at) = match outcome.verdict {
            Verdict::Succeeded => ("succeeded", None),
            Verdict::Retry { at } | Verdict::Snooze { at } => ("todo", Some(at)),
            Verdict::Failed => ("failed", None),
            Verdict::Cancelled => ("cancelled", None),
            Verdict::Aborted => ("aborted", None),
            Verdict::Release => ("todo", None),
        };
        attempted.push(outcome.attempted);
        waited.push(outcome.waited.as_secs_f64());
        deletes.push(outcome.delete);
        statuses.push(status);
        retry_at.push(at);
        kinds.push(outcome.error.as_ref().map(|e| e.kind()));
        messages.push(outcome.error.as_ref().map(|e| e.message()));
        tracebacks.push(outcome.error.as_ref().map(|e| e.traceback()));
    }
    let statement = sqlx::query_scalar::<_, i64>(
        "WITH outcome AS (
             SELECT *
             FROM unnest($1::bigint[], $2::text[]::procrastinate_job_status[], $3::timestamptz[],
                         $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[],
                         $9::bool[], $10::float8[])
                  AS o (id, status, retry_at, error, error_message, error_traceback, delete_job,
                        worker_id, attempted, waited)
         ),
         removed AS (
             DELETE FROM procrastinate_jobs AS job
             USING outcome
             WHERE job.id = ANY ($1) AND job.id = outcome.id
               AND job.status::text = 'doing' AND outcome.delete_job
               AND job.worker_id IS NOT DISTINCT FROM outcome.worker_id
             RETURNING job.id
         ),
         recorded AS (
             UPDATE procrastinate_jobs AS job
             SET status = outcome.status,
                 -- At the top of its range the count stays: an outcome
                 -- refused for it would leave the job running for good.
                 attempts = job.attempts + CASE WHEN job.attempts < 2147483647
                                                THEN outcome.attempted::int ELSE 0 END,
                 worker_id = NULL,
                 abort_requested = false,
                 scheduled_at = CASE WHEN outcome.status = 'todo'
                                     THEN coalesce(outcome.retry_at, job.scheduled_at)
                                     ELSE job.scheduled_at END,
                 started_at = CASE WHEN outcome.status = 'todo' THEN NULL
                                   ELSE job.started_at + make_interval(secs => outcome.waited) END,
                 finished_at = CASE WHEN outcome.status = 'todo' THEN NULL ELSE now() END
             FROM outcome
             WHERE job.id = ANY ($1) AND job.id = outcome.id
               AND job.status::text = 'doing' AND NOT outcome.delete_job
               AND job.worker_id IS NOT DISTINCT FROM outcome.worker_id
             RETURNING job.id
         ),
         errors AS (
             INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
             SELECT outcome.id, 'error', outcome.error, outcome.error_message, outcome.error_traceback
             FROM outcome
             JOIN recorded ON recorded.id = outcome.id
             WHERE outcome.error IS NOT NULL
         )
         SELECT id FROM recorded UNION ALL SELECT id FROM removed",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&retry_at)
    .bind(&kinds)
    .bind(&messages)
    .bind(&tracebacks)
    .bind(&deletes)
    .bind(&workers)
    .bind(&attempted)
    .bind(&waited)
    // The jobs are found by their ids, never through the index of running
    // jobs (`status = 'doing'` written as text, so that the partial index
    // does not match): while an old snapshot holds back vacuum, that index
    // keeps an entry for every job the worker ever ran, and statistics that
    // expect a handful of running jobs made the planner scan all of them
    // for each batch (2,000 buffers, 10-15 ms at 800 jobs/s after a minute).
    // Planned afresh each time: a cached generic plan cannot see how many
    // outcomes the arrays hold, guesses a handful, and joins them to the
    // jobs with a nested loop that re-reads every array once per job,
    // quadratic in the batch (seconds for two thousand outcomes).
    .persistent(false);
    if !has_follow_ups {
        statement.fetch_all(&mut *conn).await?;
        return Ok(());
    }
    // Follow-up jobs exist only if the success they follow is recorded: same
    // transaction, and only for jobs the statement actually changed.
    let mut tx = conn.begin().await?;
    let changed: Vec<i64> = statement.fetch_all(&mut *tx).await?;
    let follow_ups: Vec<(i64, &crate::job::NewJob)> = batch
        .iter()
        .filter(|outcome| changed.contains(&outcome.job_id))
        .flat_map(|outcome| outcome.follow_ups.iter().map(|job| (outcome.job_id, job)))
        .collect();
    defer_follow_ups(&mut tx, &follow_ups).await?;
    tx.commit().await
}

/// Inserts follow-up jobs: all in one statement when none conflicts, else
/// each alone, skipping (and logging) the ones rejected, such as a second
/// waiting job of a queueing lock. The outcomes they follow are recorded
/// either way. Each attempt runs in a savepoint, so a rejected insert
/// leaves the surrounding transaction usable.
async fn defer_follow_ups(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    follow_ups: &[(i64, &crate::job::NewJob)],
) -> Result<(), sqlx::Error> {
    use crate::defer::DeferError;
    use sqlx::Connection;

    let jobs: Vec<crate::job::NewJob> = follow_ups.iter().map(|(_, job)| (*job).clone()).collect();
    let mut all = (**tx).begin().await?;
    match crate::defer::defer_batch(&mut *all, &jobs).await {
        Ok(_) => return all.commit().await,
        Err(DeferError::Database(error)) if error.as_database_error().is_none() => {
            return Err(error)
        }
        Err(_) => all.rollback().await?,
    }
    for (parent, job) in follow_ups {
        let mut one = (**tx).begin().await?;
        match crate::defer::defer(&mut *one, job).await {
            Ok(_) => one.commit().await?,
            Err(DeferError::Database(error)) if error.as_database_error().is_none() => {
                return Err(error)
            }
            Err(error) => {
                one.rollback().await?;
                warn!(job_id = parent, task = %crate::text::excerpt(&job.task_name, 128),
                      error = %error,
                      "skipped a follow-up job the database rejected; the job's success is recorded");
            }
        }
    }
    Ok(())
}
