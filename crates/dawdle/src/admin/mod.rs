//! Reading and changing jobs for people: the operations behind the CLI and
//! the shell, written once here so they all agree.

use sqlx::PgExecutor;

use crate::job::{Event, Job, JobStatus, JOB_COLUMNS};

/// Which jobs [`list_jobs`] returns; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub id: Option<i64>,
    pub queue: Option<String>,
    pub task: Option<String>,
    pub status: Option<JobStatus>,
    pub lock: Option<String>,
    pub queueing_lock: Option<String>,
    /// Only jobs older than this one (ids below it): the next page of a
    /// listing, read from the index however deep it goes.
    pub before_id: Option<i64>,
    /// Only jobs created at or after this time.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only jobs created before this time.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Only jobs whose arguments, as JSON text, contain this (any case).
    /// Not indexed: bound the time a search may take on a large table.
    pub args_contain: Option<String>,
    /// Newest first, at most this many (all when `None`).
    pub limit: Option<i64>,
}

/// Jobs matching `filter`, newest first.
pub async fn list_jobs<'e, E: PgExecutor<'e>>(
    executor: E,
    filter: &JobFilter,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM procrastinate_jobs
         WHERE ($1::bigint IS NULL OR id = $1)
           AND ($2::varchar IS NULL OR queue_name = $2)
           AND ($3::varchar IS NULL OR task_name = $3)
           AND ($4::procrastinate_job_status IS NULL OR status = $4)
           AND ($5::text IS NULL OR lock = $5)
           AND ($7::text IS NULL OR queueing_lock = $7)
           AND ($8::bigint IS NULL OR id < $8)
           AND ($9::timestamptz IS NULL OR created_at >= $9)
           AND ($10::timestamptz IS NULL OR created_at < $10)
           AND ($11::text IS NULL OR args::text ILIKE '%' || $11 || '%')
         ORDER BY id DESC
         LIMIT $6"
    ))
    .bind(filter.id)
    .bind(&filter.queue)
    .bind(&filter.task)
    .bind(filter.status)
    .bind(&filter.lock)
    .bind(filter.limit)
    .bind(&filter.queueing_lock)
    .bind(filter.before_id)
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(filter.args_contain.as_deref().map(like_pattern))
    .fetch_all(executor)
    .await
}

/// `text` for the inside of an ILIKE pattern: its own `%`, `_` and `\`
/// match themselves.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern
}

/// One job by id, with the trace context it was deferred with.
pub async fn get_job<'e, E: PgExecutor<'e>>(
    executor: E,
    id: i64,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS}, context.traceparent, context.tracestate
         FROM procrastinate_jobs
         LEFT JOIN dawdle_job_trace_contexts AS context ON context.job_id = id
         WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// The history of one job, oldest first.
pub async fn job_events<'e, E: PgExecutor<'e>>(
    executor: E,
    job_id: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, type, at, error, error_message, error_traceback
         FROM procrastinate_events WHERE job_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(executor)
    .await
}

mod changes;
mod checks;
pub mod gauges;
mod health;
mod queues;
mod stats;
mod workers;

pub use changes::{
    cancel, clear_pending, purge, reset_stalled, retry, retry_failed, CancelOutcome, ChangeError,
    PurgeOptions, PurgeProgress, Reset, ResetTarget, RetriedFailed, RetryFilter,
    WORKER_ALIVE_WITHIN,
};
pub use checks::{run_check, Check, CheckResult, CHECKS};
pub use gauges::{queue_gauges, GaugeRecorder, QueueGauge, QueueGauges};
pub use health::{healthcheck, HealthReport};
pub use queues::{pause_queue, paused_queues, resume_queue, PausedQueue, QueueError};
pub use stats::{
    hourly_outcomes, human_duration, stats, HourOutcomes, QueueCounts, QueueStats, StatsConfig,
    TaskDuration, Verdict,
};
pub use workers::{periodic_defers, workers, PeriodicDefer, WorkerRow};

