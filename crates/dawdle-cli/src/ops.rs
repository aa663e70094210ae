//! The runbook's operations as commands: stats, failures, one job's story,
//! retries, purges, resets, cancels, health and the monitoring checks. Each
//! is a thin layer over `dawdle::admin`; the shell reuses the same printers.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use dawdle::admin::{
    self, FailedFilter, PurgeOptions, ResetTarget, RetryFilter, StatsConfig, Verdict,
};
use sqlx::PgPool;

use crate::output::{field_text, print_json, print_table, timestamp};
use dawdle::duration::{self, BareNumber};
use dawdle::text::{quote, truncate};

/// Most characters `dawdle job ID` shows of one field or traceback line;
/// `--json` shows everything.
const MAX_FIELD_CHARS: usize = 4096;
use crate::{jobs_pool, Failure};

impl From<admin::ChangeError> for Failure {
    fn from(error: admin::ChangeError) -> Self {
        Failure::from_error(&error)
    }
}

/// A point in time: RFC 3339, or a duration meaning "that long ago".
fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = text.parse::<DateTime<Utc>>() {
        return Ok(at);
    }
    let ago = duration::parse(text).map_err(|_| {
        format!(
            "{} is neither a time (2026-01-31T09:00:00Z) nor a duration ago (1h, 2d)",
            quote(text)
        )
    })?;
    // Far enough back, there is no such time: refused rather than a panic.
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{} is too long ago", quote(text)))
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_string(), str::to_string)
}

// ---------------------------------------------------------------- stats

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// A job in doing longer than this is stuck.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration::parse)]
    stuck_after: Duration,
    /// A runnable job waiting longer than this means a growing backlog.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration::parse)]
    backlog_after: Duration,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn stats(url: Option<&str>, args: StatsArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let config = StatsConfig {
        stuck_after: args.stuck_after,
        backlog_after: args.backlog_after,
        ..StatsConfig::default()
    };
    let stats = admin::stats(&pool, &config).await?;
    if args.json {
        print_json(&stats);
    } else {
        print_stats(&stats);
    }
    Ok(match stats.verdict {
        Verdict::Unhealthy => ExitCode::FAILURE,
        Verdict::Healthy | Verdict::Warning => ExitCode::SUCCESS,
    })
}

