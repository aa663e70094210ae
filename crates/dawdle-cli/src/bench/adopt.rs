//! `dawdle bench adopt`: `dawdle schema adopt` on a large Procrastinate
//! database while Procrastinate-style workers and a deferring client keep
//! using it: how long it takes, the longest lock it held, and what the
//! clients saw (throughput before, during and after; their slowest call;
//! any error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use dawdle::schema::adopt::{self, AdoptOptions};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::scratch::{self, server_version};
use super::{median, print_report, BenchError, OrFailedTo};
use crate::database::jobs_database;
use crate::Failure;

const DATABASE: &str = "dawdle_bench_adopt";
/// The queue the clients work on (the history lives in others).
const LIVE: &str = "live";
/// Jobs inserted (then moved along) per statement while filling.
const FILL_BATCH: i64 = 50_000;

#[derive(Debug, Args)]
pub(crate) struct AdoptBenchArgs {
    /// Procrastinate's schema, as the release you run prints it:
    /// `--procrastinate-schema <(procrastinate schema --read)`.
    #[arg(long, value_name = "FILE")]
    procrastinate_schema: PathBuf,
    /// Finished jobs in the history (90 % succeeded, 6 % failed, 4 % cancelled),
    /// each with its events as Procrastinate's triggers record them.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: i64,
    /// Procrastinate-style workers (fetch_job_v2 then finish_job_v1, one
    /// connection each) running through the adoption.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds the clients run before the adoption and after it.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Jobs per backfill transaction (`dawdle schema adopt --batch-size`).
    #[arg(long, default_value_t = 10_000)]
    batch_size: i64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Phase {
    /// Jobs the workers finished per second: median and lowest whole second.
    median_jobs_per_s: f64,
    lowest_jobs_per_s: f64,
    /// The slowest single call of a worker (fetch + finish) and of the
    /// deferring client.
    slowest_work_call_ms: f64,
    slowest_defer_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    postgres_version: String,
    jobs: i64,
    events: i64,
    fill_s: f64,
    adopt_s: f64,
    /// The longest any adoption step held a lock that blocks writes.
    longest_lock_ms: f64,
    /// Per step: (name, seconds), from the adoption's progress lines.
    steps: Vec<(String, f64)>,
    workers: usize,
    before: Phase,
    during: Phase,
    after: Phase,
    /// Calls of the clients that failed (each one would have stopped a
    /// Python worker).
    client_errors: u64,
    first_client_error: Option<String>,
}

pub(super) async fn run(
    explicit_url: Option<&str>,
    args: AdoptBenchArgs,
) -> Result<ExitCode, Failure> {
    if args.jobs < 1000 || args.workers == 0 || args.batch_size < 1 {
        return Err(Failure {
            code: 2,
            ..Failure::new(
                "failed to run the benchmark: use --jobs 1000 or more, --workers 1 or more and \
                 --batch-size 1 or more",
            )
        });
    }
    let schema = std::fs::read_to_string(&args.procrastinate_schema).map_err(|error| Failure {
        code: 2,
        ..Failure::new(format!(
            "failed to read Procrastinate's schema from {}: {error}; pass what \
             `procrastinate schema --read` prints",
            args.procrastinate_schema.display()
        ))
    })?;
    if !schema.contains("CREATE TABLE procrastinate_jobs") {
        return Err(Failure {
            code: 2,
            ..Failure::new(format!(
                "failed to run the benchmark: {} is not Procrastinate's schema (no CREATE TABLE \
                 procrastinate_jobs); pass what `procrastinate schema --read` prints",
                args.procrastinate_schema.display()
            ))
        });
    }
    let database = jobs_database(explicit_url).await?;
    let server = database.connect_options();
    let report = scratch::with_databases(server, &[DATABASE], async |maintenance| {
        measure(server, maintenance, &args, &schema).await
    })
    .await
    .map_err(|error| Failure::from_error(&error))?;
    Ok(print_report(&report, args.json, print_for_people))
}

fn say(line: impl AsRef<str>) {
    eprintln!("dawdle: {}", line.as_ref());
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    args: &AdoptBenchArgs,
    schema: &str,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;
    let mut conn = scratch::create_empty_database(server, maintenance, DATABASE).await?;
    let options = server.clone().database(DATABASE);
    sqlx::raw_sql(schema)
        .execute(&mut conn)
        .await
        .or_failed_to(|| "apply Procrastinate's schema".to_string())?;

    let began = Instant::now();
    fill(&mut conn, args.jobs).await?;
    let backlog = (args.workers as i64 * 1_500 * (2 * args.settle as i64 + 90)).min(args.jobs);
    defer_live(&mut conn, backlog).await?;
    for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::raw_sql(statement)
            .execute(&mut conn)
            .await
            .or_failed_to(|| format!("{statement} the filled database"))?;
    }
    let fill_s = began.elapsed().as_secs_f64();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_events")
        .fetch_one(&mut conn)
        .await
        .or_failed_to(|| "count the events".to_string())?;
    let before_counts = history_counts(&mut conn).await?;
    say(format!(
        "filled {} jobs ({events} events) and {backlog} waiting jobs in {fill_s:.0} s",
        args.jobs
    ));

    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        clients.spawn(worker(options.clone(), log.clone(), stop.clone()));
    }
    clients.spawn(deferrer(options.clone(), log.clone(), stop.clone()));

    say(format!(
        "clients running for {} s before the adoption",
        args.settle
    ));
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let adoption_began = Instant::now();
    let mut steps: Vec<(String, f64)> = Vec::new();
    let mut last_step = Instant::now();
    let adopt_options = AdoptOptions {
        batch_size: args.batch_size,
        ..AdoptOptions::default()
    };
    let adopted = {
        let mut progress = |line: String| {
            say(format!("adopt: {line}"));
            steps.push((line, last_step.elapsed().as_secs_f64()));
            last_step = Instant::now();
        };
        adopt::adopt(&mut conn, &adopt_options, &mut progress).await
    };
    let adoption_ended = Instant::now();
    let adopted = adopted.map_err(|error| BenchError::Check(format!("adopt: {error}")))?;
    say(format!(
        "clients running for {} s after the adoption",
        args.settle
    ));
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = clients.join_next().await {
        joined.map_err(|error| BenchError::Check(format!("a client panicked: {error}")))?;
    }

    let after_counts = history_counts(&mut conn).await?;
    if after_counts != before_counts {
        return Err(BenchError::Check(format!(
            "the history changed: before {before_counts:?}, after {after_counts:?}"
        )));
    }
    conn.close()
        .await
        .or_failed_to(|| format!("disconnect from {DATABASE}"))?;

    let log = log.inner.lock().expect("the clients' log");
    let phase = |from: Instant, to: Instant| log.phase(from, to);
    let start = log.started.unwrap_or(adoption_began);
    Ok(Report {
        postgres_version,
        jobs: args.jobs,
        events,
        fill_s,
        adopt_s: (adoption_ended - adoption_began).as_secs_f64(),
        longest_lock_ms: adopted.longest_lock.as_secs_f64() * 1000.0,
        steps,
        workers: args.workers,
        before: phase(start, adoption_began),
        during: phase(adoption_began, adoption_ended),
        after: phase(adoption_ended, end),
        client_errors: log.errors,
        first_client_error: log.first_error.clone(),
    })
}

