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
    #[error(
        "{action}: job {id} is running on a worker that sent a heartbeat in the last {} s; \
         a second run would overlap it. Stop that worker first (from the command line, \
         --even-if-alive resets it anyway)",
        WORKER_ALIVE_WITHIN.as_secs()
    )]
    WorkerAlive { action: &'static str, id: i64 },
    #[error("{action}: job {id} was left as it was: {why}")]
    Refused {
        action: &'static str,
        id: i64,
        why: String,
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
    match state::retry_one(pool, id).await {
        Ok(()) => Ok(()),
        Err(error) if state::refused_for_its_data(&error) => Err(ChangeError::Refused {
            action: ACTION,
            id,
            why: state::why_refused(&error),
        }),
        Err(error) => Err(ChangeError::Database {
            action: ACTION,
            source: error,
        }),
    }
}

/// Which failed jobs [`retry_failed`] retries.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter {
    pub queue: Option<String>,
    pub task: Option<String>,
    /// Count them, change nothing.
    pub dry_run: bool,
}

/// What [`retry_failed`] did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetriedFailed {
    /// How many jobs are (would be) back in `todo`.
    pub retried: u64,
    /// Jobs left failed, each with why: of failed jobs sharing a queueing
    /// lock only the newest is retried, none while a waiting job holds it,
    /// and none the database refuses.
    pub left_out: Vec<(i64, String)>,
}

/// Retries every failed job matching `filter` with one statement, but for
/// the ones that cannot go back (see [`RetriedFailed::left_out`]).
pub async fn retry_failed(
    pool: &PgPool,
    filter: &RetryFilter,
) -> Result<RetriedFailed, ChangeError> {
    let done = state::retry_matching(
        pool,
        filter.queue.as_deref(),
        filter.task.as_deref(),
        filter.dry_run,
    )
    .await
    .map_err(database("retry failed jobs"))?;
    Ok(RetriedFailed {
        retried: done.retried,
        left_out: done.left_out,
    })
}

/// Which stuck jobs [`reset_stalled`] puts back.
#[derive(Debug, Clone)]
pub enum ResetTarget {
    /// One job, which must be in `doing`.
    Job(i64),
    /// Every job in `doing` that started longer ago than this.
    OlderThan(Duration),
}

/// A worker that sent a heartbeat this recently is running its jobs (the
/// same measure as `dawdle stats`' live workers): [`reset_stalled`] leaves
/// them alone unless told otherwise.
pub const WORKER_ALIVE_WITHIN: Duration = Duration::from_secs(60);

/// What [`reset_stalled`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reset {
    /// Jobs back in `todo`.
    pub reset: Vec<i64>,
    /// Jobs the database refused to put back (another job waits with the
    /// same queueing lock, say), ended `failed` instead with an event
    /// saying why, rather than left in `doing`.
    pub failed: Vec<i64>,
    /// Jobs left in `doing` because their worker is alive: it sent a
    /// heartbeat within [`WORKER_ALIVE_WITHIN`].
    pub skipped_alive: Vec<i64>,
}

/// The runbook's "reset a stuck job" and "bulk reset": jobs in `doing` go
/// back to `todo`, with a `deferred_for_retry` event and an `error` event of
/// kind `Stalled` saying who reset them. A job whose worker is alive is
/// still running: it is left alone (a second run would overlap the first)
/// unless `even_if_alive`; asked for by id, it is refused.
pub async fn reset_stalled(
    pool: &PgPool,
    target: &ResetTarget,
    even_if_alive: bool,
) -> Result<Reset, ChangeError> {
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
    let which = Selection {
        job_id: id,
        started_before: older_than,
        worker_silent_for: (!even_if_alive).then_some(WORKER_ALIVE_WITHIN),
        ..Selection::default()
    };
    let mut conn = pool.acquire().await.map_err(database(ACTION))?;
    let returned = state::put_back(
        &mut conn,
        &PutBack {
            which,
            count_attempt: false,
            note: Some((
                ErrorKind::Stalled,
                "reset from doing to todo by an operator (`dawdle reset-stalled`)".to_string(),
            )),
        },
    )
    .await
    .map_err(database(ACTION))?;
    let skipped_alive = if even_if_alive {
        Vec::new()
    } else {
        sqlx::query_scalar(&format!(
            "SELECT id FROM procrastinate_jobs
             WHERE status = 'doing'
               AND ($1::bigint IS NULL OR id = $1)
               AND ($2::float8 IS NULL OR started_at < now() - make_interval(secs => $2))
               AND worker_id IN (SELECT id FROM procrastinate_workers WHERE {})
             ORDER BY id",
            super::live_heartbeat("$3")
        ))
        .persistent(false)
        .bind(id)
        .bind(older_than.map(crate::duration::age_seconds))
        .bind(WORKER_ALIVE_WITHIN.as_secs_f64())
        .fetch_all(&mut *conn)
        .await
        .map_err(database(ACTION))?
    };
    if let (Some(id), [_]) = (id, skipped_alive.as_slice()) {
        return Err(ChangeError::WorkerAlive { action: ACTION, id });
    }
    Ok(Reset {
        reset: returned.back.into_iter().map(|(id, _)| id).collect(),
        failed: returned.failed.into_iter().map(|(id, _)| id).collect(),
        skipped_alive,
    })
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// A waiting job, now `cancelled`.
    Cancelled,
    /// A running job: abort requested; the worker stops it.
    AbortRequested,
    /// A running job whose abort was already requested: nothing changed.
    AbortAlreadyRequested,
}

impl CancelOutcome {
    /// How many jobs the cancel changed.
    pub fn changed(self) -> u64 {
        match self {
            CancelOutcome::Cancelled | CancelOutcome::AbortRequested => 1,
            CancelOutcome::AbortAlreadyRequested => 0,
        }
    }
}

/// Cancels a waiting job, or asks for a running one to be aborted.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<CancelOutcome, ChangeError> {
    const ACTION: &str = "cancel job";
    let status = status_of(pool, id, ACTION).await?;
    let outcome = match status {
        JobStatus::Todo => CancelOutcome::Cancelled,
        JobStatus::Doing => {
            // Only a live worker stops a job on request; a job whose worker
            // is gone would keep the flag until the stalled-job rescue put
            // it back to run again, the request forgotten.
            let (requested, alive): (bool, bool) = sqlx::query_as(&format!(
                "SELECT job.abort_requested,
                        EXISTS (SELECT 1 FROM procrastinate_workers
                                WHERE id = job.worker_id AND {})
                 FROM procrastinate_jobs AS job WHERE job.id = $1",
                super::live_heartbeat("$2")
            ))
            .bind(id)
            .bind(WORKER_ALIVE_WITHIN.as_secs_f64())
            .persistent(false)
            .fetch_one(pool)
            .await
            .map_err(database(ACTION))?;
            if requested {
                return Ok(CancelOutcome::AbortAlreadyRequested);
            }
            if !alive {
                return Err(ChangeError::WrongStatus {
                    action: ACTION,
                    id,
                    status,
                    why: "running on no live worker (none sent a heartbeat in the last minute), \
                          so nobody would stop it; put it back with `dawdle reset-stalled ID`, \
                          then cancel it",
                });
            }
            CancelOutcome::AbortRequested
        }
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
    let older_than = crate::duration::age_seconds(options.older_than);
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
