//! Reading and changing jobs for people: the operations behind the CLI, the
//! shell and the dashboard, written once here so they all agree.

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
         ORDER BY id DESC
         LIMIT $6"
    ))
    .bind(filter.id)
    .bind(&filter.queue)
    .bind(&filter.task)
    .bind(filter.status)
    .bind(&filter.lock)
    .bind(filter.limit)
    .fetch_all(executor)
    .await
}

/// One job by id.
pub async fn get_job<'e, E: PgExecutor<'e>>(
    executor: E,
    id: i64,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM procrastinate_jobs WHERE id = $1"
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
