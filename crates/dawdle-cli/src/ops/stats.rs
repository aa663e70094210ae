//! `dawdle stats`: counts by queue and status, stuck jobs, the failure
//! trend and the runbook's health verdict. `print_stats` also serves the
//! shell's `stats`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dawdle::admin::{self, StatsConfig, Verdict};
use dawdle::duration;

use crate::database::jobs_pool;
use crate::output::{cell_text, print_json, print_table};
use crate::Failure;

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
    outln!();
    outln!(
        "oldest runnable job waiting: {}",
        stats
            .oldest_runnable_age_seconds
            .map_or("none waiting".to_string(), admin::human_duration)
    );
    outln!("stuck in doing:              {}", stats.stuck_doing);
    outln!(
        "failed:                      {} in the last hour, {} in the hour before",
        stats.failed_last_hour,
        stats.failed_previous_hour
    );
    outln!("succeeded in the last hour:  {}", stats.succeeded_last_hour);
    outln!("live workers:                {}", stats.live_workers);
    if !stats.paused.is_empty() {
        let names: Vec<String> = stats
            .paused
            .iter()
            .map(|paused| format!("{} ({} waiting)", cell_text(&paused.queue), paused.waiting))
            .collect();
        outln!("paused queues:               {}", names.join(", "));
    }
    if !stats.durations.is_empty() {
        outln!();
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
    outln!();
    let verdict = match stats.verdict {
        Verdict::Healthy => "HEALTHY",
        Verdict::Warning => "WARNING",
        Verdict::Unhealthy => "UNHEALTHY",
    };
    outln!("verdict: {verdict}");
    for reason in &stats.reasons {
        outln!("  - {reason}");
    }
}
