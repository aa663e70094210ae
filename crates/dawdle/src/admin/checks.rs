//! The runbook's monitoring queries as named, runnable checks, for
//! dashboards and alerting (`dawdle check NAME --json`).
//!
//! Each check runs the runbook's SQL as written there, so the numbers match
//! what someone pasting the query into psql sees.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Column, PgPool};

/// One named check.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every check, in the runbook's order.
pub const CHECKS: &[Check] = &[
    Check {
        name: "stuck-doing",
        description: "Jobs stuck in 'doing' for >5 minutes (potentially stalled)",
        sql: "SELECT * FROM procrastinate_jobs
WHERE status = 'doing'
  AND started_at < NOW() - INTERVAL '5 minutes';",
    },
    Check {
        name: "errors-by-type",
        description: "Recent errors by type (last hour)",
        sql: "SELECT
    task_name,
    error,
    COUNT(*)
FROM procrastinate_jobs j
JOIN procrastinate_events e ON j.id = e.job_id
WHERE e.type = 'error'
  AND e.at > NOW() - INTERVAL '1 hour'
GROUP BY task_name, error;",
    },
    Check {
        name: "failed-last-hour",
        description: "Failed jobs in last hour (for alerting)",
        sql: "SELECT COUNT(*) FROM procrastinate_jobs
WHERE status = 'failed'
  AND created_at > NOW() - INTERVAL '1 hour';",
    },
    Check {
        name: "queue-depth",
        description: "Queue depth by queue (for dashboards)",
        sql: "SELECT queue_name, COUNT(*) as pending
FROM procrastinate_jobs
WHERE status = 'todo'
GROUP BY queue_name;",
    },
    Check {
        name: "processing-rate",
        description: "Processing rate (jobs/hour)",
        sql: "SELECT COUNT(*) as processed_last_hour
FROM procrastinate_jobs
WHERE status = 'succeeded'
  AND created_at > NOW() - INTERVAL '1 hour';",
    },
    Check {
        name: "avg-duration",
        description: "Average processing time by task",
        sql: "SELECT
    task_name,
    AVG(EXTRACT(EPOCH FROM (finished_at - started_at))) as avg_duration_seconds
FROM procrastinate_jobs
WHERE status = 'succeeded'
  AND finished_at IS NOT NULL
GROUP BY task_name;",
    },
];

/// Finds the jobs whose `started_at` or `finished_at` is infinite, which
/// the runbook's `avg-duration` query cannot subtract.
pub const INFINITE_TIMESTAMPS_SQL: &str =
    "SELECT id FROM procrastinate_jobs WHERE NOT isfinite(started_at) OR NOT isfinite(finished_at)";

/// Why check `name` failed, for a person, when the runbook's SQL (run as
/// written) cannot handle what a row holds: PostgreSQL's "cannot subtract
/// infinite timestamps" (SQLSTATE 22008, `datetime_field_overflow`) from
/// `avg-duration` on a job with an infinite `started_at` or `finished_at`.
/// `None` for any other error.
pub fn explain_failure(name: &str, error: &sqlx::Error) -> Option<String> {
    let database = error.as_database_error()?;
    if database.code().as_deref() != Some("22008") {
        return None;
    }
    Some(format!(
        "check {name} failed: a job row holds an infinite timestamp (started_at or finished_at) \
         that the runbook's query cannot subtract ({}); find such rows with: {INFINITE_TIMESTAMPS_SQL}",
        crate::text::truncate(database.message(), 200),
    ))
}

/// The rows a check returned, as JSON objects keyed by column name.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub description: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

/// Runs the check called `name`; `None` when there is no such check.
pub async fn run_check(pool: &PgPool, name: &str) -> Result<Option<CheckResult>, sqlx::Error> {
    use sqlx::Executor;
    let Some(check) = CHECKS.iter().find(|check| check.name == name) else {
        return Ok(None);
    };
    let sql = check.sql.trim().trim_end_matches(';');
    // Column names in the query's order (a JSON object does not keep it).
    let columns = pool
        .describe(sql)
        .await?
        .columns()
        .iter()
        .map(|column| column.name().to_string())
        .collect();
    // to_jsonb turns every column type (numeric, enums, timestamps, jsonb)
    // into JSON without a decoder per type.
    let rows: Vec<Value> = sqlx::query_scalar(&format!("SELECT to_jsonb(q) FROM ({sql}) AS q"))
        .fetch_all(pool)
        .await?;
    let rows = rows
        .into_iter()
        .map(|row| match row {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_string(), other)]),
        })
        .collect();
    Ok(Some(CheckResult {
        name: check.name,
        description: check.description,
        columns,
        rows,
    }))
}
