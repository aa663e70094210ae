//! `dawdle bench latency`: how long a job waits between its defer and its
//! start, when jobs arrive one at a time at a steady rate, as a web
//! application defers them.
//!
//! `bench drain` measures throughput on a backlog; this measures pickup on a
//! queue that is kept empty: a `dawdle worker` process (LISTEN wake-ups, its
//! defaults) runs on the scratch database while a client defers one job per
//! statement at a fixed rate. The latency of each job is read from its own
//! row, `started_at - created_at`, both the server's clock. Optionally a
//! session sits `idle in transaction` with a snapshot for the whole run, the
//! classic way a PostgreSQL queue slows down: vacuum cannot remove the rows
//! the claims leave dead while it stays open.
//!
//! A job's latency starts with its own defer: the deferring transaction's
//! commit has to reach disk before the worker can see the job. The client's
//! round trip of each defer is reported beside it, so the part that is the
//! commit and the part that is the queue can be told apart. With
//! `--consumer sql-floor` the same run also measures the least any queue on
//! this schema can do (see `sql_floor`), so the worker is read as a ratio to
//! a floor measured on the same disk at the same moment.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use dawdle::database::DATABASE_URL_ENV;
use dawdle::diagnostics::Noop;
use dawdle::NewJob;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::drain_worker::{scratch_url_for, through_pgbouncer_to};
use super::scratch::{self, create_database, disconnect, reset, server_version};
use super::sql_floor::SqlFloor;
use super::{
    close_idle_transaction, dedup, open_idle_transaction, percentile, print_report, BenchError,
    IdleTransaction, OrFailedTo,
};
use crate::database::jobs_database;
use crate::worker::SynchronousCommit;
use crate::{output, Failure};

/// The scratch database, on the jobs database's server.
const DATABASE: &str = "dawdle_bench_latency";

/// The queue the jobs go to and the worker takes from.
const QUEUE: &str = "bench";

/// The targets the numbers are read against.
const TARGET_P99_MS: f64 = 10.0;
const TARGET_IDLE_P50_MS: f64 = 10.0;
const TARGET_IDLE_P99_MS: f64 = 25.0;

/// The tail of the run reported on its own: where an open transaction has
/// done the most harm.
const TAIL_SECONDS: f64 = 10.0;

#[derive(Debug, Args)]
pub(crate) struct LatencyBenchArgs {
    /// Jobs deferred per second, one per statement: comma-separated or
    /// repeated, each measured in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [200, 1000],
        value_name = "JOBS_PER_SECOND,...",
        value_parser = clap::value_parser!(u32).range(1..=20_000)
    )]
    rate: Vec<u32>,
    /// How long each case defers jobs.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(5..=3600))]
    seconds: u32,
    /// Whether a session stays `idle in transaction` through the run:
    /// `without`, `with`, or both (each measured in turn).
    #[arg(long, value_delimiter = ',', default_values = ["without", "with"], value_name = "without|with,...")]
    idle_transaction: Vec<IdleTransaction>,
    /// The worker's --synchronous-commit: `on` (its default), `off`, or
    /// both (each measured in turn). The deferring client always waits for
    /// its commits.
    #[arg(long, value_delimiter = ',', default_values = ["on"], value_name = "on|off,...")]
    synchronous_commit: Vec<SynchronousCommit>,
    /// What picks the jobs up: `dawdle` (a `dawdle worker` process),
    /// `sql-floor` (a LISTEN loop claiming with one UPDATE … SKIP LOCKED and
    /// finishing with another, the least a queue can do),
    /// `dawdle-pgbouncer` (the worker through --pgbouncer, polling),
    /// `dawdle-pgbouncer-listen` (the same, LISTENing on a direct
    /// connection), or several, each measured in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["dawdle"],
        value_name = "dawdle|sql-floor|dawdle-pgbouncer|dawdle-pgbouncer-listen,..."
    )]
    consumer: Vec<Consumer>,
    /// PgBouncer in transaction pooling, for the `dawdle-pgbouncer`
    /// consumers: its database name is replaced by the scratch database's,
    /// which PgBouncer must route (e.g. with a `* = host=...` fallback
    /// entry). The deferring client connects directly.
    #[arg(long, value_name = "URL")]
    pgbouncer: Option<String>,
    /// The worker's --concurrency.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// What picks the jobs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Consumer {
    /// A `dawdle worker` process.
    Dawdle,
    /// The SQL floor: one LISTEN loop, one claim statement, one finish.
    SqlFloor,
    /// A `dawdle worker --pgbouncer` process through PgBouncer, polling.
    DawdlePgbouncer,
    /// The same with `--listen-url`: LISTEN on a direct connection.
    DawdlePgbouncerListen,
}

