//! `dawdle bench drain`: how fast jobs go in with `defer_batch` and come out
//! through a real worker process.
//!
//! `bench triggers` isolates the schema's hot statements; this one measures
//! the whole path a deployment runs: the `dawdle worker` binary with its
//! claiming loop, its batched completer, its connection pool and its logging,
//! as a process of its own so that its peak memory is its own too. Each
//! round fills a scratch database with no-op jobs, then times one one-shot
//! worker draining them, twice over: from the outside (spawn to exit, startup
//! and shutdown included) and from the jobs' own timestamps (first claim to
//! last completion, the steady-state rate). Like `bench triggers`, it prints
//! numbers next to their targets and leaves the judgement to the reader: a
//! rate below target is a result, not an error. Jobs that go missing or
//! histories that come out incomplete are errors, since the numbers would
//! then describe less work than they claim.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use dawdle::diagnostics::Noop;
use dawdle::{NewJob, Task};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;

use super::cpu::CpuMark;
use super::drain_worker::{run_workers, scratch_url, through_pgbouncer, WorkerRun};
use super::scratch::{self, create_database, disconnect, reset, server_version};
use super::{
    close_idle_transaction, dedup, median, open_idle_transaction, print_report, BenchError,
    IdleTransaction, OrFailedTo,
};
use crate::database::jobs_database;
use crate::{output, Failure};

/// The scratch database, on the jobs database's server.
pub(super) const DATABASE: &str = "dawdle_bench_drain";

/// The queue the jobs go to and the worker takes from.
pub(super) const QUEUE: &str = "bench";

/// The queue of the finished jobs `--history` leaves in the table.
const HISTORY_QUEUE: &str = "bench_history";

/// The targets the numbers are read against, shown next to them so a reader
/// does not have to remember them.
const TARGET_DRAIN_JOBS_PER_SECOND: f64 = 40_000.0;
const TARGET_ENQUEUE_JOBS_PER_SECOND: f64 = 100_000.0;
const TARGET_PEAK_RSS_MIB: f64 = 50.0;

/// The events a no-op job that succeeds at its first attempt leaves, in order.
const COMPLETE_HISTORY: [&str; 3] = ["deferred", "started", "succeeded"];

#[derive(Debug, Args)]
pub(crate) struct DrainBenchArgs {
    /// Jobs enqueued, then drained, per round and concurrency.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(i32).range(1..))]
    jobs: i32,
    /// Worker concurrencies to measure, comma-separated or repeated.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [10, 100],
        value_name = "N,...",
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    concurrency: Vec<u32>,
    /// Jobs per `defer_batch` statement while enqueueing.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(1..))]
    enqueue_batch: i32,
    /// The worker's --prefetch: most jobs claimed ahead of its free slots
    /// (0 measures claiming for free slots only).
    #[arg(long, default_value_t = dawdle::worker::DEFAULT_PREFETCH as u32, value_name = "JOBS",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    prefetch: u32,
    /// Worker processes draining side by side, each at the concurrency
    /// measured: comma-separated or repeated, each measured in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [1],
        value_name = "N,...",
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    processes: Vec<u32>,
    /// Finished jobs (with their history: deferred, started, succeeded) in
    /// another queue, made by deferring and draining them: a drain on a
    /// table with a past, as a deployment's is. Several levels (`0,1000000`)
    /// are measured in the same run, from the smallest up, the history
    /// growing between them, so their ratio is not at the mercy of the
    /// machine's drift between runs.
    #[arg(long, value_delimiter = ',', default_values_t = [0], value_name = "JOBS,...",
          value_parser = clap::value_parser!(i32).range(0..))]
    history: Vec<i32>,
    /// Whether a session stays `idle in transaction` (a snapshot held)
    /// through each drain: `without`, `with`, or both, each measured in turn.
    #[arg(long, value_delimiter = ',', default_values = ["without"], value_name = "without|with,...")]
    idle_transaction: Vec<IdleTransaction>,
    /// The worker processes reach the database through PgBouncer in
    /// transaction pooling at this URL (its database name is replaced by
    /// the scratch database's, which PgBouncer must route, e.g. with a
    /// `* = host=...` fallback entry) and run with `--pgbouncer`.
    #[arg(long, value_name = "URL")]
    pgbouncer: Option<String>,
    /// The worker serves its Prometheus metrics while it drains
    /// (`--metrics-addr 127.0.0.1:0`): measures what recording them costs.
    #[arg(long)]
    metrics: bool,
    /// Timed rounds; each round measures every concurrency once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    rounds: i32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// One concurrency in one round.
