//! Who is working: registered workers with their heartbeat and the jobs
//! they run, and the periodic tasks with their last and next defers.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::rows::DbTime;

/// A registered worker (dawdle's or the Python library's).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    pub id: i64,
    #[serde(serialize_with = "crate::rows::serialize_time")]
    pub last_heartbeat: DateTime<Utc>,
    /// Seconds since that heartbeat.
    pub silent_seconds: f64,
    /// Jobs in `doing` it holds.
    pub running: i64,
}

/// Registered workers, most recent heartbeat first.
pub async fn workers<'e, E: PgExecutor<'e>>(executor: E) -> Result<Vec<WorkerRow>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        last_heartbeat: DbTime,
        silent_seconds: Option<f64>,
        running: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT w.id, w.last_heartbeat,
                CASE WHEN isfinite(w.last_heartbeat)
                     THEN EXTRACT(EPOCH FROM now() - w.last_heartbeat)::float8 END
                    AS silent_seconds,
                (SELECT count(*) FROM procrastinate_jobs AS j
                 WHERE j.worker_id = w.id AND j.status = 'doing') AS running
         FROM procrastinate_workers AS w
         ORDER BY w.last_heartbeat DESC, w.id DESC",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| WorkerRow {
            id: row.id,
            last_heartbeat: row.last_heartbeat.0.unwrap_or(DateTime::<Utc>::MIN_UTC),
            silent_seconds: row.silent_seconds.unwrap_or(f64::INFINITY),
            running: row.running,
        })
        .collect())
}

/// A periodic task as its defers show it: the latest tick deferred and the
/// job it made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeriodicDefer {
    pub task_name: String,
    pub periodic_id: String,
    /// The latest tick deferred.
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
    pub last_tick: Option<DateTime<Utc>>,
    /// The job deferred for it (gone once purged).
    pub last_job_id: Option<i64>,
    /// Ticks recorded.
    pub defers: i64,
}

/// Every periodic task that was ever deferred, by task name.
pub async fn periodic_defers<'e, E: PgExecutor<'e>>(
    executor: E,
) -> Result<Vec<PeriodicDefer>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        task_name: String,
        periodic_id: String,
        defer_timestamp: Option<i64>,
        job_id: Option<i64>,
        defers: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (task_name, periodic_id)
                task_name, periodic_id, defer_timestamp, job_id,
                count(*) OVER (PARTITION BY task_name, periodic_id) AS defers
         FROM procrastinate_periodic_defers
         ORDER BY task_name, periodic_id, defer_timestamp DESC NULLS LAST",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| PeriodicDefer {
            task_name: row.task_name,
            periodic_id: row.periodic_id,
            last_tick: row
                .defer_timestamp
                .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0)),
            last_job_id: row.job_id,
            defers: row.defers,
        })
        .collect())
}