impl Consumer {
    fn word(self) -> &'static str {
        match self {
            Consumer::Dawdle => "dawdle",
            Consumer::SqlFloor => "sql-floor",
            Consumer::DawdlePgbouncer => "dawdle-pgbouncer",
            Consumer::DawdlePgbouncerListen => "dawdle-pgbouncer-listen",
        }
    }

    fn through_pgbouncer(self) -> bool {
        matches!(
            self,
            Consumer::DawdlePgbouncer | Consumer::DawdlePgbouncerListen
        )
    }
}

/// How the worker process reaches the scratch database.
#[derive(Debug, Clone, Copy)]
struct Route<'a> {
    /// A direct URL of the scratch database.
    direct: &'a str,
    /// The scratch database through PgBouncer, when measured.
    pgbouncer: Option<&'a str>,
}

/// Pickup latency percentiles, in milliseconds.
#[derive(Debug, Serialize, Clone, Copy)]
struct Percentiles {
    jobs: i64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    consumer: Consumer,
    rate: u32,
    idle_transaction: IdleTransaction,
    /// The worker's --synchronous-commit (the SQL floor's session setting).
    synchronous_commit: SynchronousCommit,
    /// Jobs deferred per second, as achieved.
    deferred_per_second: f64,
    /// The client's round trip of each defer, its commit included: the
    /// part of each job's latency spent before the worker can see it.
    defer_round_trip: Percentiles,
    whole_run: Percentiles,
    /// The jobs deferred in the last 10 s of the run.
    last_10_seconds: Percentiles,
    /// p50 of each 10 s of the run, in order: how latency moved.
    p50_per_10_seconds_ms: Vec<f64>,
    /// The size of the claim's index at the end of the run: it grows while
    /// vacuum is held back.
    claim_index_kib: i64,
}

#[derive(Debug, Serialize)]
struct Targets {
    p99_ms_at_most: f64,
    with_idle_transaction_last_10_seconds_p50_ms_at_most: f64,
    with_idle_transaction_last_10_seconds_p99_ms_at_most: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    postgres_version: String,
    seconds: u32,
    concurrency: u32,
    targets: Targets,
    results: Vec<CaseResult>,
}

