//! `dawdle bench triggers`: measures what the statement-level history
//! triggers buy on the hot path.
//!
//! The schema records job history and sends notifications from triggers that
//! run once per statement over transition tables, on the bet that a worker
//! claiming and completing jobs in batches then pays for one trigger call per
//! batch instead of one per job. This command checks that bet against the
//! design it replaces: two scratch databases on the jobs database's server,
//! one with the schema as shipped and one where `bench_row_triggers.sql`
//! turns it into the classic per-row design (per-row history triggers and the
//! foreign keys they come with), drained by the same batched claim and finish
//! statements. It prints numbers and leaves the
//! judgement to whoever reads them: a ratio below the target is a result,
//! not an error.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use crate::{jobs_database, output, Failure};

/// SQL turning a database with dawdle's schema into the per-row baseline.
const ROW_TRIGGERS_SQL: &str = include_str!("bench_row_triggers.sql");

/// How much faster the statement-level variant is meant to drain jobs; shown
/// next to the measured ratio so a reader does not have to remember it.
const TARGET_RATIO: f64 = 1.5;

#[derive(Debug, Args)]
pub(crate) struct TriggerBenchArgs {
    /// Timed rounds per variant; the variants alternate within each round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    rounds: i32,
    /// Jobs inserted, then claimed and finished, per round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(i32).range(1..))]
    jobs: i32,
    /// Jobs per claim statement and per finish statement.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..))]
    batch: i32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// The two schemas under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// dawdle's schema as migrated.
    Statement,
    /// The same schema with per-row history triggers and foreign keys.
    Row,
}

impl Variant {
    const ALL: [Variant; 2] = [Variant::Statement, Variant::Row];

    fn label(self) -> &'static str {
        match self {
            Variant::Statement => "statement-level",
            Variant::Row => "row-level",
        }
    }

    fn database(self) -> &'static str {
        match self {
            Variant::Statement => "dawdle_bench_statement",
            Variant::Row => "dawdle_bench_row",
        }
    }
}

/// Failures of the benchmarks, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("{action}: {source}")]
    Database {
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("apply the schema to {database}: {source}")]
    Schema {
        database: &'static str,
        #[source]
        source: dawdle::schema::SchemaError,
    },
    /// A self-check found the system under measurement misbehaving (the two
    /// variants differ, jobs went missing): timing it would measure
    /// something other than the work the numbers claim.
    #[error("{0}")]
    Check(String),
}

