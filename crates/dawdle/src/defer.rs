//! Deferring jobs: one, or a batch in one round trip, on a pool or inside the
//! caller's own transaction.
//!
//! Every function takes any sqlx executor, so `defer(&pool, …)` commits at
//! once while `defer(&mut *tx, …)` makes the job exist only if the caller's
//! transaction commits: the way to tie a job to the domain write that caused
//! it when both live in the jobs database.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::job::{InvalidJob, NewJob};
use crate::task::Task;
use crate::trace_context::TraceContext;

/// Name of the unique index that allows one waiting job per queueing lock.
pub const QUEUEING_LOCK_INDEX: &str = "procrastinate_jobs_queueing_lock_idx_v1";

/// Failures of [`defer`] and [`defer_batch`], worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum DeferError {
    #[error("defer job: {0}")]
    Invalid(#[from] InvalidJob),
    /// A job with this queueing lock is already waiting (`todo`).
    #[error(
        "defer job: a job with queueing lock {} is already waiting; \
         at most one job per queueing lock can be in todo",
        crate::text::quote(queueing_lock)
    )]
    AlreadyEnqueued { queueing_lock: String },
    #[error("defer job: {0}")]
    Database(#[source] sqlx::Error),
}

/// Inserts jobs from one array per column.
const DEFER: &str = "INSERT INTO procrastinate_jobs
         (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
     SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::int4[], $4::text[],
                          $5::text[], $6::jsonb[], $7::timestamptz[])
     RETURNING id";

/// [`DEFER`], and the jobs' trace contexts beside them, matched by
/// position (ids come in insertion order).
const DEFER_TRACED: &str = "WITH job AS (
         INSERT INTO procrastinate_jobs
             (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
         SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::int4[], $4::text[],
                              $5::text[], $6::jsonb[], $7::timestamptz[])
         RETURNING id
     ), numbered AS (
         SELECT id, row_number() OVER (ORDER BY id) AS position FROM job
     ), context AS (
         INSERT INTO dawdle_job_trace_contexts (job_id, traceparent, tracestate)
         SELECT numbered.id, given.traceparent, given.tracestate
         FROM numbered
         JOIN unnest($8::text[], $9::text[]) WITH ORDINALITY
              AS given (traceparent, tracestate, position) USING (position)
         WHERE given.traceparent IS NOT NULL
     )
     SELECT id FROM job";

/// Defers one job and returns its id.
pub async fn defer<'e, E>(executor: E, job: &NewJob) -> Result<i64, DeferError>
where
    E: PgExecutor<'e>,
{
    let ids = defer_batch(executor, std::slice::from_ref(job)).await?;
    Ok(ids[0])
}

/// Defers a typed task with its default options and returns the job id.
pub async fn defer_task<'e, E, T>(executor: E, task: &T) -> Result<i64, DeferError>
where
    E: PgExecutor<'e>,
    T: Task,
{
    defer(executor, &NewJob::for_task(task)?).await
}

// Here rather than in job.rs: job rows know nothing of the Task trait, which
// itself depends on them (through JobContext), so the modules form no cycle.
impl NewJob {
    /// A job for a typed task, with the task's default queue, priority and locks.
    pub fn for_task<T: Task>(task: &T) -> Result<Self, InvalidJob> {
        let args = serde_json::to_value(task).map_err(|error| {
            InvalidJob(format!(
                "arguments of task {:?} do not serialise to JSON: {error}",
                T::NAME
            ))
        })?;
        let mut job = Self::new(T::NAME, args)?;
        job.queue = T::QUEUE.to_string();
        job.priority = T::PRIORITY;
        job.lock = task.lock();
        job.queueing_lock = task.queueing_lock();
        Ok(job)
    }
}

/// Defers many jobs with one statement and returns their ids in the same
/// order. All or nothing: if one job is rejected, none is deferred.
pub async fn defer_batch<'e, E>(executor: E, jobs: &[NewJob]) -> Result<Vec<i64>, DeferError>
where
    E: PgExecutor<'e>,
{
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    for job in jobs {
        job.validate()?;
    }
    let mut queues = Vec::with_capacity(jobs.len());
    let mut tasks = Vec::with_capacity(jobs.len());
    let mut priorities = Vec::with_capacity(jobs.len());
    let mut locks = Vec::with_capacity(jobs.len());
    let mut queueing_locks = Vec::with_capacity(jobs.len());
    let mut args = Vec::with_capacity(jobs.len());
    let mut schedules: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        queues.push(job.queue.as_str());
        tasks.push(job.task_name.as_str());
        priorities.push(job.priority);
        locks.push(job.lock.as_deref());
        queueing_locks.push(job.queueing_lock.as_deref());
        args.push(sqlx::types::Json(&job.args));
        schedules.push(job.scheduled_at);
    }
    let current = current_trace_context();
    let traced = current.is_some() || jobs.iter().any(|job| job.trace_context.is_some());
    let (parents, states): (Vec<_>, Vec<_>) = jobs
        .iter()
        .filter(|_| traced)
        .map(|job| {
            let context = job.trace_context.as_ref().or(current.as_ref());
            (
                context.map(TraceContext::traceparent),
                context.and_then(TraceContext::tracestate),
            )
        })
        .unzip();
    let mut query = sqlx::query_scalar(if traced { DEFER_TRACED } else { DEFER })
        .bind(&queues)
        .bind(&tasks)
        .bind(&priorities)
        .bind(&locks)
        .bind(&queueing_locks)
        .bind(&args)
        .bind(&schedules);
    if traced {
        query = query.bind(&parents).bind(&states);
    }
    // unnest keeps array order and the sequence hands out ids in insertion
    // order, so sorting the returned ids restores the callers' order.
    let mut ids: Vec<i64> = query
        .fetch_all(executor)
        .await
        .map_err(|error| classify(error, jobs))?;
    ids.sort_unstable();
    Ok(ids)
}

/// The trace context of the span current at defer, when OpenTelemetry is
/// switched on ([`crate::telemetry::enable`]).
fn current_trace_context() -> Option<TraceContext> {
    #[cfg(feature = "opentelemetry")]
    if crate::telemetry::is_enabled() {
        return TraceContext::current();
    }
    None
}

/// Turns the queueing-lock unique violation into [`DeferError::AlreadyEnqueued`].
fn classify(error: sqlx::Error, jobs: &[NewJob]) -> DeferError {
    let Some(db_error) = error.as_database_error() else {
        return DeferError::Database(error);
    };
    if db_error.constraint() != Some(QUEUEING_LOCK_INDEX) {
        return DeferError::Database(error);
    }
    // The detail reads `Key (queueing_lock)=(…) already exists.`; fall back to
    // the first queueing lock of the batch when it cannot be read.
    let from_detail = db_error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .and_then(|detail| {
            let start = detail.find(")=(")? + 3;
            let end = detail.rfind(") already exists")?;
            (start <= end).then(|| detail[start..end].to_string())
        });
    let queueing_lock = from_detail
        .or_else(|| jobs.iter().find_map(|job| job.queueing_lock.clone()))
        .unwrap_or_default();
    DeferError::AlreadyEnqueued { queueing_lock }
}