/// Runs `dawdle bench latency`.
pub(super) async fn run(
    explicit_url: Option<&str>,
    mut args: LatencyBenchArgs,
) -> Result<ExitCode, Failure> {
    dedup(&mut args.rate);
    dedup(&mut args.idle_transaction);
    dedup(&mut args.synchronous_commit);
    dedup(&mut args.consumer);
    let through_pgbouncer = args.consumer.iter().any(|c| c.through_pgbouncer());
    match (&args.pgbouncer, through_pgbouncer) {
        (None, true) => {
            return Err(Failure::new(
                "bench latency: the dawdle-pgbouncer consumers need --pgbouncer URL (PgBouncer \
                 in transaction pooling, routing any database to this server)",
            ))
        }
        (Some(_), false) => {
            return Err(Failure::new(
                "bench latency: --pgbouncer is for the consumers dawdle-pgbouncer and \
                 dawdle-pgbouncer-listen; add one to --consumer",
            ))
        }
        _ => {}
    }
    if through_pgbouncer && args.synchronous_commit.contains(&SynchronousCommit::Off) {
        return Err(Failure::new(
            "bench latency: --synchronous-commit off cannot be measured through PgBouncer \
             (the worker refuses it with --pgbouncer); measure it with the other consumers",
        ));
    }
    let database = jobs_database(explicit_url).await?;
    let worker_url =
        scratch_url_for(&database, DATABASE).map_err(|error| Failure::from_error(&error))?;
    let bouncer_url = args
        .pgbouncer
        .as_deref()
        .map(|url| through_pgbouncer_to(url, DATABASE))
        .transpose()
        .map_err(|error| Failure::from_error(&error))?;
    let route = Route {
        direct: &worker_url,
        pgbouncer: bouncer_url.as_deref(),
    };
    let server = database.connect_options();
    let report = scratch::with_databases(server, &[DATABASE], async |maintenance| {
        measure(server, maintenance, route, &args).await
    })
    .await
    .map_err(|error| Failure::from_error(&error))?;
    Ok(print_report(&report, args.json, print_for_people))
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    route: Route<'_>,
    args: &LatencyBenchArgs,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;
    let mut conn = create_database(server, maintenance, DATABASE).await?;
    let scratch = server.clone().database(DATABASE);
    // Enough connections that a slow defer does not hold up the next one:
    // the client keeps its rate whatever one statement costs.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(scratch.clone())
        .await
        .or_failed_to(|| format!("connect the deferring client to {DATABASE}"))?;
    let job = NewJob::for_task(&Noop::default())
        .map_err(|error| BenchError::Check(format!("build the benchmark's job: {error}")))?
        .queue(QUEUE);

    let mut results = Vec::new();
    for rate in &args.rate {
        for idle in &args.idle_transaction {
            for commit in &args.synchronous_commit {
                for consumer in &args.consumer {
                    let consumer_text = match consumer {
                        Consumer::Dawdle => format!(
                            "one `dawdle worker --concurrency {} --synchronous-commit {}` process",
                            args.concurrency,
                            commit.word()
                        ),
                        Consumer::SqlFloor => {
                            format!("the SQL floor (synchronous commit {})", commit.word())
                        }
                        Consumer::DawdlePgbouncer => format!(
                            "one `dawdle worker --concurrency {} --pgbouncer` process (polling)",
                            args.concurrency
                        ),
                        Consumer::DawdlePgbouncerListen => format!(
                            "one `dawdle worker --concurrency {} --pgbouncer --listen-url` process",
                            args.concurrency
                        ),
                    };
                    eprintln!(
                        "dawdle: {rate} jobs/s for {} s, {} an idle transaction, {consumer_text}",
                        args.seconds,
                        idle.word(),
                    );
                    let case = Case {
                        consumer: *consumer,
                        rate: *rate,
                        idle: *idle,
                        commit: *commit,
                    };
                    let result =
                        measure_case(&mut conn, &scratch, &pool, route, &job, args, case).await?;
                    eprintln!(
                        "dawdle: {} jobs, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; last \
                     {TAIL_SECONDS} s: p50 {:.1} ms, p99 {:.1} ms; defer round trip p50 {:.1} \
                     ms, p99 {:.1} ms",
                        result.whole_run.jobs,
                        result.whole_run.p50_ms,
                        result.whole_run.p95_ms,
                        result.whole_run.p99_ms,
                        result.last_10_seconds.p50_ms,
                        result.last_10_seconds.p99_ms,
                        result.defer_round_trip.p50_ms,
                        result.defer_round_trip.p99_ms
                    );
                    results.push(result);
                }
            }
        }
    }
    pool.close().await;
    disconnect(conn, DATABASE).await?;
    Ok(Report {
        postgres_version,
        seconds: args.seconds,
        concurrency: args.concurrency,
        targets: Targets {
            p99_ms_at_most: TARGET_P99_MS,
            with_idle_transaction_last_10_seconds_p50_ms_at_most: TARGET_IDLE_P50_MS,
            with_idle_transaction_last_10_seconds_p99_ms_at_most: TARGET_IDLE_P99_MS,
        },
        results,
    })
}

/// What one case of the run varies.
#[derive(Debug, Clone, Copy)]
struct Case {
    consumer: Consumer,
    rate: u32,
    idle: IdleTransaction,
    commit: SynchronousCommit,
}

