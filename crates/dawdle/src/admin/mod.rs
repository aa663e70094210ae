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

/// The conditions of [`JobFilter`], over `procrastinate_jobs`, with the
/// binds of [`bind_filter`]: `$1` to `$11`.
const FILTER_CONDITIONS: &str = "($1::bigint IS NULL OR id = $1)
           AND ($2::varchar IS NULL OR queue_name = $2)
           AND ($3::varchar IS NULL OR task_name = $3)
           AND ($4::procrastinate_job_status IS NULL OR status = $4)
           AND ($5::text IS NULL OR lock = $5)
           AND ($7::text IS NULL OR queueing_lock = $7)
           AND ($8::bigint IS NULL OR id < $8)
           AND ($9::timestamptz IS NULL OR created_at >= $9)
           AND ($10::timestamptz IS NULL OR created_at < $10)
           AND ($11::text IS NULL OR args::text ILIKE '%' || $11 || '%')";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q JobFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
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
}

/// Jobs matching `filter`, newest first, whole: every job's arguments are
/// read and parsed, however large. For programs (the test kit) that need
/// the values; listings for people use [`job_listing`].
pub async fn list_jobs<'e, E: PgExecutor<'e>>(
    executor: E,
    filter: &JobFilter,
) -> Result<Vec<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM procrastinate_jobs
         WHERE {FILTER_CONDITIONS}
         ORDER BY id DESC
         LIMIT $6"
    );
    bind_filter(sqlx::query_as(&sql), filter)
        .fetch_all(executor)
        .await
}

/// Most bytes a job's arguments may take in the table (`pg_column_size`,
/// compressed or not) for a listing to read them. Reading larger ones
/// means decompressing and printing them whole on the server (about a
/// quarter of a second for 25 MB of text), per job of the page.
pub const LISTED_ARGS_STORED_BYTES: i32 = 8 * 1024;

/// Most characters of arguments, as JSON text, a listing carries as a
/// value; longer ones are left out with an excerpt.
pub const LISTED_ARGS_CHARS: usize = 16 * 1024;

/// Characters of the excerpt of arguments a listing left out.
pub const LEFT_OUT_EXCERPT_CHARS: usize = 200;

/// A job as a listing shows it: [`Job`], with its arguments only when they
/// are small (see [`ArgsLeftOut`]). Reading a page costs the same whatever
/// the rows hold. In JSON, the job's fields and `args_left_out`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListedJob {
    /// The job; its `args` are null when they could not be read
    /// (`args_error`) or were left out of the listing
    /// ([`Self::args_left_out`]).
    #[serde(flatten)]
    pub job: Job,
    /// Set when the arguments are too large for a listing; `dawdle job ID
    /// --json` has them whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_left_out: Option<ArgsLeftOut>,
}

/// Arguments a listing left out: how large they are and, when they were
/// read (not too large stored, only too long to list), how they begin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgsLeftOut {
    /// Bytes the arguments take in the table (compressed, when they are).
    pub stored_bytes: i64,
    /// The first [`LEFT_OUT_EXCERPT_CHARS`] characters of their JSON text,
    /// when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

impl ListedJob {
    /// The arguments for one line of a listing: their JSON text, the
    /// excerpt of arguments left out with their size, or why they cannot be
    /// read. Not yet bounded or escaped (the caller cuts it to its width).
    pub fn args_summary(&self) -> String {
        match (&self.job.args_error, &self.args_left_out) {
            (Some(why), _) => format!("(unreadable) {why}"),
            (None, Some(left_out)) => {
                let mut summary = format!(
                    "(left out: {} bytes stored; `dawdle job {}` shows them)",
                    left_out.stored_bytes, self.job.id
                );
                if let Some(excerpt) = &left_out.excerpt {
                    summary.push(' ');
                    summary.push_str(excerpt);
                }
                summary
            }
            (None, None) => self.job.args.to_string(),
        }
    }
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ListedJob {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let stored_bytes: i64 = row.try_get("args_stored_bytes")?;
        let text: Option<String> = row.try_get("args")?;
        let (args, args_error, args_left_out) = match text {
            Some(text) if text.chars().nth(LISTED_ARGS_CHARS).is_none() => {
                let (args, error) = crate::job::parse_args(&text);
                (args, error, None)
            }
            text => (
                serde_json::Value::Null,
                None,
                Some(ArgsLeftOut {
                    stored_bytes,
                    excerpt: text.map(|text| {
                        crate::text::truncate(&text, LEFT_OUT_EXCERPT_CHARS).into_owned()
                    }),
                }),
            ),
        };
        Ok(ListedJob {
            job: Job::from_row_with_args(row, args, args_error)?,
            args_left_out,
        })
    }
}

