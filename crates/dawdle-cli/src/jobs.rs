//! `dawdle defer` and `dawdle jobs`: put one job in, list jobs.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use dawdle::admin::{self, JobFilter};
use dawdle::{DeferError, JobStatus, NewJob};

use crate::database::jobs_pool;
use crate::{output, Failure};

#[derive(Debug, Args)]
pub(crate) struct DeferArgs {
    /// Task name, e.g. `email.send_welcome` (any task, Rust or Python).
    task: String,
    /// Arguments as a JSON object.
    #[arg(default_value = "{}")]
    args: String,
    /// Queue to put the job on.
    #[arg(long, default_value = dawdle::job::DEFAULT_QUEUE)]
    queue: String,
    /// Jobs sharing a lock run one at a time.
    #[arg(long)]
    lock: Option<String>,
    /// At most one waiting job per queueing lock.
    #[arg(long)]
    queueing_lock: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Run no earlier than this time (RFC 3339, e.g. 2030-01-01T09:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "delay", value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
    /// Run no earlier than this long from now (90s, 1h 30m; a number alone is seconds).
    #[arg(long = "in", value_name = "DURATION", value_parser = dawdle::duration::parse)]
    delay: Option<std::time::Duration>,
    /// W3C trace context of the request deferring the job
    /// (`00-{trace id}-{span id}-{flags}`, in hex): each attempt's span links to it.
    #[arg(long, value_name = "TRACEPARENT", env = "TRACEPARENT")]
    traceparent: Option<String>,
    /// W3C tracestate to carry with --traceparent.
    #[arg(
        long,
        value_name = "TRACESTATE",
        requires = "traceparent",
        env = "TRACESTATE"
    )]
    tracestate: Option<String>,
    /// Print the job as JSON instead of its id.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    task: Option<String>,
    /// todo, doing, succeeded, failed, cancelled, aborting, aborted.
    #[arg(long, value_parser = parse_status)]
    status: Option<JobStatus>,
    #[arg(long)]
    lock: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    limit: i64,
    #[arg(long)]
    json: bool,
}

/// `--status`: clap's error quotes the value already, so this does not.
fn parse_status(text: &str) -> Result<JobStatus, String> {
    text.parse().map_err(|_| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", known.join(", "))
    })
}

pub(crate) async fn defer(
    explicit_url: Option<&str>,
    args: DeferArgs,
) -> Result<ExitCode, Failure> {
    let json: serde_json::Value = serde_json::from_str(&args.args).map_err(|error| {
        Failure::new(format!(
            "failed to defer job: arguments {} are not valid JSON ({error}); pass a JSON \
             object such as '{{\"user_id\": 42}}'",
            dawdle::text::quote(&args.args)
        ))
    })?;
    let mut job = NewJob::new(&args.task, json)
        .map_err(|error| Failure::from_error(&DeferError::from(error)))?
        .queue(&args.queue)
        .priority(args.priority);
    if let Some(lock) = &args.lock {
        job = job.lock(lock);
    }
    if let Some(queueing_lock) = &args.queueing_lock {
        job = job.queueing_lock(queueing_lock);
    }
    if let Some(at) = args.at {
        job = job.scheduled_at(at);
    }
    if let Some(delay) = args.delay {
        job = job
            .scheduled_in(delay)
            .map_err(|error| Failure::from_error(&DeferError::from(error)))?;
    }
    if let Some(traceparent) = &args.traceparent {
        let context = dawdle::TraceContext::new(traceparent, args.tracestate.as_deref()).map_err(
            |error| {
                Failure::new(format!(
                    "failed to defer job: {error}; pass the traceparent header of the request \
                     deferring it, or leave --traceparent out"
                ))
            },
        )?;
        job = job.trace_context(context);
    }
    // Reject bad input before touching (or starting) any database.
    job.validate()
        .map_err(|error| Failure::from_error(&DeferError::from(error)))?;
    let pool = jobs_pool(explicit_url).await?;
    let id = dawdle::defer(&pool, &job).await?;
    if args.json {
        let job = admin::get_job(&pool, id).await?;
        output::print_json(&job);
    } else {
        outln!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(explicit_url: Option<&str>, args: JobsArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(explicit_url).await?;
    let filter = JobFilter {
        queue: args.queue,
        task: args.task,
        status: args.status,
        lock: args.lock,
        limit: Some(args.limit),
        ..JobFilter::default()
    };
    let jobs = admin::job_listing(&pool, &filter).await?;
    if args.json {
        output::print_json(&jobs);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|listed| {
            let job = &listed.job;
            vec![
                job.id.to_string(),
                job.queue_name.clone(),
                job.task_name.clone(),
                job.status.to_string(),
                job.priority.to_string(),
                job.attempts.to_string(),
                job.lock.clone().unwrap_or_else(|| "-".into()),
                output::timestamp(job.scheduled_at),
                output::timestamp(Some(job.created_at)),
                listed.args_summary(),
            ]
        })
        .collect();
    output::print_table(
        &[
            "ID",
            "QUEUE",
            "TASK",
            "STATUS",
            "PRIORITY",
            "ATTEMPTS",
            "LOCK",
            "SCHEDULED",
            "CREATED",
            "ARGS",
        ],
        &rows,
    );
    eprintln!("{} job(s)", jobs.len());
    Ok(ExitCode::SUCCESS)
}

/// A time of `--at`, saying which form it takes when it is not one.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| {
            format!(
                "{error}: give an RFC 3339 time such as 2026-12-24T09:30:00Z or \
                 2026-12-24T10:30:00+01:00 (or --in 2h for a delay)"
            )
        })
}
