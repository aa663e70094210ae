//! Pausing and resuming queues: a paused queue keeps taking jobs, and no
//! worker (dawdle's or the Python library's) claims them until it is
//! resumed. The gentler way to stop a queue that is causing trouble than
//! restarting without the worker: the other queues keep running.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::job::InvalidJob;
use crate::rows::DbTime;

/// Longest `paused_by` and `reason` kept (longer ones are cut).
const MAX_BY_CHARS: usize = 256;
const MAX_REASON_CHARS: usize = 1024;

/// A paused queue: since when, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PausedQueue {
    pub queue: String,
    #[serde(serialize_with = "crate::rows::serialize_time")]
    pub paused_at: DateTime<Utc>,
    pub paused_by: Option<String>,
    pub reason: Option<String>,
    /// Jobs waiting in the queue (`todo`), which no worker claims.
    pub waiting: i64,
}

/// Failures of [`pause_queue`] and [`resume_queue`], worded to read after
/// "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{action}: {source}")]
    Invalid {
        action: &'static str,
        #[source]
        source: InvalidJob,
    },
    #[error("{action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Pauses `queue`; `false` when it was paused already (left as it was).
/// Workers of the queue put back the jobs of it they hold unstarted, and
/// claim none until [`resume_queue`]. Jobs running finish as usual.
pub async fn pause_queue<'e, E: PgExecutor<'e>>(
    executor: E,
    queue: &str,
    paused_by: Option<&str>,
    reason: Option<&str>,
) -> Result<bool, QueueError> {
    const ACTION: &str = "pause queue";
    crate::job::check_name("queue name", queue).map_err(|source| QueueError::Invalid {
        action: ACTION,
        source,
    })?;
    // At most `max` characters once escaped and cut, as the table's checks
    // require: an excerpt may be longer than the characters it keeps.
    let cut = |text: Option<&str>, max: usize| {
        text.map(|text| {
            let excerpt = crate::text::excerpt(text.trim(), max - 1);
            if excerpt.chars().count() <= max {
                return excerpt;
            }
            excerpt.chars().take(max - 1).chain(['…']).collect()
        })
        .filter(|text| !text.is_empty())
    };
    let inserted = sqlx::query(
        "INSERT INTO dawdle_queue_pauses (queue_name, paused_by, reason)
         VALUES ($1, $2, $3)
         ON CONFLICT (queue_name) DO NOTHING",
    )
    .bind(queue)
    .bind(cut(paused_by, MAX_BY_CHARS))
    .bind(cut(reason, MAX_REASON_CHARS))
    .execute(executor)
    .await
    .map_err(|source| QueueError::Database {
        action: ACTION,
        source,
    })?;
    Ok(inserted.rows_affected() == 1)
}

/// Resumes `queue`; `false` when it was not paused. Its workers claim its
/// jobs at once (they are notified).
pub async fn resume_queue<'e, E: PgExecutor<'e>>(
    executor: E,
    queue: &str,
) -> Result<bool, QueueError> {
    let deleted = sqlx::query("DELETE FROM dawdle_queue_pauses WHERE queue_name = $1")
        .bind(queue)
        .execute(executor)
        .await
        .map_err(|source| QueueError::Database {
            action: "resume queue",
            source,
        })?;
    Ok(deleted.rows_affected() == 1)
}

/// The paused queues, by name, with how many jobs wait in each.
pub async fn paused_queues<'e, E: PgExecutor<'e>>(
    executor: E,
) -> Result<Vec<PausedQueue>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        queue: String,
        paused_at: DbTime,
        paused_by: Option<String>,
        reason: Option<String>,
        waiting: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.queue_name AS queue, p.paused_at, p.paused_by, p.reason,
                (SELECT count(*) FROM procrastinate_jobs AS j
                 WHERE j.status = 'todo' AND j.queue_name = p.queue_name) AS waiting
         FROM dawdle_queue_pauses AS p
         ORDER BY p.queue_name",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| PausedQueue {
            queue: row.queue,
            paused_at: row.paused_at.0.unwrap_or(DateTime::<Utc>::MIN_UTC),
            paused_by: row.paused_by,
            reason: row.reason,
            waiting: row.waiting,
        })
        .collect())
}