/// Jobs per (queue, status) outside the live queue, and events of those
/// jobs per type: what the adoption must keep.
async fn history_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, BenchError> {
    sqlx::query_as(
        "SELECT 'jobs ' || queue_name || ' ' || status, count(*) FROM procrastinate_jobs
         WHERE queue_name <> $1 GROUP BY 1
         UNION ALL
         SELECT 'events ' || e.type, count(*) FROM procrastinate_events AS e
         JOIN procrastinate_jobs AS j ON j.id = e.job_id
         WHERE j.queue_name <> $1 GROUP BY 1
         ORDER BY 1",
    )
    .bind(LIVE)
    .fetch_all(&mut *conn)
    .await
    .or_failed_to(|| "count the history".to_string())
}

/// The history, written the way Procrastinate's workers leave it: deferred,
/// then started and finished (or cancelled), each step an UPDATE whose row
/// triggers record the events.
async fn fill(conn: &mut PgConnection, jobs: i64) -> Result<(), BenchError> {
    let began = Instant::now();
    let mut done = 0;
    while done < jobs {
        let count = FILL_BATCH.min(jobs - done);
        let mut tx = conn.begin().await.or_failed_to(|| "fill".to_string())?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT unnest(procrastinate_defer_jobs_v1(array_agg(
                 ROW('history-' || (i % 4), 'bench.task_' || (i % 10), 0, NULL, NULL,
                     jsonb_build_object('n', i), NULL)::procrastinate_job_to_defer_v1)))
             FROM generate_series(1, $1) AS i",
        )
        .bind(count)
        .fetch_all(&mut *tx)
        .await
        .or_failed_to(|| "defer the history's jobs".to_string())?;
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        sqlx::raw_sql(&format!(
            "UPDATE procrastinate_jobs SET status = 'cancelled'
             WHERE id BETWEEN {first} AND {last} AND id % 25 = 0;
             UPDATE procrastinate_jobs SET status = 'doing'
             WHERE id BETWEEN {first} AND {last} AND id % 25 <> 0;
             UPDATE procrastinate_jobs
             SET status = CASE WHEN id % 17 = 0 THEN 'failed' ELSE 'succeeded' END
                          ::procrastinate_job_status,
                 attempts = 1
             WHERE id BETWEEN {first} AND {last} AND status = 'doing';"
        ))
        .execute(&mut *tx)
        .await
        .or_failed_to(|| "move the history's jobs along".to_string())?;
        tx.commit().await.or_failed_to(|| "fill".to_string())?;
        done += count;
        say(format!(
            "filling: {done} of {jobs} jobs, {:.0} jobs/s",
            done as f64 / began.elapsed().as_secs_f64().max(0.001)
        ));
    }
    Ok(())
}

