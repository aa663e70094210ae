//! `dawdle failed` and `dawdle job ID`: what failed lately, and one job's
//! whole story. `show_job` also serves the shell's `job`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use dawdle::admin::{self, FailedFilter};
use dawdle::duration;
use dawdle::text::{quote, truncate};
use sqlx::PgPool;

use crate::database::jobs_pool;
use crate::output::{field_text, print_json, print_table, timestamp};
use crate::Failure;

/// Most characters `dawdle job ID` shows of one field or traceback line;
/// `--json` shows everything.
const MAX_FIELD_CHARS: usize = 4096;

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

#[derive(Debug, Args)]
pub(crate) struct FailedArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    task: Option<String>,
    /// Only failures since this time (RFC 3339) or this long ago (1h, 2d).
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
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
        outln!("{:<16} {value}", format!("{name}:"));
    }
    outln!();
    outln!("history:");
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
    let mut rows = rows;
    if detail.events_left_out > 0 {
        let at = admin::HISTORY_FIRST.min(rows.len());
        rows.insert(
            at,
            vec![
                "…".to_string(),
                format!("({} events left out)", detail.events_left_out),
                String::new(),
            ],
        );
    }
    print_table(&["AT", "EVENT", "DETAIL"], &rows);
    let errors: Vec<_> = detail
        .events
        .iter()
        .filter(|e| e.error_traceback.is_some())
        .collect();
    if detail.events_left_out > 0 {
        outln!();
        outln!(
            "{} events of the history are left out (the first {} and the last {} are \
             shown); SELECT * FROM procrastinate_events WHERE job_id = {} ORDER BY id has \
             them all",
            detail.events_left_out,
            admin::HISTORY_FIRST,
            admin::HISTORY_LAST,
            job.id
        );
    }
    for (number, event) in errors.iter().enumerate() {
        outln!();
        outln!(
            "error {} of {} at {}:",
            number + 1,
            errors.len(),
            timestamp(event.at)
        );
        let traceback = event.error_traceback.as_deref().unwrap_or_default();
        let traceback = truncate(traceback, dawdle::task_error::MAX_TRACEBACK_BYTES);
        for line in traceback.lines() {
            outln!("    {}", field_text(line, MAX_FIELD_CHARS));
        }
    }
    Ok(ExitCode::SUCCESS)
}
