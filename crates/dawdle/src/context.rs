//! What a running task knows about its job, and how it defers follow-ups.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::job::Job;

/// Handed to [`crate::Task::run`] with every attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: i64,
    /// Attempts made before this one (0 on the first run).
    pub attempts: i32,
    pub queue: String,
    pub task_name: String,
    pub lock: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The `procrastinate_workers` id of the worker running the job.
    pub worker_id: i64,
    pool: PgPool,
}

impl JobContext {
    pub(crate) fn new(job: &Job, worker_id: i64, pool: PgPool) -> Self {
        Self {
            job_id: job.id,
            attempts: job.attempts,
            queue: job.queue_name.clone(),
            task_name: job.task_name.clone(),
            lock: job.lock.clone(),
            scheduled_at: job.scheduled_at,
            worker_id,
            pool,
        }
    }

    /// The jobs database, to defer follow-up jobs (`dawdle::defer(ctx.pool(), …)`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
