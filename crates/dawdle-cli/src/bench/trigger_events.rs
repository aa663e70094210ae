//! The self-check of `dawdle bench triggers`: before anything is timed, the
//! same story of jobs is played in both scratch databases, and the per-row
//! triggers must record the same events as the statement-level ones (same
//! jobs, types and statements), or the comparison would time different work.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Row};

use super::scratch::reset;
use super::triggers::Scratch;
use super::{BenchError, OrFailedTo};

/// A short history that goes through every kind of event the triggers
/// write, each statement in its own transaction so that `now()` tells the
/// statements apart. Jobs are named by task so the steps read as a story.
const EQUIVALENCE_SCENARIO: &[&str] = &[
    "SELECT procrastinate_defer_jobs_v1(ARRAY[
        ('default', 'check.plain_a', 0, NULL, NULL, '{}', NULL),
        ('default', 'check.plain_b', 0, NULL, NULL, '{}', NULL),
        ('other', 'check.aborted', 5, NULL, 'only-one', '{}', NULL),
        ('default', 'check.past', 0, NULL, NULL, '{}', '2000-01-01T00:00:00Z'),
        ('default', 'check.future', 0, NULL, NULL, '{}', '2100-01-01T00:00:00Z'),
        ('default', 'check.future_b', 0, NULL, NULL, '{}', '2100-01-01T00:00:00Z'),
        ('default', 'check.lock_first', 0, 'account-1', NULL, '{}', NULL),
        ('default', 'check.lock_second', 0, 'account-1', NULL, '{}', NULL),
        ('other', 'check.lock_other', 0, 'account-2', NULL, '{}', NULL)
     ]::procrastinate_job_to_defer_v1[])",
    // Plain multi-row INSERT, the way the timed rounds create jobs.
    "INSERT INTO procrastinate_jobs (queue_name, task_name, scheduled_at)
     VALUES ('default', 'check.inserted', NULL),
            ('other', 'check.inserted_future', '2100-01-01T00:00:00Z')",
    "SELECT count(*) FROM dawdle_fetch_jobs_v1(
         NULL, (SELECT max(id) FROM procrastinate_workers), 100)",
    // The batched finish of the timed rounds.
    "UPDATE procrastinate_jobs
     SET status = 'succeeded', attempts = attempts + 1, finished_at = now()
     WHERE task_name IN ('check.plain_a', 'check.lock_first')",
    "SELECT procrastinate_finish_job_v1(id, 'failed', false)
     FROM procrastinate_jobs WHERE task_name = 'check.plain_b'",
    "SELECT procrastinate_retry_job_v1(id, '2100-01-02T00:00:00Z', NULL, NULL, NULL)
     FROM procrastinate_jobs WHERE task_name = 'check.past'",
    "SELECT procrastinate_retry_job_v2(id, NULL, NULL, NULL, NULL)
     FROM procrastinate_jobs WHERE task_name = 'check.plain_b'",
    "SELECT procrastinate_cancel_job_v1(id, false, false)
     FROM procrastinate_jobs WHERE task_name = 'check.future'",
    "SELECT procrastinate_cancel_job_v1(id, true, false)
     FROM procrastinate_jobs WHERE task_name = 'check.aborted'",
    "SELECT procrastinate_finish_job_v1(id, 'aborted', false)
     FROM procrastinate_jobs WHERE task_name = 'check.aborted'",
    // An update that changes no status still records `scheduled` for a
    // scheduled todo job, as Procrastinate does.
    "UPDATE procrastinate_jobs SET priority = 3 WHERE task_name = 'check.future_b'",
    "SELECT count(*) FROM dawdle_fetch_jobs_v1(
         NULL, (SELECT max(id) FROM procrastinate_workers), 100)",
    "UPDATE procrastinate_jobs
     SET status = 'succeeded', attempts = attempts + 1, finished_at = now()
     WHERE status = 'doing'",
];

/// Event types the scenario must produce; if one is missing, the scenario
/// (or a trigger) changed and the comparison no longer covers it.
const SCENARIO_EVENT_TYPES: &[&str] = &[
    "abort_requested",
    "aborted",
    "cancelled",
    "deferred",
    "deferred_for_retry",
    "failed",
    "retried",
    "scheduled",
    "started",
    "succeeded",
];

/// One job's history, as comparable across the two databases: sorted, since
/// two events written by one statement for one job carry no reliable order
/// between the two designs.
type Histories = BTreeMap<i64, Vec<(String, String, String)>>;