/// Jobs matching `filter`, newest first, as listings show them: arguments
/// larger than [`LISTED_ARGS_STORED_BYTES`] in the table are neither read
/// nor printed by the server, so a page of huge rows reads as fast as any.
pub async fn job_listing<'e, E: PgExecutor<'e>>(
    executor: E,
    filter: &JobFilter,
) -> Result<Vec<ListedJob>, sqlx::Error> {
    let sql = format!(
        "SELECT id, queue_name, task_name, priority, lock, queueing_lock,
                CASE WHEN pg_column_size(args) <= {LISTED_ARGS_STORED_BYTES}
                     THEN args::text END AS args,
                pg_column_size(args)::bigint AS args_stored_bytes,
                status, scheduled_at, attempts, abort_requested, worker_id, created_at,
                started_at, finished_at
         FROM procrastinate_jobs
         WHERE {FILTER_CONDITIONS}
         ORDER BY id DESC
         LIMIT $6"
    );
    bind_filter(sqlx::query_as(&sql), filter)
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

/// The whole history of one job, oldest first, however long (for
/// programs; people's views use [`job_detail`], which bounds it).
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
pub use checks::{explain_failure, run_check, Check, CheckResult, CHECKS, INFINITE_TIMESTAMPS_SQL};
pub use gauges::{queue_gauges, GaugeRecorder, QueueGauge, QueueGauges};
pub use health::{healthcheck, HealthReport};
pub use queues::{pause_queue, paused_queues, resume_queue, PausedQueue, QueueError};
pub use stats::{
    hourly_outcomes, human_duration, stats, HourOutcomes, QueueCounts, QueueStats, StatsConfig,
    TaskDuration, Verdict,
};
pub use workers::{periodic_defers, workers, PeriodicDefer, WorkerRow};

/// Most a worker's heartbeat may be ahead of the database's clock and still
/// count as a sign of life (clock skew between hosts).
pub const HEARTBEAT_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// The condition on `procrastinate_workers` of a live worker, `seconds`
/// the parameter holding the seconds of silence allowed: a recent
/// heartbeat, and not one from the future beyond [`HEARTBEAT_SKEW`]
/// (`infinity`, a clock years ahead), which says nothing about the worker
/// now. Stats, healthcheck, metrics and the dashboard's workers page all
/// judge by it.
pub(crate) fn live_heartbeat(seconds: &str) -> String {
    format!(
        "(last_heartbeat > now() - make_interval(secs => {seconds})
          AND last_heartbeat <= now() + make_interval(secs => {skew}))",
        skew = HEARTBEAT_SKEW.as_secs()
    )
}

/// A failed job with its last error, for `dawdle failed`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct FailedJob {
    pub id: i64,
    pub queue_name: String,
    pub task_name: String,
    pub attempts: i32,
    #[sqlx(try_from = "crate::rows::DbTime")]
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
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

/// Events a job's detail shows from the start of its history.
pub const HISTORY_FIRST: usize = 20;
/// Events a job's detail shows from the end of its history.
pub const HISTORY_LAST: usize = 200;
/// Most characters of one event's error kind, message or traceback a job's
/// detail carries; longer ones end with [`crate::text::TRUNCATED`].
pub const EVENT_FIELD_CHARS: usize = 64 * 1024;

/// Everything about one job: its row and its history, the first
/// [`HISTORY_FIRST`] and the last [`HISTORY_LAST`] events of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobDetail {
    pub job: Job,
    /// Oldest first. When events were left out, they were between the
    /// first [`HISTORY_FIRST`] of these and the rest.
    pub events: Vec<Event>,
    /// How many events of the history are not in `events`.
    pub events_left_out: i64,
}

/// One job with its history, or `None` when there is no such job.
pub async fn job_detail(pool: &sqlx::PgPool, id: i64) -> Result<Option<JobDetail>, sqlx::Error> {
    let Some(job) = get_job(pool, id).await? else {
        return Ok(None);
    };
    let (events, events_left_out) = bounded_history(pool, id).await?;
    Ok(Some(JobDetail {
        job,
        events,
        events_left_out,
    }))
}

/// The first and the last events of a job, each field bounded, and how many
/// were left out between them: one index range read, however long the
/// history.
pub async fn bounded_history<'e, E: PgExecutor<'e>>(
    executor: E,
    job_id: i64,
) -> Result<(Vec<Event>, i64), sqlx::Error> {
    let bounded = |column: &str| {
        format!(
            "CASE WHEN length({column}) > $4 THEN left({column}, $5) || $6 ELSE {column} END
                 AS {column}"
        )
    };
    let sql = format!(
        "WITH shown AS (
             (SELECT id FROM procrastinate_events WHERE job_id = $1 ORDER BY id LIMIT $2)
             UNION
             (SELECT id FROM procrastinate_events WHERE job_id = $1 ORDER BY id DESC LIMIT $3))
         SELECT id, job_id, type, at, {error}, {message}, {traceback},
                (SELECT count(*) FROM procrastinate_events WHERE job_id = $1) AS total
         FROM procrastinate_events
         WHERE job_id = $1 AND id IN (SELECT id FROM shown)
         ORDER BY id",
        error = bounded("error"),
        message = bounded("error_message"),
        traceback = bounded("error_traceback"),
    );
    let marker = crate::text::TRUNCATED;
    let rows: Vec<sqlx::postgres::PgRow> = sqlx::query(&sql)
        .bind(job_id)
        .bind(HISTORY_FIRST as i64)
        .bind(HISTORY_LAST as i64)
        .bind(EVENT_FIELD_CHARS as i32)
        .bind((EVENT_FIELD_CHARS - marker.chars().count()) as i32)
        .bind(marker)
        .fetch_all(executor)
        .await?;
    use sqlx::{FromRow, Row};
    let total: i64 = match rows.first() {
        Some(row) => row.try_get("total")?,
        None => 0,
    };
    let events = rows
        .iter()
        .map(Event::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let left_out = total - events.len() as i64;
    Ok((events, left_out))
}

/// Counts of jobs by status, for one value of a grouping column. `doing`
/// includes `aborting` (a status older Procrastinate releases set on a
/// running job asked to abort).
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
                count(*) FILTER (WHERE status IN ('doing', 'aborting')) AS doing,
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
