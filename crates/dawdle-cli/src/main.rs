//! The `dawdle` command. It parses, calls the `dawdle` library, which does
//! the work, and prints; one module per group of commands:
//!
//! - `schema apply|check` (`schema`): the jobs database's migrations.
//! - `defer`, `jobs` (`jobs`): put a job in, list jobs.
//! - `worker` (`worker`): a worker process with the diagnostic tasks.
//! - `stats`, `failed`, `job`, `retry`, `retry-failed`, `purge`,
//!   `reset-stalled`, `cancel`, `clear-pending`, `healthcheck`, `check`
//!   (`ops`): the runbook's operations.
//! - `shell` (`shell`): Procrastinate's interactive shell, and ours.
//! - `db start|stop|status|url` (`db`): the embedded PostgreSQL.
//! - `bench triggers|drain` (`bench`): measurements that print numbers.
//!
//! A command ends with a [`Failure`] (`dawdle: failed to …` and an exit
//! code) or, for a malformed command line, clap's usage error with the
//! command line's text cut short.

#[macro_use]
mod output;
mod bench;
mod dashboard;
mod database;
mod db;
mod failure;
mod jobs;
mod metrics;
mod ops;
mod schema;
mod shell;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use failure::Failure;

#[derive(Debug, Parser)]
#[command(
    name = "dawdle",
    version,
    about = "A PostgreSQL job queue for Rust services, schema-compatible with Procrastinate 3.x",
    after_help = "The jobs database is JOB_QUEUE_DATABASE_URL (or --database-url); when neither \
                  is set, an embedded PostgreSQL is started under .dawdle/ (or $DAWDLE_HOME).\n\n\
                  Durations are written like 90s, 10m, 1h 30m, 7d or 500ms; a number alone is \
                  seconds (days for purge --older-than)."
)]
struct Cli {
    /// Jobs database URL; overrides JOB_QUEUE_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or check the jobs database schema.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Defer a job and print its id.
    Defer(jobs::DeferArgs),
    /// List jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Run a worker (with the diagnostic tasks dawdle.noop, dawdle.sleep, dawdle.fail).
    Worker(worker::WorkerArgs),
    /// Queue health: counts by status and queue, stuck jobs, failure trend, verdict (exit 1 when unhealthy).
    Stats(ops::StatsArgs),
    /// Recent failed jobs with their last error.
    Failed(ops::FailedArgs),
    /// Everything about one job: fields, timings, history, errors with tracebacks.
    Job(ops::JobArgs),
    /// Retry one failed job.
    Retry(ops::RetryArgs),
    /// Retry every failed job (of one queue, or all).
    RetryFailed(ops::RetryFailedArgs),
    /// Delete finished jobs older than N days (or a duration such as 12h), in batches.
    Purge(ops::PurgeArgs),
    /// Put jobs stuck in doing back to todo (one job, or all older than a duration).
    ResetStalled(ops::ResetStalledArgs),
    /// Cancel a waiting job, or request the abort of a running one.
    Cancel(ops::CancelArgs),
    /// Delete every waiting job (of one queue, or all); needs --yes.
    ClearPending(ops::ClearPendingArgs),
    /// Pause, resume and list paused queues: workers claim no job of a paused queue.
    #[command(subcommand)]
    Queue(ops::queues::QueueCommand),
    /// Exit 0 when the database answers, the schema is current and a worker is alive.
    Healthcheck(ops::HealthcheckArgs),
    /// Run one of the runbook's monitoring queries (list them without a name).
    Check(ops::CheckArgs),
    /// Serve the web dashboard (overview, jobs, one job's story, failures, queues).
    Dashboard(dashboard::DashboardArgs),
    /// Prometheus metrics of the queue, read from the jobs database.
    #[command(subcommand)]
    Metrics(metrics::MetricsCommand),
    /// Interactive shell (Procrastinate's commands and ours); or run one command: `dawdle shell list_jobs status=failed`.
    Shell(shell::ShellArgs),
    /// Manage the embedded local PostgreSQL (used when no database URL is set).
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Measure the performance claims of the schema; prints numbers.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let cli = negative_numbers_as_values(Cli::command())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|error| bounded(error).exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("failed to start the async runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("dawdle: {}", failure.message());
            ExitCode::from(failure.code)
        }
    }
}