pub(super) async fn verify_same_events(scratches: &mut [Scratch]) -> Result<(), BenchError> {
    let mut histories = Vec::new();
    let mut jobs = Vec::new();
    for scratch in scratches.iter_mut() {
        let database = scratch.variant.database();
        // Each step's `now()`, which every non-`scheduled` event it writes
        // must carry as its `at`.
        let mut step_times: Vec<DateTime<Utc>> = Vec::new();
        for (step, statement) in EQUIVALENCE_SCENARIO.iter().enumerate() {
            let action = || format!("run step {} of the event check in {database}", step + 1);
            let mut tx = scratch.conn.begin().await.or_failed_to(action)?;
            sqlx::raw_sql(statement)
                .execute(&mut *tx)
                .await
                .or_failed_to(action)?;
            let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(&mut *tx)
                .await
                .or_failed_to(action)?;
            tx.commit().await.or_failed_to(action)?;
            step_times.push(now);
        }
        histories.push(read_histories(&mut scratch.conn, database, &step_times).await?);
        let job_states: Vec<(i64, String, String, i32, bool)> = sqlx::query_as(
            "SELECT id, task_name, status::text, attempts, abort_requested
             FROM procrastinate_jobs ORDER BY id",
        )
        .fetch_all(&mut scratch.conn)
        .await
        .or_failed_to(|| format!("read the jobs of the event check in {database}"))?;
        jobs.push(job_states);
        reset(&mut scratch.conn, database).await?;
    }

    // Triggers must not change what happens to jobs; if they did, comparing
    // their events would be comparing different stories.
    if jobs[0] != jobs[1] {
        return Err(BenchError::Check(format!(
            "check the per-row triggers: the jobs ended differently\n  statement-level: \
             {:?}\n  row-level: {:?}",
            jobs[0], jobs[1]
        )));
    }
    let seen: BTreeSet<&str> = histories[0]
        .values()
        .flatten()
        .map(|(_, kind, _)| kind.as_str())
        .collect();
    let missing: Vec<&&str> = SCENARIO_EVENT_TYPES
        .iter()
        .filter(|kind| !seen.contains(**kind))
        .collect();
    if !missing.is_empty() {
        return Err(BenchError::Check(format!(
            "check the per-row triggers: the scenario recorded no {missing:?} events with the \
             statement-level triggers, so it no longer exercises them"
        )));
    }
    let job_ids: BTreeSet<i64> = histories[0]
        .keys()
        .chain(histories[1].keys())
        .copied()
        .collect();
    let differences: Vec<String> = job_ids
        .into_iter()
        .filter_map(|id| {
            let statement = histories[0].get(&id);
            let row = histories[1].get(&id);
            (statement != row)
                .then(|| format!("  job {id}: statement-level {statement:?}, row-level {row:?}"))
        })
        .collect();
    if !differences.is_empty() {
        return Err(BenchError::Check(format!(
            "check the per-row triggers: they record different events than the \
             statement-level ones (task, type, at):\n{}",
            differences.join("\n")
        )));
    }
    Ok(())
}

/// Each job's events as (task, type, at). `scheduled` events copy the job's
/// schedule, so their `at` is compared as is; every other event takes the
/// `now()` of the statement's transaction, which differs between the two
/// databases, so it is compared as the scenario step whose transaction time
/// it equals. That catches a trigger that uses another clock or attributes
/// an event to the wrong statement.
async fn read_histories(
    conn: &mut PgConnection,
    database: &str,
    step_times: &[DateTime<Utc>],
) -> Result<Histories, BenchError> {
    let rows = sqlx::query(
        "SELECT e.job_id, j.task_name, e.type::text AS type,
                CASE WHEN e.type = 'scheduled' THEN e.at::text
                     ELSE coalesce('step ' || array_position($1::timestamptz[], e.at),
                                   'at ' || e.at::text || ', no step''s transaction time')
                END AS at
         FROM procrastinate_events AS e
         JOIN procrastinate_jobs AS j ON j.id = e.job_id
         ORDER BY e.job_id, e.id",
    )
    .bind(step_times)
    .fetch_all(&mut *conn)
    .await
    .or_failed_to(|| format!("read the events of the event check in {database}"))?;
    let mut histories = Histories::new();
    for row in rows {
        histories.entry(row.get("job_id")).or_default().push((
            row.get("task_name"),
            row.get("type"),
            row.get("at"),
        ));
    }
    for events in histories.values_mut() {
        events.sort();
    }
    Ok(histories)
}
