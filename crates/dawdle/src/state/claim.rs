//! Claiming: `todo` jobs become `doing` under one worker, in one statement.

use sqlx::PgPool;

use crate::job::{Job, JOB_COLUMNS};

/// Claims up to `limit` runnable jobs of `queues` (all queues when `None`)
/// for `worker_id`, with `dawdle_fetch_jobs_v1`: highest priority first,
/// never two jobs of one lock, never a job whose lock is busy. The claim
/// commits before it returns, so no row lock outlives it.
pub(crate) async fn claim(
    pool: &PgPool,
    queues: Option<&[String]>,
    worker_id: i64,
    limit: usize,
) -> Result<Vec<Job>, sqlx::Error> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql =
        SQL.get_or_init(|| format!("SELECT {JOB_COLUMNS} FROM dawdle_fetch_jobs_v1($1, $2, $3)"));
    sqlx::query_as(sql)
        .bind(queues)
        .bind(worker_id)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .fetch_all(pool)
        .await
}
