//! `dawdle bench triggers`: measures what the statement-level history
//! triggers buy on the hot path.
//!
//! The schema records job history and sends notifications from triggers that
//! run once per statement over transition tables, on the bet that a worker
//! claiming and completing jobs in batches then pays for one trigger call per
//! batch instead of one per job. This command checks that bet against the
//! design it replaces: two scratch databases on the jobs database's server,
//! one with the schema as shipped and one where `row_triggers.sql`
//! turns it into the classic per-row design (per-row history triggers and the
//! foreign keys they come with), drained by the same batched claim and finish
//! statements. It prints numbers and leaves the
//! judgement to whoever reads them: a ratio below the target is a result,
//! not an error.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, Row};

use super::scratch::{self, create_database, disconnect, reset, server_version};
use super::trigger_events::verify_same_events;
use super::{median, print_report, BenchError, OrFailedTo};
use crate::database::jobs_database;
use crate::{output, Failure};

/// SQL turning a database with dawdle's schema into the per-row baseline.
const ROW_TRIGGERS_SQL: &str = include_str!("row_triggers.sql");

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
pub(super) enum Variant {
    /// dawdle's schema as migrated.
    Statement,
    /// The same schema with per-row history triggers and foreign keys.
    Row,
}

impl Variant {
    pub(super) const ALL: [Variant; 2] = [Variant::Statement, Variant::Row];

    pub(super) fn label(self) -> &'static str {
        match self {
            Variant::Statement => "statement-level",
            Variant::Row => "row-level",
        }
    }

    pub(super) fn database(self) -> &'static str {
        match self {
            Variant::Statement => "dawdle_bench_statement",
            Variant::Row => "dawdle_bench_row",
        }
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

/// Runs `dawdle bench triggers`.
pub(super) async fn run(
    explicit_url: Option<&str>,
    args: TriggerBenchArgs,
) -> Result<ExitCode, Failure> {
    let database = jobs_database(explicit_url).await?;
    let server = database.connect_options();
    let databases = Variant::ALL.map(Variant::database);
    let report = scratch::with_databases(server, &databases, async |maintenance| {
        measure(server, maintenance, &args).await
    })
    .await
    .map_err(|error| Failure::from_error(&error))?;
    Ok(print_report(&report, args.json, print_for_people))
}

/// One scratch database, set up and connected.
#[derive(Debug)]
pub(super) struct Scratch {
    pub(super) variant: Variant,
    pub(super) conn: PgConnection,
    worker_id: i64,
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    args: &TriggerBenchArgs,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;
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
        disconnect(scratch.conn, scratch.variant.database()).await?;
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

fn print_for_people(report: &Report) {
    outln!("dawdle bench triggers: statement-level vs per-row history triggers");
    outln!("  server:  {}", report.postgres_version);
    outln!(
        "  work:    {} jobs per round, claimed and finished {} per statement \
         (one claim and one finish statement per batch, each autocommitted)",
        report.jobs,
        report.batch
    );
    outln!(
        "  rounds:  {} per variant, alternating which variant runs first",
        report.rounds
    );
    outln!();
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
    outln!();
    let verdict = if report.ratio_statement_over_row >= report.target_ratio {
        "meets"
    } else {
        "is below"
    };
    outln!(
        "statement/row (medians): {:.2}x, which {verdict} the {:.1}x target",
        report.ratio_statement_over_row,
        report.target_ratio
    );
}
