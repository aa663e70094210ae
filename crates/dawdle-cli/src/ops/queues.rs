//! `dawdle queue pause|resume|list`: stop claiming one queue's jobs without
//! stopping the workers, and start again.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dawdle::admin;

use crate::database::jobs_pool;
use crate::output::{cell_text, print_json, print_table, timestamp};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Stop every worker (dawdle's and the Python library's) from claiming
    /// the queue's jobs; running jobs finish, new ones wait.
    Pause(PauseArgs),
    /// Let workers claim the queue's jobs again (they are woken at once).
    Resume(ResumeArgs),
    /// The paused queues: since when, by whom, why, and how many jobs wait.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    /// The queue, e.g. `email`.
    queue: String,
    /// Why, for whoever looks next (shown by `dawdle queue list`).
    #[arg(long)]
    reason: Option<String>,
    /// Who pauses it (default: $USER, or $LOGNAME).
    #[arg(long)]
    by: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The queue.
    queue: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(url: Option<&str>, command: QueueCommand) -> Result<ExitCode, Failure> {
    match command {
        QueueCommand::Pause(args) => pause(url, args).await,
        QueueCommand::Resume(args) => resume(url, args).await,
        QueueCommand::List(args) => list(url, args).await,
    }
}

/// The paused queue `queue`, if it is.
async fn find(pool: &sqlx::PgPool, queue: &str) -> Result<Option<admin::PausedQueue>, sqlx::Error> {
    Ok(admin::paused_queues(pool)
        .await?
        .into_iter()
        .find(|paused| paused.queue == queue))
}

/// Jobs waiting in `queue`, counted as `dawdle shell list_queues` counts them.
async fn waiting(pool: &sqlx::PgPool, queue: &str) -> Result<i64, sqlx::Error> {
    let filter = admin::JobFilter {
        queue: Some(queue.to_string()),
        ..admin::JobFilter::default()
    };
    let counts = admin::group_counts(pool, admin::Grouping::Queue, &filter).await?;
    Ok(counts.first().map_or(0, |counts| counts.todo))
}

async fn pause(url: Option<&str>, args: PauseArgs) -> Result<ExitCode, Failure> {
    let by = args
        .by
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|by| !by.trim().is_empty());
    let pool = jobs_pool(url).await?;
    let paused =
        admin::pause_queue(&pool, &args.queue, by.as_deref(), args.reason.as_deref()).await?;
    let state = find(&pool, &args.queue).await?;
    let waiting = state.as_ref().map_or(0, |state| state.waiting);
    let queue = cell_text(&args.queue);
    if args.json {
        print_json(&serde_json::json!({
            "queue": args.queue, "paused": paused, "changed": u8::from(paused), "state": state,
        }));
    } else if paused {
        outln!(
            "paused queue {queue}: {waiting} waiting job(s) stay in todo until \
             `dawdle queue resume {queue}`; jobs already running finish"
        );
    } else {
        let since = state.as_ref().map(|s| timestamp(Some(s.paused_at)));
        outln!(
            "queue {queue} was already paused (since {}); nothing changed, {waiting} job(s) waiting",
            since.unwrap_or_else(|| "just now".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn resume(url: Option<&str>, args: ResumeArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let resumed = admin::resume_queue(&pool, &args.queue).await?;
    let waiting = waiting(&pool, &args.queue).await?;
    let queue = cell_text(&args.queue);
    if args.json {
        print_json(&serde_json::json!({
            "queue": args.queue, "resumed": resumed, "changed": u8::from(resumed), "waiting": waiting,
        }));
    } else if resumed {
        outln!("resumed queue {queue}: workers claim its {waiting} waiting job(s) now");
    } else {
        outln!("queue {queue} was not paused; nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(url: Option<&str>, args: ListArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    let paused = admin::paused_queues(&pool).await?;
    if args.json {
        print_json(&paused);
        return Ok(ExitCode::SUCCESS);
    }
    if paused.is_empty() {
        outln!("no queue is paused");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = paused
        .iter()
        .map(|queue| {
            vec![
                cell_text(&queue.queue),
                timestamp(Some(queue.paused_at)),
                cell_text(queue.paused_by.as_deref().unwrap_or("")),
                queue.waiting.to_string(),
                cell_text(queue.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    print_table(&["QUEUE", "PAUSED SINCE", "BY", "WAITING", "REASON"], &rows);
    Ok(ExitCode::SUCCESS)
}