async fn defer_live(conn: &mut PgConnection, jobs: i64) -> Result<(), BenchError> {
    let mut done = 0;
    while done < jobs {
        let count = FILL_BATCH.min(jobs - done);
        sqlx::query(
            "SELECT procrastinate_defer_jobs_v1(array_agg(
                 ROW($2, 'bench.live', 0, NULL, NULL, '{}'::jsonb, NULL)
                     ::procrastinate_job_to_defer_v1))
             FROM generate_series(1, $1)",
        )
        .bind(count)
        .bind(LIVE)
        .execute(&mut *conn)
        .await
        .or_failed_to(|| "defer the waiting jobs".to_string())?;
        done += count;
    }
    Ok(())
}

#[derive(Default)]
struct Log {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    started: Option<Instant>,
    /// When each job was finished, and how long its fetch + finish took.
    work: Vec<(Instant, Duration)>,
    defers: Vec<(Instant, Duration)>,
    errors: u64,
    first_error: Option<String>,
}

impl Log {
    fn record(&self, work: bool, at: Instant, took: Duration) {
        let mut inner = self.inner.lock().expect("the clients' log");
        inner.started.get_or_insert(at);
        if work {
            inner.work.push((at, took));
        } else {
            inner.defers.push((at, took));
        }
    }

    fn error(&self, error: &sqlx::Error) {
        let mut inner = self.inner.lock().expect("the clients' log");
        inner.errors += 1;
        inner
            .first_error
            .get_or_insert_with(|| dawdle::text::excerpt(&error.to_string(), 300));
    }
}