#[derive(Debug, Serialize)]
struct RoundResult {
    round: i32,
    enqueue_seconds: f64,
    enqueue_jobs_per_second: f64,
    /// First claim to last completion, from the jobs' timestamps.
    drain_seconds_db: f64,
    drain_jobs_per_second_db: f64,
    /// Worker process spawn to exit.
    drain_seconds_wall: f64,
    drain_jobs_per_second_wall: f64,
    peak_rss_kb: Option<u64>,
    /// The share of all cores' time the machine was busy during the drain
    /// (spawn to exit), 0 to 1; `None` without `/proc/stat`.
    machine_cpu_busy: Option<f64>,
    /// CPU time the worker processes used, together.
    worker_cpu_seconds: Option<f64>,
    /// Claim statements that returned jobs, and completion statements.
    claim_statements: i64,
    completion_statements: i64,
    mean_jobs_per_claim: f64,
    mean_jobs_per_completion: f64,
}

#[derive(Debug, Serialize)]
struct Verdicts {
    enqueue: bool,
    drain_db: bool,
    drain_wall: bool,
    /// `None` when the worker could not read its peak memory.
    peak_rss: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ConcurrencyResult {
    /// Finished jobs beside the drained ones.
    history_jobs: i32,
    concurrency: u32,
    /// Worker processes draining side by side, each at `concurrency`.
    processes: u32,
    /// Whether a session sat idle in a transaction through the drains.
    idle_transaction: IdleTransaction,
    median_enqueue_jobs_per_second: f64,
    median_drain_jobs_per_second_db: f64,
    median_drain_jobs_per_second_wall: f64,
    max_peak_rss_mib: Option<f64>,
    /// Medians of the rounds: the machine's busy share of all cores, and
    /// the cores the worker processes used (their CPU time over the wall
    /// time of the drain).
    median_machine_cpu_busy: Option<f64>,
    median_worker_cores: Option<f64>,
    meets_targets: Verdicts,
    /// Every round, in the order it ran.
    rounds: Vec<RoundResult>,
}

#[derive(Debug, Serialize)]
struct Targets {
    drain_jobs_per_second_at_least: f64,
    enqueue_jobs_per_second_at_least: f64,
    peak_rss_mib_below: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    postgres_version: String,
    jobs: i32,
    enqueue_batch: i32,
    rounds: i32,
    prefetch: u32,
    metrics: bool,
    /// Whether the workers went through PgBouncer.
    pgbouncer: bool,
    /// The levels of finished jobs in another queue, with their events,
    /// under the drains, in the order measured.
    history_jobs: Vec<i32>,
    /// Whether each drain started right after a checkpoint (it needs a
    /// superuser or the pg_checkpoint role), as a settled database would.
    checkpoint: bool,
    targets: Targets,
    results: Vec<ConcurrencyResult>,
}

/// Runs `dawdle bench drain`.
pub(super) async fn run(
    explicit_url: Option<&str>,
    mut args: DrainBenchArgs,
) -> Result<ExitCode, Failure> {
    // `--concurrency 10,10` would measure the same thing twice and then
    // report it once.
    dedup(&mut args.concurrency);
    dedup(&mut args.processes);
    dedup(&mut args.idle_transaction);
    // History only grows: the levels are made and measured from the least.
    args.history.sort_unstable();
    dedup(&mut args.history);
    let database = jobs_database(explicit_url).await?;
    let worker_url = match &args.pgbouncer {
        Some(url) => through_pgbouncer(url),
        None => scratch_url(&database),
    }
    .map_err(|error| Failure::from_error(&error))?;
    let server = database.connect_options();
    let report = scratch::with_databases(server, &[DATABASE], async |maintenance| {
        measure(server, maintenance, &worker_url, &args).await
    })
    .await
    .map_err(|error| Failure::from_error(&error))?;
    Ok(print_report(&report, args.json, print_for_people))
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    worker_url: &str,
    args: &DrainBenchArgs,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;
    let mut conn = create_database(server, maintenance, DATABASE).await?;

    // Every job is the same, so one batch is built once and deferred as
    // often as needed: the enqueue rate is the cost of `defer_batch`, not of
    // building job values in this process.
    let job = NewJob::for_task(&Noop::default())
        .map_err(|error| BenchError::Check(format!("build the benchmark's job: {error}")))?
        .queue(QUEUE);
    let batch = vec![job.clone(); args.enqueue_batch.min(args.jobs) as usize];

    let checkpoint = sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await.is_ok();
    if !checkpoint {
        eprintln!(
            "dawdle: CHECKPOINT refused (it needs a superuser or the pg_checkpoint role); \
             the drains start from whatever the server last wrote"
        );
    }

    let list = |values: &[u32]| {
        values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "dawdle: {} round(s) of {} {} jobs per concurrency ({}) and process count ({}), \
         enqueued {} per statement, drained by `dawdle worker --one-shot --prefetch {}` \
         processes",
        args.rounds,
        args.jobs,
        Noop::NAME,
        list(&args.concurrency),
        list(&args.processes),
        batch.len(),
        args.prefetch
    );
    let mut cases = Vec::new();
    for idle in &args.idle_transaction {
        for processes in &args.processes {
            for concurrency in &args.concurrency {
                cases.push((*concurrency, *processes, *idle));
            }
        }
    }
    let mut results: BTreeMap<CaseKey, Vec<RoundResult>> = BTreeMap::new();
    let mut made = 0;
    for &history in &args.history {
        if history > made {
            make_history(&mut conn, worker_url, args, job.clone(), history - made).await?;
            made = history;
        }
        measure_rounds(
            &mut conn,
            server,
            worker_url,
            args,
            &batch,
            &cases,
            history,
            checkpoint,
            &mut results,
        )
        .await?;
    }
    disconnect(conn, DATABASE).await?;

    let results = args
        .history
        .iter()
        .flat_map(|history| cases.iter().map(|case| (*history, case.0, case.1, case.2)))
        .map(|case| summarise(case, results.remove(&case).unwrap_or_default()))
        .collect();
    Ok(Report {
        postgres_version,
        jobs: args.jobs,
        enqueue_batch: batch.len() as i32,
        rounds: args.rounds,
        prefetch: args.prefetch,
        metrics: args.metrics,
        pgbouncer: args.pgbouncer.is_some(),
        history_jobs: args.history.clone(),
        checkpoint,
        targets: Targets {
            drain_jobs_per_second_at_least: TARGET_DRAIN_JOBS_PER_SECOND,
            enqueue_jobs_per_second_at_least: TARGET_ENQUEUE_JOBS_PER_SECOND,
            peak_rss_mib_below: TARGET_PEAK_RSS_MIB,
        },
        results,
    })
}

/// Every round of every case on `history` finished jobs.
#[expect(
    clippy::too_many_arguments,
    reason = "the run's connection, settings and results, and the history level"
)]
async fn measure_rounds(
    conn: &mut PgConnection,
    server: &PgConnectOptions,
    worker_url: &str,
    args: &DrainBenchArgs,
    batch: &[NewJob],
    cases: &[(u32, u32, IdleTransaction)],
    history: i32,
    checkpoint: bool,
    results: &mut BTreeMap<CaseKey, Vec<RoundResult>>,
) -> Result<(), BenchError> {
    // One drain first that is not counted: the first at each level pays for
    // what the server has not read yet (cold caches at the start of the run,
    // the table after its history grew), which would tilt the comparison
    // between levels.
    if let Some(&(concurrency, processes, _)) = cases.first() {
        let case = Case {
            history,
            concurrency,
            processes,
            idle: IdleTransaction::Without,
            round: 0,
            checkpoint,
        };
        let warm = timed_round(conn, server, worker_url, args, batch, &case).await?;
        eprintln!(
            "dawdle: warm-up drain (not counted), {history} finished jobs, concurrency \
             {concurrency}, {processes} process(es): {:.0} jobs/s by the jobs' timestamps",
            warm.drain_jobs_per_second_db
        );
    }
    for round in 1..=args.rounds {
        // Alternate the order of the cases, so drift on the machine (a
        // checkpoint, autovacuum, a warming cache) is shared out instead of
        // always landing on the same one.
        let mut order = cases.to_vec();
        if round % 2 == 0 {
            order.reverse();
        }
        for (concurrency, processes, idle) in order {
            let case = Case {
                history,
                concurrency,
                processes,
                idle,
                round,
                checkpoint,
            };
            let result = timed_round(conn, server, worker_url, args, batch, &case).await?;
            eprintln!(
                "dawdle: round {round}/{}, {history} finished jobs, concurrency {concurrency}, \
                 {processes} process(es), {} an idle transaction: enqueue {:.0} jobs/s ({:.2} s); drain {:.0} jobs/s by the jobs' \
                 timestamps ({:.2} s), {:.0} jobs/s spawn to exit ({:.2} s); {} claims of \
                 {:.1} jobs, {} completions of {:.1} jobs on average; peak RSS {}",
                args.rounds,
                idle.word(),
                result.enqueue_jobs_per_second,
                result.enqueue_seconds,
                result.drain_jobs_per_second_db,
                result.drain_seconds_db,
                result.drain_jobs_per_second_wall,
                result.drain_seconds_wall,
                result.claim_statements,
                result.mean_jobs_per_claim,
                result.completion_statements,
                result.mean_jobs_per_completion,
                result
                    .peak_rss_kb
                    .map_or("unknown".to_string(), |kb| format!(
                        "{:.1} MiB",
                        kib_to_mib(kb)
                    ))
            );
            results
                .entry((history, concurrency, processes, idle))
                .or_default()
                .push(result);
        }
    }
    Ok(())
}

