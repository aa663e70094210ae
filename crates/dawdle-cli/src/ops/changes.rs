//! The operations that change jobs: `retry`, `retry-failed`, `purge`,
//! `reset-stalled`, `cancel` and `clear-pending`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dawdle::admin::{self, PurgeOptions, ResetTarget, RetryFilter};
use dawdle::duration::{self, BareNumber};

use crate::database::jobs_pool;
use crate::output::print_json;
use crate::Failure;

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
        outln!("retried 1 job ({}): it is waiting to run again", args.id);
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
    let done = admin::retry_failed(&pool, &filter).await?;
    let count = done.retried;
    let scope = match (&args.queue, &args.task) {
        (Some(q), Some(t)) => format!(" in queue {q} of task {t}"),
        (Some(q), None) => format!(" in queue {q}"),
        (None, Some(t)) => format!(" of task {t}"),
        (None, None) => String::new(),
    };
    if args.json {
        let left_out: Vec<_> = done
            .left_out
            .iter()
            .map(|(id, why)| serde_json::json!({"id": id, "why": why}))
            .collect();
        print_json(&serde_json::json!({
            "retried": if args.dry_run { 0 } else { count },
            "matching": count,
            "dry_run": args.dry_run,
            "left_out": left_out,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        outln!("would retry {count} failed job(s){scope} (dry run: nothing changed)");
    } else {
        outln!("retried {count} failed job(s){scope}");
    }
    if !done.left_out.is_empty() {
        outln!(
            "{} {} failed job(s) as they were:",
            if args.dry_run { "would leave" } else { "left" },
            done.left_out.len()
        );
        const SHOWN: usize = 20;
        for (id, why) in done.left_out.iter().take(SHOWN) {
            outln!("  job {id}: {why}");
        }
        if done.left_out.len() > SHOWN {
            outln!(
                "  … and {} more (--json lists them all)",
                done.left_out.len() - SHOWN
            );
        }
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
        outln!(
            "would delete {deleted} {what} job(s) finished more than {} ago (dry run: nothing deleted)",
            duration::format(older_than)
        );
    } else {
        outln!(
            "deleted {deleted} {what} job(s) finished more than {} ago, with their history ({:.1} s)",
            duration::format(older_than),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- resets and cancels

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["id", "older_than"]))]
pub(crate) struct ResetStalledArgs {
    /// Reset this job (it must be in doing).
    #[arg(conflicts_with = "older_than")]
    id: Option<i64>,
    /// Reset every job in doing that started longer ago than this (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    older_than: Option<Duration>,
    /// Reset jobs whose worker is alive too (it sent a heartbeat in the last
    /// minute, so the job is most likely still running: a second run would
    /// overlap it). Without it, such jobs are left alone and listed.
    #[arg(long)]
    even_if_alive: bool,
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
    let done = admin::reset_stalled(&pool, &target, args.even_if_alive).await?;
    if args.json {
        print_json(&serde_json::json!({
            "reset": done.reset.len(),
            "ids": done.reset,
            "failed_instead": done.failed,
            "skipped_alive": done.skipped_alive,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let list = |ids: &[i64]| {
        if ids.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!(": {}", ids.join(", "))
        }
    };
    outln!(
        "reset {} stalled job(s) to todo{}",
        done.reset.len(),
        list(&done.reset)
    );
    if !done.failed.is_empty() {
        outln!(
            "failed {} job(s) instead, which the database refused to put back (another job \
             waits with the same queueing lock, say; `dawdle job ID` says why){}",
            done.failed.len(),
            list(&done.failed)
        );
    }
    if !done.skipped_alive.is_empty() {
        outln!(
            "left {} job(s) in doing whose worker is alive (a heartbeat in the last {} s): \
             they are most likely still running; --even-if-alive resets them too{}",
            done.skipped_alive.len(),
            admin::WORKER_ALIVE_WITHIN.as_secs(),
            list(&done.skipped_alive)
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
        print_json(
            &serde_json::json!({"id": args.id, "outcome": outcome, "changed": outcome.changed()}),
        );
    } else {
        match outcome {
            admin::CancelOutcome::Cancelled => outln!("cancelled 1 job ({})", args.id),
            admin::CancelOutcome::AbortRequested => outln!(
                "job {} is running: abort requested (1 job); its worker stops it",
                args.id
            ),
            admin::CancelOutcome::AbortAlreadyRequested => outln!(
                "job {} is running and its abort was already requested: nothing changed (0 jobs)",
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
        outln!(
            "deleted {deleted} waiting job(s){}",
            args.queue
                .map_or(String::new(), |q| format!(" from queue {q}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}