impl LogInner {
    fn phase(&self, from: Instant, to: Instant) -> Phase {
        // Whole seconds only: a last partial second would read low.
        let seconds = (to - from).as_secs().max(1) as usize;
        let mut per_second = vec![0.0; seconds];
        let mut slowest_work = Duration::ZERO;
        for (at, took) in self.work.iter().filter(|(at, _)| *at >= from && *at < to) {
            let second = (*at - from).as_secs() as usize;
            if second < seconds {
                per_second[second] += 1.0;
            }
            slowest_work = slowest_work.max(*took);
        }
        let slowest_defer = self
            .defers
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default();
        Phase {
            median_jobs_per_s: median(&per_second).unwrap_or(0.0),
            lowest_jobs_per_s: per_second.iter().copied().fold(f64::INFINITY, f64::min),
            slowest_work_call_ms: slowest_work.as_secs_f64() * 1000.0,
            slowest_defer_ms: slowest_defer.as_secs_f64() * 1000.0,
        }
    }
}

/// What a Python worker does, minus the task: register, then fetch and
/// finish one job at a time; a short pause when nothing was fetched.
async fn worker(options: PgConnectOptions, log: Arc<Log>, stop: Arc<AtomicBool>) {
    let Ok(mut conn) = PgConnection::connect_with(&options).await else {
        return;
    };
    let worker_id: i64 =
        match sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
            .fetch_one(&mut conn)
            .await
        {
            Ok(id) => id,
            Err(error) => return log.error(&error),
        };
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let fetched: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT id FROM procrastinate_fetch_job_v2(ARRAY[$1]::varchar[], $2)",
        )
        .bind(LIVE)
        .bind(worker_id)
        .fetch_one(&mut conn)
        .await;
        let id = match fetched {
            Ok(Some(id)) => id,
            Ok(None) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(error) => {
                log.error(&error);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match sqlx::query("SELECT procrastinate_finish_job_v1($1, 'succeeded', false)")
            .bind(id)
            .execute(&mut conn)
            .await
        {
            Ok(_) => log.record(true, Instant::now(), began.elapsed()),
            Err(error) => log.error(&error),
        }
    }
    let _ = sqlx::query("SELECT procrastinate_unregister_worker_v1($1)")
        .bind(worker_id)
        .execute(&mut conn)
        .await;
}

/// The web application: one job deferred every 10 ms.
async fn deferrer(options: PgConnectOptions, log: Arc<Log>, stop: Arc<AtomicBool>) {
    let Ok(mut conn) = PgConnection::connect_with(&options).await else {
        return;
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let began = Instant::now();
        match sqlx::query(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[
                 ROW($1, 'bench.live', 0, NULL, NULL, '{}'::jsonb, NULL)
                     ::procrastinate_job_to_defer_v1])",
        )
        .bind(LIVE)
        .execute(&mut conn)
        .await
        {
            Ok(_) => log.record(false, Instant::now(), began.elapsed()),
            Err(error) => log.error(&error),
        }
    }
}

fn print_for_people(report: &Report) {
    println!("{}", report.postgres_version);
    println!(
        "adopted {} Procrastinate jobs ({} events) in {:.1} s; the longest write-blocking lock \
         was held {:.0} ms (filling took {:.0} s)",
        report.jobs, report.events, report.adopt_s, report.longest_lock_ms, report.fill_s
    );
    println!("steps (seconds since the previous line):");
    for (line, seconds) in &report.steps {
        println!("  {seconds:>7.2}  {line}");
    }
    println!(
        "{} Procrastinate-style workers (fetch_job_v2 + finish_job_v1) and a client deferring \
         every 10 ms:",
        report.workers
    );
    println!("  phase    median jobs/s  lowest jobs/s  slowest fetch+finish  slowest defer");
    for (name, phase) in [
        ("before", &report.before),
        ("during", &report.during),
        ("after", &report.after),
    ] {
        println!(
            "  {name:<7}  {:>13.0}  {:>13.0}  {:>17.1} ms  {:>10.1} ms",
            phase.median_jobs_per_s,
            phase.lowest_jobs_per_s,
            phase.slowest_work_call_ms,
            phase.slowest_defer_ms
        );
    }
    match &report.first_client_error {
        None => println!("client errors: none"),
        Some(first) => println!("client errors: {} (first: {first})", report.client_errors),
    }
}