async fn measure_case(
    conn: &mut PgConnection,
    scratch: &PgConnectOptions,
    pool: &PgPool,
    route: Route<'_>,
    job: &NewJob,
    args: &LatencyBenchArgs,
    case: Case,
) -> Result<CaseResult, BenchError> {
    let Case {
        consumer,
        rate,
        idle,
        commit,
    } = case;
    reset(conn, DATABASE).await?;
    for statement in [
        "DELETE FROM procrastinate_workers",
        "VACUUM ANALYZE procrastinate_jobs",
    ] {
        sqlx::raw_sql(statement)
            .execute(&mut *conn)
            .await
            .or_failed_to(|| format!("settle {DATABASE} before the run"))?;
    }

    let mut worker = match consumer {
        Consumer::SqlFloor => {
            Running::Floor(SqlFloor::start(scratch.clone(), QUEUE, commit).await?)
        }
        Consumer::Dawdle | Consumer::DawdlePgbouncer | Consumer::DawdlePgbouncerListen => {
            let mut worker =
                Running::Worker(start_worker(route, consumer, args.concurrency, commit)?);
            wait_until_ready(conn, &mut worker, consumer != Consumer::DawdlePgbouncer).await?;
            worker
        }
    };

    // The open transaction: a snapshot taken and held, so vacuum may not
    // remove anything that dies after it.
    let mut idle_session = match idle {
        IdleTransaction::Without => None,
        IdleTransaction::With => Some(open_idle_transaction(scratch).await?),
    };

    let deferred = Arc::new(AtomicU64::new(0));
    let round_trips = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let run_for = Duration::from_secs(u64::from(args.seconds));
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    let mut in_flight = tokio::task::JoinSet::new();
    while started.elapsed() < run_for {
        ticks.tick().await;
        let (pool, job) = (pool.clone(), job.clone());
        let (counted, round_trips, failed) =
            (deferred.clone(), round_trips.clone(), failures.clone());
        in_flight.spawn(async move {
            // Timed from the statement, not from waiting for a connection:
            // the round trip of the defer itself, its commit included.
            let deferred = match pool.acquire().await {
                Ok(mut connection) => {
                    let sent = Instant::now();
                    dawdle::defer(&mut *connection, &job)
                        .await
                        .map(|_| sent.elapsed())
                        .map_err(|error| error.to_string())
                }
                Err(error) => Err(format!("no connection: {error}")),
            };
            match deferred {
                Ok(round_trip) => {
                    let ms = round_trip.as_secs_f64() * 1000.0;
                    counted.fetch_add(1, Ordering::Relaxed);
                    round_trips
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(ms);
                }
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("dawdle: a defer failed: {error}");
                    }
                }
            }
        });
        while in_flight.try_join_next().is_some() {}
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            let recent = percentiles(conn, Some(10.0))
                .await?
                .map_or("no job started yet".to_string(), |p| {
                    format!("p50 {:.1} ms, p99 {:.1} ms", p.p50_ms, p.p99_ms)
                });
            eprintln!(
                "dawdle:   {:>4.0} s: {} deferred; jobs deferred in the last 10 s: {recent}",
                started.elapsed().as_secs_f64(),
                deferred.load(Ordering::Relaxed)
            );
        }
    }
    while in_flight.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let deferred = deferred.load(Ordering::Relaxed);
    let failures = failures.load(Ordering::Relaxed);
    if failures > 0 {
        return Err(BenchError::Check(format!(
            "{failures} of the defers failed (the first is above)"
        )));
    }

    wait_until_done(conn, &mut worker, deferred as i64).await?;
    let whole_run = percentiles(conn, None).await?;
    let last = percentiles(conn, Some(TAIL_SECONDS)).await?;
    let p50_per_10_seconds_ms: Vec<Option<f64>> = sqlx::query_scalar(
        "WITH latency AS (
             SELECT floor(extract(epoch FROM created_at - first.at) / 10) AS slot,
                    extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms
             FROM procrastinate_jobs,
                  (SELECT min(created_at) AS at FROM procrastinate_jobs) AS first
             WHERE started_at IS NOT NULL
         )
         SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)
         FROM latency GROUP BY slot ORDER BY slot",
    )
    .fetch_all(&mut *conn)
    .await
    .or_failed_to(|| "read the latency of each 10 s".to_string())?;
    let claim_index_kib: i64 = sqlx::query_scalar(
        "SELECT coalesce(pg_relation_size(to_regclass('dawdle_jobs_claim_order_idx')) / 1024, 0)",
    )
    .fetch_one(&mut *conn)
    .await
    .or_failed_to(|| "read the claim index's size".to_string())?;

    if let Some(session) = idle_session.take() {
        close_idle_transaction(session).await?;
    }
    worker.stop().await;

    let missing = || BenchError::Check("no job has a start time".to_string());
    let round_trips = std::mem::take(
        &mut *round_trips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(CaseResult {
        consumer,
        rate,
        idle_transaction: idle,
        synchronous_commit: commit,
        deferred_per_second: deferred as f64 / elapsed,
        defer_round_trip: client_percentiles(round_trips).ok_or_else(missing)?,
        whole_run: whole_run.ok_or_else(missing)?,
        last_10_seconds: last.ok_or_else(missing)?,
        p50_per_10_seconds_ms: p50_per_10_seconds_ms.into_iter().flatten().collect(),
        claim_index_kib,
    })
}

