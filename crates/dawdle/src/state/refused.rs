//! Writes the database refuses for what a row holds, and the way out of
//! them: a job that cannot make the transition it was meant to make ends
//! `failed`, with an `error` event saying which and why, rather than staying
//! `doing` with nobody to finish it.
//!
//! A statement over many jobs that one of them makes fail is tried again
//! job by job by its caller, so one row never holds back the others; this
//! module tells such refusals from lost connections and ends the jobs that
//! are refused even alone.

use crate::task_error::GENERIC_ERROR;

/// Whether a failed write was refused for what one of its rows holds (a
/// data exception, an integrity or size limit) rather than for the
/// connection: retrying the same statement would fail again.
pub(crate) fn refused_for_its_data(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|e| e.code());
    code.is_some_and(|code| {
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

/// Why the database refused a write, in words that quote none of the
/// row's values (the database's own message may): the SQLSTATE and the
/// constraint, and what the constraints the schema defines mean.
pub(crate) fn why_refused(error: &sqlx::Error) -> String {
    let Some(database) = error.as_database_error() else {
        return "the database refused it".to_string();
    };
    let code = database.code().unwrap_or_default();
    match database.constraint() {
        Some("procrastinate_jobs_queueing_lock_idx_v1") => {
            "another job waits with the same queueing lock".to_string()
        }
        Some("procrastinate_jobs_lock_idx_v1") => {
            "another job with the same lock is running".to_string()
        }
        Some(constraint) => format!(
            "the database refused it with SQLSTATE {code} (constraint {})",
            crate::text::excerpt(constraint, 64)
        ),
        None => format!("the database refused it with SQLSTATE {code}"),
    }
}

/// Ends job `job_id`, still `doing` under `worker_id` (none: no worker), as
/// `failed` because the database refused `meant` (what should have
/// happened to it, e.g. "put back to todo") with `refused`. Its attempt
/// count is kept. Returns whether the job was changed.
pub(crate) async fn fail_instead(
    conn: &mut sqlx::PgConnection,
    job_id: i64,
    worker_id: Option<i64>,
    meant: &str,
    refused: &sqlx::Error,
) -> Result<bool, sqlx::Error> {
    let message = format!(
        "{meant} was refused: {}; the job is failed instead, so that it does not stay \
         in doing (the worker's log has the details)",
        why_refused(refused)
    );
    let failed: Option<i64> = sqlx::query_scalar(
        "WITH failed AS (
             UPDATE procrastinate_jobs
             SET status = 'failed', worker_id = NULL, abort_requested = false,
                 finished_at = now()
             WHERE id = $1 AND status::text = 'doing'
               AND worker_id IS NOT DISTINCT FROM $2
             RETURNING id
         ),
         noted AS (
             INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
             SELECT id, 'error', $3, $4, $3 || ': ' || $4 FROM failed
         )
         SELECT id FROM failed",
    )
    .bind(job_id)
    .bind(worker_id)
    .bind(GENERIC_ERROR)
    .bind(&message)
    .persistent(false)
    .fetch_optional(conn)
    .await?;
    Ok(failed.is_some())
}
