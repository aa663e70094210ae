//! `dawdle bench jobs-list`: how long the jobs listing (the dashboard's
//! Jobs page and `dawdle jobs`) takes on a large table, per filter.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use dawdle::admin::{self, JobFilter};
use dawdle::JobStatus;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;

use super::scratch::{self, create_database, server_version};
use super::{median, print_report, BenchError, OrFailedTo};
use crate::database::jobs_database;
use crate::Failure;

const DATABASE: &str = "dawdle_bench_jobs_list";
/// Rows per page, as the dashboard asks.
const PAGE: i64 = 50;
/// The target the README states.
const TARGET_MS: f64 = 100.0;

#[derive(Debug, Args)]
pub(crate) struct JobsListBenchArgs {
    /// Jobs in the table (90 % succeeded, 5 % failed, 3 % waiting, 2 % cancelled).
    #[arg(long, default_value_t = 1_000_000)]
    jobs: i64,
    /// Times each listing is read; medians are reported.
    #[arg(long, default_value_t = 20)]
    repeat: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Listing {
    name: &'static str,
    rows: usize,
    median_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    postgres_version: String,
    jobs: i64,
    repeat: u32,
    target_ms_below: f64,
    listings: Vec<Listing>,
}

pub(super) async fn run(
    explicit_url: Option<&str>,
    args: JobsListBenchArgs,
) -> Result<ExitCode, Failure> {
    if args.jobs < 1000 || args.repeat == 0 {
        return Err(Failure {
            code: 2,
            ..Failure::new(
                "failed to run the benchmark: use --jobs 1000 or more and --repeat 1 or more",
            )
        });
    }
    let database = jobs_database(explicit_url).await?;
    let server = database.connect_options();
    let report = scratch::with_databases(server, &[DATABASE], async |maintenance| {
        measure(server, maintenance, &args).await
    })
    .await
    .map_err(|error| Failure::from_error(&error))?;
    Ok(print_report(&report, args.json, print_for_people))
}

async fn measure(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    args: &JobsListBenchArgs,
) -> Result<Report, BenchError> {
    let postgres_version = server_version(maintenance).await?;
    let mut conn = create_database(server, maintenance, DATABASE).await?;
    eprintln!(
        "bench jobs-list: inserting {} jobs with their history…",
        args.jobs
    );
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO procrastinate_jobs
             (queue_name, task_name, lock, args, status, attempts, created_at, started_at, finished_at)
         SELECT 'queue_' || (n % 8), 'task_' || (n % 20),
                CASE WHEN n % 50 = 0 THEN 'lock_' || (n % 1000) END,
                jsonb_build_object('n', n, 'email', 'user' || n || '@example.com'),
                s.status::procrastinate_job_status,
                CASE WHEN s.status = 'todo' THEN 0 ELSE 1 END,
                now() - make_interval(secs => $1 - n),
                CASE WHEN s.status IN ('succeeded', 'failed') THEN now() - make_interval(secs => $1 - n) END,
                CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled') THEN now() - make_interval(secs => $1 - n) END
         FROM generate_series(1, $1) AS n
         CROSS JOIN LATERAL (SELECT CASE
             WHEN n % 100 < 90 THEN 'succeeded'
             WHEN n % 100 < 95 THEN 'failed'
             WHEN n % 100 < 98 THEN 'cancelled'
             ELSE 'todo' END AS status) AS s",
    )
    .bind(args.jobs)
    .execute(&mut conn)
    .await
    .or_failed_to(|| "insert the benchmark's jobs".into())?;
    for table in ["procrastinate_jobs", "procrastinate_events"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {table}"))
            .execute(&mut conn)
            .await
            .or_failed_to(|| format!("vacuum and analyze {table}"))?;
    }
    eprintln!(
        "bench jobs-list: {} jobs ready in {:.1} s; reading each listing {} times…",
        args.jobs,
        started.elapsed().as_secs_f64(),
        args.repeat
    );
    let middle_id = args.jobs / 2;
    let listings: Vec<(&'static str, JobFilter)> = vec![
        ("newest jobs", JobFilter::default()),
        (
            "status failed",
            JobFilter {
                status: Some(JobStatus::Failed),
                ..JobFilter::default()
            },
        ),
        (
            "status todo",
            JobFilter {
                status: Some(JobStatus::Todo),
                ..JobFilter::default()
            },
        ),
        (
            "queue",
            JobFilter {
                queue: Some("queue_3".into()),
                ..JobFilter::default()
            },
        ),
        (
            "task",
            JobFilter {
                task: Some("task_7".into()),
                ..JobFilter::default()
            },
        ),
        (
            "lock",
            JobFilter {
                lock: Some("lock_500".into()),
                ..JobFilter::default()
            },
        ),
        (
            "queue and status failed",
            JobFilter {
                queue: Some("queue_3".into()),
                status: Some(JobStatus::Failed),
                ..JobFilter::default()
            },
        ),
        (
            "a page halfway down",
            JobFilter {
                before_id: Some(middle_id),
                ..JobFilter::default()
            },
        ),
        (
            "failed, halfway down",
            JobFilter {
                status: Some(JobStatus::Failed),
                before_id: Some(middle_id),
                ..JobFilter::default()
            },
        ),
        (
            "no match (task)",
            JobFilter {
                task: Some("no.such.task".into()),
                ..JobFilter::default()
            },
        ),
        (
            "arguments contain (common)",
            JobFilter {
                args_contain: Some("@example.com".into()),
                ..JobFilter::default()
            },
        ),
        (
            "arguments contain (1 job)",
            JobFilter {
                args_contain: Some(format!("user{middle_id}@")),
                ..JobFilter::default()
            },
        ),
        (
            "an hour, a week ago",
            JobFilter {
                created_after: Some(chrono::Utc::now() - chrono::Duration::hours(7 * 24 + 1)),
                created_before: Some(chrono::Utc::now() - chrono::Duration::hours(7 * 24)),
                ..JobFilter::default()
            },
        ),
    ];
    let mut results = Vec::new();
    for (name, mut filter) in listings {
        filter.limit = Some(PAGE);
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..args.repeat {
            let started = Instant::now();
            rows = admin::job_listing(&mut conn, &filter)
                .await
                .or_failed_to(|| format!("list jobs ({name})"))?
                .len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        results.push(Listing {
            name,
            rows,
            median_ms: median(&times).unwrap_or(0.0),
            max_ms: times.iter().copied().fold(0.0, f64::max),
        });
    }
    scratch::disconnect(conn, DATABASE).await?;
    Ok(Report {
        postgres_version,
        jobs: args.jobs,
        repeat: args.repeat,
        target_ms_below: TARGET_MS,
        listings: results,
    })
}

fn print_for_people(report: &Report) {
    outln!(
        "bench jobs-list: {} jobs, {}, each listing read {} times, {} rows a page",
        report.jobs,
        report.postgres_version,
        report.repeat,
        PAGE
    );
    outln!();
    outln!(
        "{:<26} {:>5} {:>11} {:>9}  target < {} ms",
        "LISTING",
        "ROWS",
        "MEDIAN MS",
        "MAX MS",
        report.target_ms_below
    );
    for listing in &report.listings {
        outln!(
            "{:<26} {:>5} {:>11.2} {:>9.2}  {}",
            listing.name,
            listing.rows,
            listing.median_ms,
            listing.max_ms,
            if listing.median_ms < report.target_ms_below {
                "meets"
            } else {
                "below"
            }
        );
    }
}