pub(crate) trait OrFailedTo<T> {
    fn or_failed_to(self, action: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> OrFailedTo<T> for Result<T, sqlx::Error> {
    fn or_failed_to(self, action: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Database {
            action: action(),
            source,
        })
    }
}

/// The measurements of one variant.
#[derive(Debug, Serialize)]
struct VariantResult {
    variant: &'static str,
    database: &'static str,
    median_jobs_per_second: f64,
    min_jobs_per_second: f64,
    max_jobs_per_second: f64,
    /// Every round, in the order it ran.
    rounds_jobs_per_second: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    postgres_version: String,
    jobs: i32,
    batch: i32,
    rounds: i32,
    variants: Vec<VariantResult>,
    /// Median statement-level throughput over median row-level throughput.
    ratio_statement_over_row: f64,
    target_ratio: f64,
}

/// The median of `values`, or `None` when there are none. With an even count
/// it is the mean of the two middle values, so it never favours either half.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// Runs `dawdle bench triggers`.
pub(crate) async fn triggers(
    explicit_url: Option<&str>,
    args: TriggerBenchArgs,
) -> Result<ExitCode, Failure> {
    let database = jobs_database(explicit_url).await?;
    let server = database.connect_options().clone();
    let report = run(&server, &args)
        .await
        .map_err(|error| Failure::from_error(&error))?;
    if args.json {
        output::print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(server: &PgConnectOptions, args: &TriggerBenchArgs) -> Result<Report, BenchError> {
    let mut maintenance = connect_maintenance(server).await?;
    let outcome = measure(server, &mut maintenance, args).await;
    // Drop the scratch databases whether or not the measurement succeeded,
    // so a failed run does not leave twice the benchmark's data behind.
    let dropped = drop_scratch_databases(&mut maintenance).await;
    let report = outcome?;
    dropped?;
    maintenance
        .close()
        .await
        .or_failed_to(|| "disconnect from the server's `postgres` database".to_string())?;
    Ok(report)
}

async fn drop_scratch_databases(maintenance: &mut PgConnection) -> Result<(), BenchError> {
    for variant in Variant::ALL {
        drop_database(maintenance, variant.database()).await?;
    }
    Ok(())
}

/// Connects to the server's maintenance database, from which scratch
/// databases are created and dropped: CREATE and DROP DATABASE cannot run in
/// the database they name.
pub(crate) async fn connect_maintenance(
    server: &PgConnectOptions,
) -> Result<PgConnection, BenchError> {
    PgConnection::connect_with(&server.clone().database("postgres"))
        .await
        .or_failed_to(|| "connect to the server's `postgres` database".to_string())
}

pub(crate) async fn server_version(maintenance: &mut PgConnection) -> Result<String, BenchError> {
    sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut *maintenance)
        .await
        .or_failed_to(|| "read the server version".to_string())
}

/// Drops a scratch database if it exists.
pub(crate) async fn drop_database(
    maintenance: &mut PgConnection,
    database: &str,
) -> Result<(), BenchError> {
    // FORCE: a connection left over from a failed step (or a benchmarked
    // process that was killed) must not keep the database alive.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut *maintenance)
        .await
        .or_failed_to(|| format!("drop the scratch database {database}"))?;
    Ok(())
}

/// Creates a scratch database with dawdle's schema and connects to it.
pub(crate) async fn create_database(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    database: &'static str,
) -> Result<PgConnection, BenchError> {
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut *maintenance)
        .await
        .or_failed_to(|| {
            format!(
                "create the scratch database {database} (the benchmark needs a role allowed \
                 to create databases)"
            )
        })?;
    let mut conn = PgConnection::connect_with(&server.clone().database(database))
        .await
        .or_failed_to(|| format!("connect to {database}"))?;
    dawdle::schema::apply(&mut conn)
        .await
        .map_err(|source| BenchError::Schema { database, source })?;
    Ok(conn)
}

/// One scratch database, set up and connected.
#[derive(Debug)]
struct Scratch {
    variant: Variant,
    conn: PgConnection,
    worker_id: i64,
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    args: &TriggerBenchArgs,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;

    // A previous run that was interrupted may have left them behind.
    drop_scratch_databases(maintenance).await?;
    let mut scratches = Vec::new();
    for variant in Variant::ALL {
        scratches.push(create_scratch(server, maintenance, variant).await?);
    }

    eprintln!("dawdle: checking that both variants record the same events");
    verify_same_events(&mut scratches).await?;

    eprintln!(
        "dawdle: {} rounds of {} jobs per variant, claimed and finished {} at a time",
        args.rounds, args.jobs, args.batch
    );
    let mut throughput: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        // Alternate which variant goes first, so drift on the machine (a
        // checkpoint, another process, a warming cache) is shared out
        // evenly instead of always landing on the same one.
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        let mut line = format!("dawdle: round {}/{}:", round + 1, args.rounds);
        for index in order {
            let scratch = &mut scratches[index];
            let jobs_per_second = timed_round(scratch, args).await?;
            throughput
                .entry(scratch.variant.label())
                .or_default()
                .push(jobs_per_second);
            line.push_str(&format!(
                " {} {jobs_per_second:.0} jobs/s",
                scratch.variant.label()
            ));
        }
        eprintln!("{line}");
    }