/// A failed job with its last error, for `dawdle failed`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct FailedJob {
    pub id: i64,
    pub queue_name: String,
    pub task_name: String,
    pub attempts: i32,
    #[sqlx(try_from = "crate::rows::DbTime")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Kind of the last `error` event (jobs failed by a Python worker have none).
    pub error: Option<String>,
    pub error_message: Option<String>,
}

/// Which failures [`failed_jobs`] returns.
#[derive(Debug, Clone, Default)]
pub struct FailedFilter {
    pub queue: Option<String>,
    pub task: Option<String>,
    /// Only jobs that failed at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: Option<i64>,
}

/// Failed jobs, most recently failed first, with their last error.
pub async fn failed_jobs<'e, E: PgExecutor<'e>>(
    executor: E,
    filter: &FailedFilter,
) -> Result<Vec<FailedJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job.id, job.queue_name, job.task_name, job.attempts, job.finished_at,
                last_error.error, last_error.error_message
         FROM procrastinate_jobs AS job
         LEFT JOIN LATERAL (
             SELECT event.error, event.error_message
             FROM procrastinate_events AS event
             WHERE event.job_id = job.id AND event.type = 'error'
             ORDER BY event.id DESC
             LIMIT 1
         ) AS last_error ON true
         WHERE job.status = 'failed'
           AND ($1::varchar IS NULL OR job.queue_name = $1)
           AND ($2::varchar IS NULL OR job.task_name = $2)
           AND ($3::timestamptz IS NULL OR job.finished_at >= $3)
         ORDER BY job.finished_at DESC NULLS LAST, job.id DESC
         LIMIT $4",
    )
    .bind(&filter.queue)
    .bind(&filter.task)
    .bind(filter.since)
    .bind(filter.limit)
    .fetch_all(executor)
    .await
}

/// Everything about one job: its row and its whole history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobDetail {
    pub job: Job,
    pub events: Vec<Event>,
}

/// One job with its history, or `None` when there is no such job.
pub async fn job_detail(pool: &sqlx::PgPool, id: i64) -> Result<Option<JobDetail>, sqlx::Error> {
    let Some(job) = get_job(pool, id).await? else {
        return Ok(None);
    };
    let events = job_events(pool, id).await?;
    Ok(Some(JobDetail { job, events }))
}

/// Counts of jobs by status, for one value of a grouping column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct GroupCounts {
    pub name: String,
    pub jobs: i64,
    pub todo: i64,
    pub doing: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub aborted: i64,
}

/// What [`group_counts`] groups by: the shell's list_queues, list_tasks and list_locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Queue,
    Task,
    Lock,
}

/// Job counts by status per queue, task or lock, for the jobs matching `filter`.
pub async fn group_counts<'e, E: PgExecutor<'e>>(
    executor: E,
    grouping: Grouping,
    filter: &JobFilter,
) -> Result<Vec<GroupCounts>, sqlx::Error> {
    let column = match grouping {
        Grouping::Queue => "queue_name",
        Grouping::Task => "task_name",
        Grouping::Lock => "lock",
    };
    sqlx::query_as(&format!(
        "SELECT {column}::text AS name, count(*) AS jobs,
                count(*) FILTER (WHERE status = 'todo') AS todo,
                count(*) FILTER (WHERE status = 'doing') AS doing,
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                count(*) FILTER (WHERE status = 'aborted') AS aborted
         FROM procrastinate_jobs
         WHERE {column} IS NOT NULL
           AND ($1::varchar IS NULL OR queue_name = $1)
           AND ($2::varchar IS NULL OR task_name = $2)
           AND ($3::procrastinate_job_status IS NULL OR status = $3)
           AND ($4::text IS NULL OR lock = $4)
         GROUP BY {column}
         ORDER BY {column}"
    ))
    .bind(&filter.queue)
    .bind(&filter.task)
    .bind(filter.status)
    .bind(&filter.lock)
    .fetch_all(executor)
    .await
}