/// Adds `more` finished jobs to the history in their own queue, each with
/// the events a real run records, by deferring them and draining them with
/// a worker, then settles the table (VACUUM ANALYZE) as autovacuum would
/// have.
async fn make_history(
    conn: &mut PgConnection,
    worker_url: &str,
    args: &DrainBenchArgs,
    job: NewJob,
    more: i32,
) -> Result<(), BenchError> {
    let started = Instant::now();
    let job = job.queue(HISTORY_QUEUE);
    let batch = vec![job; args.enqueue_batch.min(more) as usize];
    let jobs = more as usize;
    enqueue(conn, &batch, jobs, true, &|| "the history jobs".to_string()).await?;
    eprintln!("dawdle: history: draining {jobs} jobs in queue {HISTORY_QUEUE}");
    let (summary, _) = run_workers(&WorkerRun {
        url: worker_url,
        queue: HISTORY_QUEUE,
        concurrency: 100,
        prefetch: args.prefetch,
        metrics: false,
        processes: 1,
        jobs: more,
        pgbouncer: args.pgbouncer.is_some(),
    })
    .await?;
    if summary.succeeded != jobs as u64 {
        return Err(BenchError::Check(format!(
            "drain the history jobs: the worker reports {} succeeded of {jobs}",
            summary.succeeded
        )));
    }
    sqlx::raw_sql("VACUUM ANALYZE procrastinate_jobs, procrastinate_events")
        .execute(&mut *conn)
        .await
        .or_failed_to(|| "vacuum the history".to_string())?;
    eprintln!(
        "dawdle: history: {jobs} finished jobs with their events made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Defers `jobs` copies of the batch's job, `batch.len()` per statement;
/// with `progress`, a line every 200,000.
async fn enqueue(
    conn: &mut PgConnection,
    batch: &[NewJob],
    jobs: usize,
    progress: bool,
    what: &dyn Fn() -> String,
) -> Result<(), BenchError> {
    let mut enqueued = 0;
    while enqueued < jobs {
        let chunk = &batch[..batch.len().min(jobs - enqueued)];
        let ids = dawdle::defer_batch(&mut *conn, chunk)
            .await
            .map_err(|error| BenchError::Check(format!("enqueue {}: {error}", what())))?;
        enqueued += ids.len();
        if progress && enqueued % 200_000 < ids.len() {
            eprintln!("dawdle: {}: {enqueued}/{jobs} jobs deferred", what());
        }
    }
    Ok(())
}

/// The rounds of one case are gathered under: history level, concurrency,
/// processes, idle transaction.
type CaseKey = (i32, u32, u32, IdleTransaction);

/// What one timed drain measures.
struct Case {
    /// Finished jobs beside the drained ones.
    history: i32,
    concurrency: u32,
    processes: u32,
    idle: IdleTransaction,
    round: i32,
    checkpoint: bool,
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn summarise(
    (history_jobs, concurrency, processes, idle_transaction): CaseKey,
    rounds: Vec<RoundResult>,
) -> ConcurrencyResult {
    let of = |field: fn(&RoundResult) -> f64| {
        median(&rounds.iter().map(field).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let enqueue = of(|round| round.enqueue_jobs_per_second);
    let drain_db = of(|round| round.drain_jobs_per_second_db);
    let drain_wall = of(|round| round.drain_jobs_per_second_wall);
    let max_peak_rss_mib = rounds
        .iter()
        .filter_map(|round| round.peak_rss_kb)
        .max()
        .map(kib_to_mib);
    let known = |field: fn(&RoundResult) -> Option<f64>| {
        median(&rounds.iter().filter_map(field).collect::<Vec<_>>())
    };
    let machine_busy = known(|round| round.machine_cpu_busy);
    let worker_cores = known(|round| {
        round
            .worker_cpu_seconds
            .map(|seconds| seconds / round.drain_seconds_wall)
    });
    ConcurrencyResult {
        history_jobs,
        concurrency,
        processes,
        idle_transaction,
        median_enqueue_jobs_per_second: enqueue,
        median_drain_jobs_per_second_db: drain_db,
        median_drain_jobs_per_second_wall: drain_wall,
        max_peak_rss_mib,
        median_machine_cpu_busy: machine_busy,
        median_worker_cores: worker_cores,
        meets_targets: Verdicts {
            enqueue: enqueue >= TARGET_ENQUEUE_JOBS_PER_SECOND,
            drain_db: drain_db >= TARGET_DRAIN_JOBS_PER_SECOND,
            drain_wall: drain_wall >= TARGET_DRAIN_JOBS_PER_SECOND,
            peak_rss: max_peak_rss_mib.map(|mib| mib < TARGET_PEAK_RSS_MIB),
        },
        rounds,
    }
}

/// Empties the queue, enqueues the jobs (timed), then drains them with the
/// worker processes (timed) and checks that every job ran once, completely.
async fn timed_round(
    conn: &mut PgConnection,
    server: &PgConnectOptions,
    worker_url: &str,
    args: &DrainBenchArgs,
    batch: &[NewJob],
    case: &Case,
) -> Result<RoundResult, BenchError> {
    let Case {
        history,
        concurrency,
        processes,
        idle,
        round,
        checkpoint,
    } = *case;
    let jobs = args.jobs as usize;
    let during = || format!("round {round} at concurrency {concurrency}, {processes} process(es)");
    if history > 0 {
        // The history stays; only the previous round's jobs go.
        sqlx::raw_sql(&format!(
            "DELETE FROM procrastinate_events WHERE job_id IN \
                 (SELECT id FROM procrastinate_jobs WHERE queue_name = '{QUEUE}'); \
             DELETE FROM procrastinate_jobs WHERE queue_name = '{QUEUE}'"
        ))
        .execute(&mut *conn)
        .await
        .or_failed_to(|| format!("delete the jobs of the round before {}", during()))?;
    } else {
        reset(conn, DATABASE).await?;
    }

    let started = Instant::now();
    enqueue(conn, batch, jobs, false, &|| {
        format!("the jobs of {}", during())
    })
    .await?;
    let enqueue_seconds = started.elapsed().as_secs_f64();

    // Fresh statistics and a clean visibility map before every drain, so
    // each starts from the state a settled queue would be in rather than
    // from whatever the previous round left.
    sqlx::raw_sql("VACUUM ANALYZE procrastinate_jobs, procrastinate_events")
        .execute(&mut *conn)
        .await
        .or_failed_to(|| format!("vacuum {DATABASE} before draining, {}", during()))?;
    if checkpoint {
        sqlx::raw_sql("CHECKPOINT")
            .execute(&mut *conn)
            .await
            .or_failed_to(|| format!("checkpoint before draining, {}", during()))?;
    }
    // The events written from here on are the drain's.
    let events_before: i64 =
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM procrastinate_events")
            .fetch_one(&mut *conn)
            .await
            .or_failed_to(|| format!("read the last event id before {}", during()))?;

    let idle_session = match idle {
        IdleTransaction::Without => None,
        IdleTransaction::With => {
            Some(open_idle_transaction(&server.clone().database(DATABASE)).await?)
        }
    };
    let cpu = CpuMark::now();
    let (summary, wall) = run_workers(&WorkerRun {
        url: worker_url,
        queue: QUEUE,
        concurrency,
        prefetch: args.prefetch,
        metrics: args.metrics,
        processes,
        jobs: args.jobs,
        pgbouncer: args.pgbouncer.is_some(),
    })
    .await?;
    let cpu = cpu.since();
    if let Some(session) = idle_session {
        close_idle_transaction(session).await?;
    }
    if summary.succeeded != jobs as u64
        || summary.retried + summary.failed + summary.interrupted != 0
    {
        return Err(BenchError::Check(format!(
            "drain {DATABASE}, {}: the worker reports {} succeeded, {} retried, {} failed and \
             {} interrupted, expected all {jobs} to succeed",
            during(),
            summary.succeeded,
            summary.retried,
            summary.failed,
            summary.interrupted
        )));
    }
    verify_histories(conn, jobs, &during).await?;

    // Each claim and each completion is a statement of its own transaction,
    // and every event a statement's trigger writes carries that
    // transaction's now(): distinct times count the statements.
    let (claims, completions, drain_seconds_db): (i64, i64, Option<f64>) = sqlx::query_as(
        "WITH drain AS (SELECT type, at FROM procrastinate_events WHERE id > $1)
         SELECT (SELECT count(DISTINCT at) FROM drain WHERE type = 'started'),
                (SELECT count(DISTINCT at) FROM drain WHERE type = 'succeeded'),
                -- From the first claim (its `started` events), not the first
                -- started_at, which moves to when a held job left the hold.
                (SELECT extract(epoch FROM (SELECT max(finished_at) FROM procrastinate_jobs
                                            WHERE queue_name = $2)
                                         - (SELECT min(at) FROM drain
                                            WHERE type = 'started'))::float8)",
    )
    .bind(events_before)
    .bind(QUEUE)
    .fetch_one(&mut *conn)
    .await
    .or_failed_to(|| format!("read the drain times of {}", during()))?;
    // Claiming and completing are separate transactions, so the span is
    // never zero once every job has succeeded.
    let drain_seconds_db = drain_seconds_db.unwrap_or(f64::NAN);
    let per_second = |seconds: f64| jobs as f64 / seconds;
    Ok(RoundResult {
        round,
        enqueue_seconds,
        enqueue_jobs_per_second: per_second(enqueue_seconds),
        drain_seconds_db,
        drain_jobs_per_second_db: per_second(drain_seconds_db),
        drain_seconds_wall: wall.as_secs_f64(),
        drain_jobs_per_second_wall: per_second(wall.as_secs_f64()),
        peak_rss_kb: summary.peak_rss_kb,
        machine_cpu_busy: cpu.machine_busy,
        worker_cpu_seconds: cpu.children_seconds,
        claim_statements: claims,
        completion_statements: completions,
        mean_jobs_per_claim: jobs as f64 / claims.max(1) as f64,
        mean_jobs_per_completion: jobs as f64 / completions.max(1) as f64,
    })
}

/// Fails unless every job succeeded and has exactly the history of a job
/// that succeeded at its first attempt, and no event belongs to no job.
async fn verify_histories(
    conn: &mut PgConnection,
    jobs: usize,
    during: &dyn Fn() -> String,
) -> Result<(), BenchError> {
    let (rows, succeeded, complete, orphans, events): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "WITH job AS (SELECT id, status FROM procrastinate_jobs WHERE queue_name = $2),
         history AS (
             SELECT job_id, array_agg(type::text ORDER BY id) AS types
             FROM procrastinate_events
             WHERE job_id IN (SELECT id FROM job)
             GROUP BY job_id
         )
         SELECT count(*),
                count(*) FILTER (WHERE job.status = 'succeeded'),
                count(*) FILTER (WHERE job.status = 'succeeded' AND history.types = $1),
                (SELECT count(*) FROM procrastinate_events AS event
                 WHERE event.job_id IS NULL
                    OR NOT EXISTS (SELECT FROM procrastinate_jobs WHERE id = event.job_id)),
                (SELECT count(*) FROM procrastinate_events WHERE job_id IN (SELECT id FROM job))
         FROM job
         LEFT JOIN history ON history.job_id = job.id",
    )
    .bind(&COMPLETE_HISTORY[..])
    .bind(QUEUE)
    .fetch_one(&mut *conn)
    .await
    .or_failed_to(|| format!("check the jobs and events of {}", during()))?;
    let jobs = jobs as i64;
    let expected_events = COMPLETE_HISTORY.len() as i64 * jobs;
    if rows != jobs
        || succeeded != jobs
        || complete != jobs
        || orphans != 0
        || events != expected_events
    {
        return Err(BenchError::Check(format!(
            "drain {DATABASE}, {}: of {rows} jobs (expected {jobs}), {succeeded} succeeded and \
             {complete} have exactly the events {COMPLETE_HISTORY:?}; {orphans} events belong \
             to no job; the jobs have {events} events (expected {expected_events})",
            during()
        )));
    }
    Ok(())
}

fn print_for_people(report: &Report) {
    outln!("dawdle bench drain: defer_batch in, `dawdle worker --one-shot` processes out");
    outln!("  server:  {}", report.postgres_version);
    outln!(
        "  work:    {} {} jobs per round, enqueued {} per statement; drained by worker \
         processes at each concurrency, --prefetch {}, metrics {}",
        report.jobs,
        Noop::NAME,
        report.enqueue_batch,
        report.prefetch,
        if report.metrics { "served" } else { "off" }
    );
    if report.pgbouncer {
        outln!("  through: PgBouncer in transaction pooling (workers run with --pgbouncer)");
    }
    let levels: Vec<String> = report.history_jobs.iter().map(i32::to_string).collect();
    outln!(
        "  table:   {} finished jobs of history beside them{}; VACUUM ANALYZE{} before each drain",
        levels.join(", then "),
        if levels.len() > 1 {
            " (the same table, growing between levels)"
        } else {
            ""
        },
        if report.checkpoint {
            " and CHECKPOINT"
        } else {
            " (CHECKPOINT refused)"
        }
    );
    outln!(
        "  rounds:  {} after one uncounted warm-up drain per history level, alternating the \
         order of the cases; medians of the rounds, peak RSS is the largest (of any one \
         process)",
        report.rounds
    );
    outln!(
        "  drain:   DB = first claim to last completion (jobs' timestamps); WALL = worker \
         spawn to exit"
    );
    outln!(
        "  cpu:     CPU BUSY = the whole machine during WALL, 100% = all {} cores busy; \
         WORKER CORES = the worker processes' CPU time over WALL",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    outln!();
    let rss = |mib: Option<f64>| mib.map_or("unknown".to_string(), |mib| format!("{mib:.1}"));
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|result| {
            // Against one process at the same concurrency without an idle
            // transaction on the least history, when measured.
            let one = report.results.iter().find(|other| {
                other.concurrency == result.concurrency
                    && other.processes == 1
                    && other.idle_transaction == IdleTransaction::Without
                    && Some(&other.history_jobs) == report.history_jobs.first()
            });
            vec![
                result.history_jobs.to_string(),
                result.concurrency.to_string(),
                result.processes.to_string(),
                result.idle_transaction.word().to_string(),
                format!("{:.0}", result.median_enqueue_jobs_per_second),
                format!("{:.0}", result.median_drain_jobs_per_second_db),
                format!("{:.0}", result.median_drain_jobs_per_second_wall),
                one.map_or("-".to_string(), |one| {
                    format!(
                        "{:.2}x",
                        result.median_drain_jobs_per_second_db
                            / one.median_drain_jobs_per_second_db
                    )
                }),
                rss(result.max_peak_rss_mib),
                result
                    .median_machine_cpu_busy
                    .map_or("unknown".to_string(), |busy| {
                        format!("{:.0}%", busy * 100.0)
                    }),
                result
                    .median_worker_cores
                    .map_or("unknown".to_string(), |cores| format!("{cores:.2}")),
            ]
        })
        .collect();
    output::print_table(
        &[
            "HISTORY",
            "CONCURRENCY",
            "PROCESSES",
            "IDLE TX",
            "ENQUEUE JOBS/S",
            "DRAIN JOBS/S (DB)",
            "DRAIN JOBS/S (WALL)",
            "DB VS 1 PROCESS, NO IDLE TX, LEAST HISTORY",
            "PEAK RSS MiB",
            "CPU BUSY",
            "WORKER CORES",
        ],
        &rows,
    );
    outln!();
    let targets = &report.targets;
    outln!(
        "targets: enqueue >= {:.0} jobs/s, drain >= {:.0} jobs/s, peak RSS < {:.0} MiB",
        targets.enqueue_jobs_per_second_at_least,
        targets.drain_jobs_per_second_at_least,
        targets.peak_rss_mib_below
    );
    let verdict = |meets: bool| if meets { "meets" } else { "below" }.to_string();
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|result| {
            let meets = &result.meets_targets;
            vec![
                result.history_jobs.to_string(),
                result.concurrency.to_string(),
                result.processes.to_string(),
                result.idle_transaction.word().to_string(),
                verdict(meets.enqueue),
                verdict(meets.drain_db),
                verdict(meets.drain_wall),
                meets.peak_rss.map_or("unknown".to_string(), |meets| {
                    if meets { "meets" } else { "above" }.to_string()
                }),
            ]
        })
        .collect();
    output::print_table(
        &[
            "HISTORY",
            "CONCURRENCY",
            "PROCESSES",
            "IDLE TX",
            "ENQUEUE",
            "DRAIN (DB)",
            "DRAIN (WALL)",
            "PEAK RSS",
        ],
        &rows,
    );
}