    for scratch in scratches {
        let database = scratch.variant.database();
        scratch
            .conn
            .close()
            .await
            .or_failed_to(|| format!("disconnect from {database}"))?;
    }

    let variants: Vec<VariantResult> = Variant::ALL
        .iter()
        .map(|variant| {
            let rounds = throughput.remove(variant.label()).unwrap_or_default();
            VariantResult {
                variant: variant.label(),
                database: variant.database(),
                median_jobs_per_second: median(&rounds).unwrap_or(0.0),
                min_jobs_per_second: rounds.iter().copied().fold(f64::INFINITY, f64::min),
                max_jobs_per_second: rounds.iter().copied().fold(0.0, f64::max),
                rounds_jobs_per_second: rounds,
            }
        })
        .collect();
    let ratio_statement_over_row =
        variants[0].median_jobs_per_second / variants[1].median_jobs_per_second;
    Ok(Report {
        postgres_version,
        jobs: args.jobs,
        batch: args.batch,
        rounds: args.rounds,
        variants,
        ratio_statement_over_row,
        target_ratio: TARGET_RATIO,
    })
}

async fn create_scratch(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    variant: Variant,
) -> Result<Scratch, BenchError> {
    let database = variant.database();
    let mut conn = create_database(server, maintenance, database).await?;
    if variant == Variant::Row {
        sqlx::raw_sql(ROW_TRIGGERS_SQL)
            .execute(&mut conn)
            .await
            .or_failed_to(|| format!("install the per-row triggers in {database}"))?;
    }

    // Guard against measuring the same thing twice: a migration that renamed
    // its triggers would make the DROPs above fail, but one that added a
    // third history trigger would not.
    let (statement_triggers, row_triggers): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE tgtype & 1 = 0), count(*) FILTER (WHERE tgtype & 1 = 1)
         FROM pg_trigger
         WHERE tgrelid = 'procrastinate_jobs'::regclass AND NOT tgisinternal",
    )
    .fetch_one(&mut conn)
    .await
    .or_failed_to(|| format!("list the triggers of {database}"))?;
    // The BEFORE row trigger for timestamps is in both variants.
    let expected = match variant {
        Variant::Statement => (3, 1),
        Variant::Row => (0, 3),
    };
    if (statement_triggers, row_triggers) != expected {
        return Err(BenchError::Check(format!(
            "prepare {database}: procrastinate_jobs has {statement_triggers} statement-level \
             and {row_triggers} row-level triggers, expected {} and {}; the benchmark no \
             longer matches the schema",
            expected.0, expected.1
        )));
    }

    let worker_id: i64 =
        sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
            .fetch_one(&mut conn)
            .await
            .or_failed_to(|| format!("register a worker in {database}"))?;
    Ok(Scratch {
        variant,
        conn,
        worker_id,
    })
}

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