pub(crate) fn print_stats(stats: &admin::QueueStats) {
    let counts_row = |name: &str, c: &admin::QueueCounts| {
        vec![
            name.to_string(),
            c.todo.to_string(),
            c.doing.to_string(),
            c.succeeded.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
            c.aborted.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .map(|(queue, counts)| counts_row(queue, counts))
        .collect();
    rows.push(counts_row("(all)", &stats.totals));
    print_table(
        &[
            "QUEUE",
            "TODO",
            "DOING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "ABORTED",
        ],
        &rows,
    );
    println!();
    println!(
        "oldest runnable job waiting: {}",
        stats
            .oldest_runnable_age_seconds
            .map_or("none waiting".to_string(), admin::human_duration)
    );
    println!("stuck in doing:              {}", stats.stuck_doing);
    println!(
        "failed:                      {} in the last hour, {} in the hour before",
        stats.failed_last_hour, stats.failed_previous_hour
    );
    println!("succeeded in the last hour:  {}", stats.succeeded_last_hour);
    println!("live workers:                {}", stats.live_workers);
    if !stats.durations.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = stats
            .durations
            .iter()
            .map(|d| {
                vec![
                    d.task_name.clone(),
                    d.succeeded.to_string(),
                    format!("{:.3}", d.avg_duration_seconds),
                ]
            })
            .collect();
        print_table(
            &["TASK (succeeded, last 24 h)", "JOBS", "AVG SECONDS"],
            &rows,
        );
    }
    println!();
    let verdict = match stats.verdict {
        Verdict::Healthy => "HEALTHY",
        Verdict::Warning => "WARNING",
        Verdict::Unhealthy => "UNHEALTHY",
    };
    println!("verdict: {verdict}");
    for reason in &stats.reasons {
        println!("  - {reason}");
    }
}

// ---------------------------------------------------------------- failed

#[derive(Debug, Args)]
pub(crate) struct FailedArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    task: Option<String>,
    /// Only failures since this time (RFC 3339) or this long ago (1h, 2d).
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn failed(url: Option<&str>, args: FailedArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let filter = FailedFilter {
        queue: args.queue,
        task: args.task,
        since: args.since,
        limit: Some(args.limit),
    };
    let jobs = admin::failed_jobs(&pool, &filter).await?;
    if args.json {
        print_json(&jobs);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.to_string(),
                job.queue_name.clone(),
                job.task_name.clone(),
                job.attempts.to_string(),
                timestamp(job.finished_at),
                or_dash(job.error.as_deref()),
                or_dash(job.error_message.as_deref()),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "QUEUE",
            "TASK",
            "ATTEMPTS",
            "FAILED AT",
            "ERROR",
            "MESSAGE",
        ],
        &rows,
    );
    eprintln!("{} failed job(s)", jobs.len());
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- job

#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// The job id.
    id: i64,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn job(url: Option<&str>, args: JobArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    show_job(&pool, args.id, args.json).await
}

pub(crate) async fn show_job(pool: &PgPool, id: i64, json: bool) -> Result<ExitCode, Failure> {
    let Some(detail) = admin::job_detail(pool, id).await? else {
        return Err(Failure::new(format!("no job {id}")));
    };
    if json {
        print_json(&detail);
        return Ok(ExitCode::SUCCESS);
    }
    let job = &detail.job;
    let duration = match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => {
            format!("{:.3} s", (end - start).num_milliseconds() as f64 / 1000.0)
        }
        _ => "-".to_string(),
    };
    let args = match &job.args_error {
        Some(why) => format!("(unreadable) {why}"),
        None => job.args.to_string(),
    };
    let fields = [
        ("id", job.id.to_string()),
        ("task", job.task_name.clone()),
        ("queue", job.queue_name.clone()),
        ("status", job.status.to_string()),
        ("attempts", job.attempts.to_string()),
        ("priority", job.priority.to_string()),
        ("lock", or_dash(job.lock.as_deref())),
        ("queueing lock", or_dash(job.queueing_lock.as_deref())),
        ("args", args),
        ("created at", timestamp(Some(job.created_at))),
        ("scheduled at", timestamp(job.scheduled_at)),
        ("started at", timestamp(job.started_at)),
        ("finished at", timestamp(job.finished_at)),
        ("last run took", duration),
        (
            "worker",
            job.worker_id.map_or("-".to_string(), |w| w.to_string()),
        ),
        ("abort requested", job.abort_requested.to_string()),
    ];
    for (name, value) in fields {
        let value = field_text(&value, MAX_FIELD_CHARS);
        println!("{:<16} {value}", format!("{name}:"));
    }
    println!();
    println!("history:");
    let rows: Vec<Vec<String>> = detail
        .events
        .iter()
        .map(|event| {
            let kind = event.event_type.map_or("-", |t| t.as_str()).to_string();
            let detail = match (&event.error, &event.error_message) {
                (Some(kind), Some(message)) => format!("{kind}: {message}"),
                (Some(kind), None) => kind.clone(),
                _ => String::new(),
            };
            vec![timestamp(event.at), kind, detail]
        })
        .collect();
    print_table(&["AT", "EVENT", "DETAIL"], &rows);
    let errors: Vec<_> = detail
        .events
        .iter()
        .filter(|e| e.error_traceback.is_some())
        .collect();
    for (number, event) in errors.iter().enumerate() {
        println!();
        println!(
            "error {} of {} at {}:",
            number + 1,
            errors.len(),
            timestamp(event.at)
        );
        let traceback = event.error_traceback.as_deref().unwrap_or_default();
        let traceback = truncate(traceback, dawdle::task_error::MAX_TRACEBACK_BYTES);
        for line in traceback.lines() {
            println!("    {}", field_text(line, MAX_FIELD_CHARS));
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- retries

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// The failed job's id.
    id: i64,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn retry(url: Option<&str>, args: RetryArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    admin::retry(&pool, args.id).await?;
    if args.json {
        print_json(&serde_json::json!({"retried": 1, "ids": [args.id]}));
    } else {
        println!("retried 1 job ({}): it is waiting to run again", args.id);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct RetryFailedArgs {
    /// Only this queue (default: every queue).
    queue: Option<String>,
    /// Only this task.
    #[arg(long)]
    task: Option<String>,
    /// Say how many would be retried; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn retry_failed(
    url: Option<&str>,
    args: RetryFailedArgs,
) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let filter = RetryFilter {
        queue: args.queue.clone(),
        task: args.task.clone(),
        dry_run: args.dry_run,
    };
    let count = admin::retry_failed(&pool, &filter).await?;
    let scope = match (&args.queue, &args.task) {
        (Some(q), Some(t)) => format!(" in queue {q} of task {t}"),
        (Some(q), None) => format!(" in queue {q}"),
        (None, Some(t)) => format!(" of task {t}"),
        (None, None) => String::new(),
    };
    if args.json {
        print_json(
            &serde_json::json!({"retried": if args.dry_run { 0 } else { count }, "matching": count, "dry_run": args.dry_run}),
        );
    } else if args.dry_run {
        println!("would retry {count} failed job(s){scope} (dry run: nothing changed)");
    } else {
        println!("retried {count} failed job(s){scope}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- purge

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Delete jobs that finished longer ago than this: a number of days
    /// (30), or a duration (12h, 2d 12h).
    #[arg(long, value_name = "DAYS", value_parser = parse_purge_age)]
    older_than: Duration,
    /// Also delete failed jobs (by default only succeeded, cancelled and aborted ones).
    #[arg(long)]
    include_failed: bool,
    #[arg(long)]
    queue: Option<String>,
    /// Say how many would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Job ids examined per delete statement.
    #[arg(long, default_value_t = 5000)]
    batch_size: i64,
    #[arg(long)]
    json: bool,
}

/// `purge --older-than`: a number alone is days, as the runbook's
/// `purge-old.sh <days>` has always passed it.
fn parse_purge_age(text: &str) -> Result<Duration, duration::DurationError> {
    duration::parse_with(text, BareNumber::Days)
}

pub(crate) async fn purge(url: Option<&str>, args: PurgeArgs) -> Result<ExitCode, Failure> {
    let older_than = args.older_than;
    let pool = jobs_pool(url).await?;
    let options = PurgeOptions {
        older_than,
        include_failed: args.include_failed,
        queue: args.queue,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
    };
    let what = if args.include_failed {
        "succeeded, cancelled, aborted and failed"
    } else {
        "succeeded, cancelled and aborted"
    };
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let deleted = admin::purge(&pool, &options, |progress| {
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = std::time::Instant::now();
            eprintln!(
                "dawdle: purge: {} deleted, scanned up to job {} of {}",
                progress.deleted, progress.scanned_up_to, progress.max_id
            );
        }
    })
    .await?;
    if args.json {
        print_json(
            &serde_json::json!({"deleted": if args.dry_run { 0 } else { deleted }, "matching": deleted, "dry_run": args.dry_run}),
        );
    } else if args.dry_run {
        println!(
            "would delete {deleted} {what} job(s) finished more than {} ago (dry run: nothing deleted)",
            duration::format(older_than)
        );
    } else {
        println!(
            "deleted {deleted} {what} job(s) finished more than {} ago, with their history ({:.1} s)",
            duration::format(older_than),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- resets and cancels

#[derive(Debug, Args)]
pub(crate) struct ResetStalledArgs {
    /// Reset this job (it must be in doing).
    #[arg(conflicts_with = "older_than", required_unless_present = "older_than")]
    id: Option<i64>,
    /// Reset every job in doing that started longer ago than this (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    older_than: Option<Duration>,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn reset_stalled(
    url: Option<&str>,
    args: ResetStalledArgs,
) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let target = match (args.id, args.older_than) {
        (Some(id), _) => ResetTarget::Job(id),
        (None, Some(age)) => ResetTarget::OlderThan(age),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let ids = admin::reset_stalled(&pool, &target).await?;
    if args.json {
        print_json(&serde_json::json!({"reset": ids.len(), "ids": ids}));
    } else {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        println!(
            "reset {} stalled job(s) to todo{}",
            ids.len(),
            if ids.is_empty() {
                String::new()
            } else {
                format!(": {}", list.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The job id.
    id: i64,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cancel(url: Option<&str>, args: CancelArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let outcome = admin::cancel(&pool, args.id).await?;
    if args.json {
        print_json(&serde_json::json!({"id": args.id, "outcome": outcome, "changed": 1}));
    } else {
        match outcome {
            admin::CancelOutcome::Cancelled => println!("cancelled 1 job ({})", args.id),
            admin::CancelOutcome::AbortRequested => println!(
                "job {} is running: abort requested (1 job); its worker stops it",
                args.id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct ClearPendingArgs {
    /// Only this queue (default: every queue).
    #[arg(long)]
    queue: Option<String>,
    /// Confirm: the waiting jobs are deleted and lost.
    #[arg(long)]
    yes: bool,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn clear_pending(
    url: Option<&str>,
    args: ClearPendingArgs,
) -> Result<ExitCode, Failure> {
    if !args.yes {
        return Err(Failure {
            code: 2,
            ..Failure::new(
                "refusing to delete waiting jobs without --yes: they would be lost. \
                 See how many there are with `dawdle stats`, then run \
                 `dawdle clear-pending --yes` (add --queue NAME to clear one queue)",
            )
        });
    }
    let pool = jobs_pool(url).await?;
    let deleted = admin::clear_pending(&pool, args.queue.as_deref()).await?;
    if args.json {
        print_json(&serde_json::json!({"deleted": deleted}));
    } else {
        println!(
            "deleted {deleted} waiting job(s){}",
            args.queue
                .map_or(String::new(), |q| format!(" from queue {q}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- health and checks

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// A worker heartbeat must be at most this old.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = duration::parse)]
    worker_within: Duration,
    /// Do not require a live worker (an API started with JOB_QUEUE_ENABLED=false).
    #[arg(long)]
    no_worker: bool,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn healthcheck(
    url: Option<&str>,
    args: HealthcheckArgs,
) -> Result<ExitCode, Failure> {
    let database = crate::jobs_database(url).await?;
    let report = match database.connect(2).await {
        Ok(pool) => admin::healthcheck(&pool, args.worker_within, !args.no_worker).await,
        Err(error) => admin::HealthReport {
            database_reachable: false,
            schema_current: false,
            live_workers: 0,
            problems: vec![format!("database unreachable: {error}")],
        },
    };
    if args.json {
        print_json(&serde_json::json!({
            "healthy": report.is_healthy(),
            "database_reachable": report.database_reachable,
            "schema_current": report.schema_current,
            "live_workers": report.live_workers,
            "problems": report.problems,
        }));
    } else if report.is_healthy() {
        println!(
            "healthy: database reachable, schema current, {} live worker(s)",
            report.live_workers
        );
    } else {
        println!("UNHEALTHY:");
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
    Ok(if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The check to run; without one, list them.
    name: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn check(url: Option<&str>, args: CheckArgs) -> Result<ExitCode, Failure> {
    let Some(name) = args.name else {
        if args.json {
            print_json(&admin::CHECKS);
        } else {
            let rows: Vec<Vec<String>> = admin::CHECKS
                .iter()
                .map(|c| vec![c.name.to_string(), c.description.to_string()])
                .collect();
            print_table(&["CHECK", "WHAT IT MEASURES"], &rows);
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !admin::CHECKS.iter().any(|c| c.name == name) {
        let names: Vec<&str> = admin::CHECKS.iter().map(|c| c.name).collect();
        return Err(Failure {
            code: 2,
            ..Failure::new(format!(
                "no check named {}; the checks are: {}",
                quote(&name),
                names.join(", ")
            ))
        });
    }
    let pool = jobs_pool(url).await?;
    let result = admin::run_check(&pool, &name)
        .await?
        .expect("the name was checked above");
    if args.json {
        print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", result.description);
    let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| {
            result
                .columns
                .iter()
                .map(|column| match row.get(column) {
                    None | Some(serde_json::Value::Null) => "-".to_string(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                })
                .collect()
        })
        .collect();
    print_table(&header, &rows);
    Ok(ExitCode::SUCCESS)
}