/// Percentiles of times measured by the client, interpolated as the
/// server's `percentile_cont` does; `None` when there are none.
fn client_percentiles(mut ms: Vec<f64>) -> Option<Percentiles> {
    ms.sort_by(f64::total_cmp);
    Some(Percentiles {
        jobs: ms.len() as i64,
        p50_ms: percentile(&ms, 0.5)?,
        p95_ms: percentile(&ms, 0.95)?,
        p99_ms: percentile(&ms, 0.99)?,
        max_ms: *ms.last()?,
    })
}

/// Pickup latency of the jobs that started, all of them or those deferred
/// in the last `tail_seconds` of the run.
async fn percentiles(
    conn: &mut PgConnection,
    tail_seconds: Option<f64>,
) -> Result<Option<Percentiles>, BenchError> {
    let row: (i64, Option<Vec<f64>>, Option<f64>) = sqlx::query_as(
        "WITH latency AS (
             SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms
             FROM procrastinate_jobs
             WHERE started_at IS NOT NULL
               AND ($1::float8 IS NULL
                    OR created_at >= (SELECT max(created_at) FROM procrastinate_jobs)
                                     - make_interval(secs => $1))
         )
         SELECT count(*),
                percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms),
                max(ms)
         FROM latency",
    )
    .bind(tail_seconds)
    .fetch_one(&mut *conn)
    .await
    .or_failed_to(|| "read the jobs' pickup latency".to_string())?;
    Ok(match row {
        (jobs, Some(p), Some(max_ms)) if jobs > 0 && p.len() == 3 => Some(Percentiles {
            jobs,
            p50_ms: p[0],
            p95_ms: p[1],
            p99_ms: p[2],
            max_ms,
        }),
        _ => None,
    })
}

/// Starts the `dawdle worker` process of `consumer` (one of the dawdle ones).
fn start_worker(
    route: Route<'_>,
    consumer: Consumer,
    concurrency: u32,
    commit: SynchronousCommit,
) -> Result<tokio::process::Child, BenchError> {
    let executable = std::env::current_exe().map_err(|source| BenchError::Io {
        action: "find the dawdle executable to run the worker".to_string(),
        source,
    })?;
    let mut command = tokio::process::Command::new(&executable);
    command
        .args(["worker", "--queues", QUEUE])
        .args(["--concurrency", &concurrency.to_string()]);
    let url = if consumer.through_pgbouncer() {
        command.arg("--pgbouncer");
        if consumer == Consumer::DawdlePgbouncerListen {
            command.args(["--listen-url", route.direct]);
        }
        route.pgbouncer.ok_or_else(|| {
            BenchError::Check(format!("{} needs --pgbouncer URL", consumer.word()))
        })?
    } else {
        command.args(["--synchronous-commit", commit.word()]);
        route.direct
    };
    command
        .env(DATABASE_URL_ENV, url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BenchError::Io {
            action: format!("start the worker {}", executable.display()),
            source,
        })
}

/// What picks the jobs up in one case.
enum Running {
    Worker(tokio::process::Child),
    Floor(SqlFloor),
}

impl Running {
    /// Why it stopped, if it has: it should not before it is stopped.
    fn exited(&mut self) -> Option<String> {
        match self {
            Running::Worker(child) => match child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "the worker exited with {status} (its messages are above)"
                )),
                _ => None,
            },
            Running::Floor(floor) => floor
                .exit_reason()
                .map(|why| format!("the SQL floor stopped: {why}")),
        }
    }

    async fn stop(self) {
        match self {
            Running::Worker(child) => stop_worker(child).await,
            Running::Floor(floor) => floor.stop().await,
        }
    }
}