async fn verify_same_events(scratches: &mut [Scratch]) -> Result<(), BenchError> {
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

pub(crate) async fn reset(conn: &mut PgConnection, database: &str) -> Result<(), BenchError> {
    sqlx::raw_sql("TRUNCATE procrastinate_jobs, procrastinate_events CASCADE")
        .execute(&mut *conn)
        .await
        .or_failed_to(|| format!("empty the jobs tables of {database}"))?;
    Ok(())
}

/// Claims a batch as a worker with that many free slots would. It reads the
/// columns a worker needs to run a job, so the rows cross the wire as they
/// would in production.
const CLAIM: &str = "SELECT id, task_name, args, attempts FROM dawdle_fetch_jobs_v1(NULL, $1, $2)";

/// Completes a batch in one statement, as a worker flushing finished jobs.
const FINISH: &str = "UPDATE procrastinate_jobs
     SET status = 'succeeded', attempts = attempts + 1, finished_at = now()
     WHERE id = ANY($1)";

/// Fills the queue, then times draining it; returns jobs per second.
async fn timed_round(scratch: &mut Scratch, args: &TriggerBenchArgs) -> Result<f64, BenchError> {
    let database = scratch.variant.database();
    let conn = &mut scratch.conn;
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         SELECT 'default', 'bench.noop', jsonb_build_object('n', n)
         FROM generate_series(1, $1) AS n",
    )
    .bind(args.jobs)
    .execute(&mut *conn)
    .await
    .or_failed_to(|| format!("insert the jobs of a round in {database}"))?;
    // Fresh statistics and a clean visibility map, so the claim's plan and
    // index scans start from the same state in both databases.
    sqlx::raw_sql("VACUUM ANALYZE procrastinate_jobs")
        .execute(&mut *conn)
        .await
        .or_failed_to(|| format!("vacuum procrastinate_jobs in {database}"))?;

    let started = Instant::now();
    let mut drained: u64 = 0;
    loop {
        let claimed: Vec<i64> = sqlx::query(CLAIM)
            .bind(scratch.worker_id)
            .bind(args.batch)
            .fetch_all(&mut *conn)
            .await
            .or_failed_to(|| format!("claim jobs in {database}"))?
            .iter()
            .map(|row| row.get("id"))
            .collect();
        if claimed.is_empty() {
            break;
        }
        let finished = sqlx::query(FINISH)
            .bind(&claimed)
            .execute(&mut *conn)
            .await
            .or_failed_to(|| format!("finish jobs in {database}"))?
            .rows_affected();
        if finished != claimed.len() as u64 {
            return Err(BenchError::Check(format!(
                "drain {database}: finished {finished} of the {} jobs just claimed",
                claimed.len()
            )));
        }
        drained += finished;
    }
    let elapsed = started.elapsed();

    // Not timed: proof that the round did the work it claims, with every
    // event written, in either variant.
    let (jobs_left, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'),
                (SELECT count(*) FROM procrastinate_events)",
    )
    .fetch_one(&mut *conn)
    .await
    .or_failed_to(|| format!("count the events of a round in {database}"))?;
    // deferred, started, succeeded
    let expected_events = 3 * i64::from(args.jobs);
    if drained != args.jobs as u64 || jobs_left != 0 || events != expected_events {
        return Err(BenchError::Check(format!(
            "drain {database}: drained {drained} of {} jobs ({jobs_left} left unfinished) \
             and recorded {events} events instead of {expected_events}",
            args.jobs
        )));
    }
    reset(conn, database).await?;
    Ok(drained as f64 / elapsed.as_secs_f64())
}

fn print_report(report: &Report) {
    println!("dawdle bench triggers: statement-level vs per-row history triggers");
    println!("  server:  {}", report.postgres_version);
    println!(
        "  work:    {} jobs per round, claimed and finished {} per statement \
         (one claim and one finish statement per batch, each autocommitted)",
        report.jobs, report.batch
    );
    println!(
        "  rounds:  {} per variant, alternating which variant runs first",
        report.rounds
    );
    println!();
    let rows: Vec<Vec<String>> = report
        .variants
        .iter()
        .map(|variant| {
            vec![
                variant.variant.to_string(),
                format!("{:.0}", variant.median_jobs_per_second),
                format!("{:.0}", variant.min_jobs_per_second),
                format!("{:.0}", variant.max_jobs_per_second),
                variant
                    .rounds_jobs_per_second
                    .iter()
                    .map(|value| format!("{value:.0}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    output::print_table(&["VARIANT", "MEDIAN JOBS/S", "MIN", "MAX", "ROUNDS"], &rows);
    println!();
    let verdict = if report.ratio_statement_over_row >= report.target_ratio {
        "meets"
    } else {
        "is below"
    };
    println!(
        "statement/row (medians): {:.2}x, which {verdict} the {:.1}x target",
        report.ratio_statement_over_row, report.target_ratio
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_of_an_odd_count_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[3.0, 100.0, 2.0, 1.0, 4.0]), Some(3.0));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[10.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