/// `--limit -1`, `retry -1`: a negative number where a value is expected is
/// that value, refused (or not) by the value's own check with its reason,
/// rather than taken for an unknown flag.
fn negative_numbers_as_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if arg.get_action().takes_values() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
        .mut_subcommands(negative_numbers_as_values)
}

/// Longest piece of the command line that a usage error quotes.
const MAX_QUOTED_ARG_CHARS: usize = 60;

/// Clap's usage error with the command line's text in it (an unknown
/// argument, a bad value, the tip that repeats them) cut to a short,
/// escaped excerpt: clap quotes them whole, however long.
fn bounded(mut error: clap::Error) -> clap::Error {
    use clap::builder::StyledStr;
    use clap::error::{ContextKind, ContextValue};
    // A connection string typed in the wrong place (`dawdle postgres://…`)
    // is quoted back with its secrets hidden, as in every other message.
    let hidden = |text: &str| {
        let lower = text.to_ascii_lowercase();
        if (text.contains("://") && text.contains('@')) || lower.contains("password") {
            dawdle::database::redact_password(text)
        } else {
            text.to_string()
        }
    };
    let cut = |text: &str| dawdle::text::excerpt(&hidden(text), MAX_QUOTED_ARG_CHARS);
    // A tip is a sentence around the argument: room for both.
    let cut_styled = |text: &StyledStr| {
        let plain = text.to_string();
        if plain.contains("://") || plain.to_ascii_lowercase().contains("password") {
            return StyledStr::from(cut(&plain));
        }
        if plain.chars().count() > 2 * MAX_QUOTED_ARG_CHARS {
            StyledStr::from(dawdle::text::excerpt(&plain, 2 * MAX_QUOTED_ARG_CHARS))
        } else {
            text.clone()
        }
    };
    let kinds = [
        ContextKind::InvalidArg,
        ContextKind::InvalidValue,
        ContextKind::InvalidSubcommand,
        ContextKind::Suggested,
    ];
    for kind in kinds {
        let short = match error.get(kind) {
            Some(ContextValue::String(text)) => ContextValue::String(cut(text)),
            Some(ContextValue::Strings(texts)) => {
                ContextValue::Strings(texts.iter().map(|text| cut(text)).collect())
            }
            Some(ContextValue::StyledStr(text)) => ContextValue::StyledStr(cut_styled(text)),
            Some(ContextValue::StyledStrs(texts)) => {
                ContextValue::StyledStrs(texts.iter().map(cut_styled).collect())
            }
            _ => continue,
        };
        error.insert(kind, short);
    }
    error
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Schema(command) => schema::run(cli.database_url.as_deref(), command).await,
        Command::Defer(args) => jobs::defer(cli.database_url.as_deref(), args).await,
        Command::Jobs(args) => jobs::list(cli.database_url.as_deref(), args).await,
        Command::Worker(args) => worker::run(cli.database_url.as_deref(), args).await,
        Command::Stats(args) => ops::stats(cli.database_url.as_deref(), args).await,
        Command::Failed(args) => ops::failed(cli.database_url.as_deref(), args).await,
        Command::Job(args) => ops::job(cli.database_url.as_deref(), args).await,
        Command::Retry(args) => ops::retry(cli.database_url.as_deref(), args).await,
        Command::RetryFailed(args) => ops::retry_failed(cli.database_url.as_deref(), args).await,
        Command::Purge(args) => ops::purge(cli.database_url.as_deref(), args).await,
        Command::ResetStalled(args) => ops::reset_stalled(cli.database_url.as_deref(), args).await,
        Command::Cancel(args) => ops::cancel(cli.database_url.as_deref(), args).await,
        Command::ClearPending(args) => ops::clear_pending(cli.database_url.as_deref(), args).await,
        Command::Queue(command) => ops::queues::run(cli.database_url.as_deref(), command).await,
        Command::Dashboard(args) => dashboard::run(cli.database_url.as_deref(), args).await,
        Command::Healthcheck(args) => ops::healthcheck(cli.database_url.as_deref(), args).await,
        Command::Check(args) => ops::check(cli.database_url.as_deref(), args).await,
        Command::Metrics(command) => metrics::run(cli.database_url.as_deref(), command).await,
        Command::Shell(args) => shell::run(cli.database_url.as_deref(), args).await,
        Command::Db(command) => db::run(command).await,
        Command::Bench(command) => bench::run(cli.database_url.as_deref(), command).await,
    }
}