/// Polls until `done` holds, failing if the consumer stops or `limit` passes.
async fn poll_until(
    conn: &mut PgConnection,
    worker: &mut Running,
    limit: Duration,
    what: &str,
    done: &str,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        let reached: bool = sqlx::query_scalar(done)
            .fetch_one(&mut *conn)
            .await
            .or_failed_to(|| format!("check whether {what}"))?;
        if reached {
            return Ok(());
        }
        if let Some(why) = worker.exited() {
            return Err(BenchError::Check(format!("{why} before {what}")));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "{what} had not happened after {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until the worker is registered and, when it `listens`, listens for new
/// jobs: jobs deferred before would wait for its poll instead of its
/// wake-up.
async fn wait_until_ready(
    conn: &mut PgConnection,
    worker: &mut Running,
    listens: bool,
) -> Result<(), BenchError> {
    let (what, ready) = if listens {
        (
            "the worker listens for new jobs",
            "SELECT EXISTS (SELECT FROM procrastinate_workers)
                AND EXISTS (SELECT FROM pg_stat_activity
                            WHERE datname = current_database()
                              AND pid <> pg_backend_pid()
                              AND query ILIKE 'LISTEN%')",
        )
    } else {
        (
            "the worker registered",
            "SELECT EXISTS (SELECT FROM procrastinate_workers)",
        )
    };
    poll_until(conn, worker, Duration::from_secs(60), what, ready).await
}

async fn wait_until_done(
    conn: &mut PgConnection,
    worker: &mut Running,
    deferred: i64,
) -> Result<(), BenchError> {
    poll_until(
        conn,
        worker,
        Duration::from_secs(120),
        "every deferred job succeeded",
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') >= {deferred}
             FROM procrastinate_jobs"
        ),
    )
    .await
}

async fn stop_worker(mut worker: tokio::process::Child) {
    // Every job has succeeded and the scratch database is dropped after
    // the run: nothing is lost by not waiting for a graceful stop.
    let _ = worker.start_kill();
    let _ = worker.wait().await;
}

fn print_for_people(report: &Report) {
    outln!("dawdle bench latency: one job per defer at a fixed rate, one `dawdle worker` process");
    outln!("  server:  {}", report.postgres_version);
    outln!(
        "  work:    {} s per case, worker concurrency {}; latency = started_at - created_at \
         of each job (server clock), the defer's own commit included",
        report.seconds,
        report.concurrency
    );
    outln!("  defer:   the client's round trip of each defer, its commit to disk included");
    if report
        .results
        .iter()
        .any(|result| result.consumer.through_pgbouncer())
    {
        outln!(
            "  through: dawdle-pgbouncer* workers reach the database through PgBouncer \
             (--pgbouncer); -listen LISTENs on a direct connection, the other polls every 2 s"
        );
    }
    outln!();
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|result| {
            let ms = |value: f64| format!("{value:.1}");
            vec![
                result.consumer.word().to_string(),
                result.rate.to_string(),
                result.idle_transaction.word().to_string(),
                result.synchronous_commit.word().to_string(),
                format!("{:.0}", result.deferred_per_second),
                format!(
                    "{} / {}",
                    ms(result.defer_round_trip.p50_ms),
                    ms(result.defer_round_trip.p99_ms)
                ),
                ms(result.whole_run.p50_ms),
                ms(result.whole_run.p95_ms),
                ms(result.whole_run.p99_ms),
                ms(result.last_10_seconds.p50_ms),
                ms(result.last_10_seconds.p99_ms),
                ms(result.whole_run.max_ms),
                result.claim_index_kib.to_string(),
            ]
        })
        .collect();
    output::print_table(
        &[
            "CONSUMER",
            "RATE",
            "IDLE TX",
            "WORKER SYNC COMMIT",
            "DEFERRED/S",
            "DEFER P50 / P99 MS",
            "P50 MS",
            "P95 MS",
            "P99 MS",
            "LAST 10S P50",
            "LAST 10S P99",
            "MAX MS",
            "CLAIM INDEX KiB",
        ],
        &rows,
    );
    outln!();
    for result in &report.results {
        let trend: Vec<String> = result
            .p50_per_10_seconds_ms
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect();
        outln!(
            "p50 per 10 s, {} at {} jobs/s {} an idle transaction, synchronous commit {}: {} ms",
            result.consumer.word(),
            result.rate,
            result.idle_transaction.word(),
            result.synchronous_commit.word(),
            trend.join(", ")
        );
    }
    outln!(
        "targets: p99 <= {:.0} ms at 1000 jobs/s; with an idle transaction open, the last 10 s \
         p50 <= {:.0} ms and p99 <= {:.0} ms",
        report.targets.p99_ms_at_most,
        report
            .targets
            .with_idle_transaction_last_10_seconds_p50_ms_at_most,
        report
            .targets
            .with_idle_transaction_last_10_seconds_p99_ms_at_most
    );
}
