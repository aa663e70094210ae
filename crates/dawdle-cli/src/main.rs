//! The `dawdle` command: schema management, deferring jobs, the embedded
//! local PostgreSQL, and (as they land) the worker and the runbook's
//! operations. Every command here is a thin layer over the `dawdle` library.

mod bench;
mod bench_drain;
mod ops;
mod output;
mod shell;
mod worker;

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use dawdle::admin::{self, JobFilter};
use dawdle::database::{default_home, DATABASE_URL_ENV};
use dawdle::local_pg::{LocalCluster, LocalClusterConfig};
use dawdle::{DeferError, JobStatus, JobsDatabase, NewJob};

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
    Schema(SchemaCommand),
    /// Defer a job and print its id.
    Defer(DeferArgs),
    /// List jobs, newest first.
    Jobs(JobsArgs),
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
    /// Exit 0 when the database answers, the schema is current and a worker is alive.
    Healthcheck(ops::HealthcheckArgs),
    /// Run one of the runbook's monitoring queries (list them without a name).
    Check(ops::CheckArgs),
    /// Interactive shell (Procrastinate's commands and ours); or run one command: `dawdle shell list_jobs status=failed`.
    Shell(shell::ShellArgs),
    /// Manage the embedded local PostgreSQL (used when no database URL is set).
    #[command(subcommand)]
    Db(DbCommand),
    /// Measure the performance claims of the schema; prints numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Compare batched claim+finish throughput: statement-level vs per-row history triggers.
    ///
    /// Creates two scratch databases on the jobs database's server (dawdle_bench_statement
    /// with the schema as shipped, dawdle_bench_row with per-row history triggers), checks
    /// that both record the same events, times draining jobs from each, and drops them.
    Triggers(bench::TriggerBenchArgs),
    /// Time enqueueing jobs with defer_batch and draining them with one worker process.
    ///
    /// Creates a scratch database on the jobs database's server (dawdle_bench_drain); per
    /// round and concurrency, enqueues no-op jobs, runs `dawdle worker --one-shot` on them
    /// as a child process, checks that every job succeeded with its full history, and
    /// reports enqueue and drain rates and the worker's peak memory. Drops the database.
    Drain(bench_drain::DrainBenchArgs),
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Apply pending migrations (idempotent; safe when run concurrently).
    Apply,
    /// Exit 0 when the schema is current; otherwise exit 1 and say what is missing.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DeferArgs {
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
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    at: Option<DateTime<Utc>>,
    /// Run no earlier than this long from now (90s, 1h 30m; a number alone is seconds).
    #[arg(long = "in", value_name = "DURATION", value_parser = dawdle::duration::parse)]
    delay: Option<std::time::Duration>,
    /// Print the job as JSON instead of its id.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JobsArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    task: Option<String>,
    /// todo, doing, succeeded, failed, cancelled, aborted.
    #[arg(long, value_parser = parse_status)]
    status: Option<JobStatus>,
    #[arg(long)]
    lock: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create (if needed) and start the embedded PostgreSQL, and its `jobs` database.
    Start,
    /// Stop the embedded PostgreSQL.
    Stop,
    /// Say whether the embedded PostgreSQL is running, and where.
    Status,
    /// Print the jobs database URL of the embedded PostgreSQL (starting it if needed).
    Url,
}

/// A failure that ends the command: its message and exit code.
struct Failure {
    message: String,
    code: u8,
    /// The database could not be reached (worth retrying for a long-running command).
    unreachable: bool,
}

impl Failure {
    fn message(&self) -> &str {
        &self.message
    }

    fn is_unreachable(&self) -> bool {
        self.unreachable
    }

    /// An operational failure (exit 1); `error` is printed with its causes.
    fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = format!("failed to {error}");
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(&format!("\n  caused by: {text}"));
            }
            source = cause.source();
        }
        Self {
            message,
            code: 1,
            unreachable: false,
        }
    }

    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
            unreachable: false,
        }
    }
}

macro_rules! impl_failure_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Failure::from_error(&error)
            }
        }
    )*};
}
impl From<dawdle::ConnectError> for Failure {
    fn from(error: dawdle::ConnectError) -> Self {
        let unreachable = matches!(error, dawdle::ConnectError::Unreachable { .. });
        Failure {
            unreachable,
            ..Failure::from_error(&error)
        }
    }
}

impl_failure_from!(
    dawdle::schema::SchemaError,
    DeferError,
    dawdle::local_pg::LocalPgError
);

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::new(format!("failed to query the jobs database: {error}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|error| bounded(error).exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("failed to start the async runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("dawdle: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Longest piece of the command line that a usage error quotes.
const MAX_QUOTED_ARG_CHARS: usize = 60;

/// Clap's usage error with the command line's text in it (an unknown
/// argument, a bad value, the tip that repeats them) cut to a short,
/// escaped excerpt: clap quotes them whole, however long.
fn bounded(mut error: clap::Error) -> clap::Error {
    use clap::builder::StyledStr;
    use clap::error::{ContextKind, ContextValue};
    let cut = |text: &str| dawdle::text::excerpt(text, MAX_QUOTED_ARG_CHARS);
    // A tip is a sentence around the argument: room for both.
    let cut_styled = |text: &StyledStr| {
        let plain = text.to_string();
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

/// `--status`: clap's error quotes the value already, so this does not.
fn parse_status(text: &str) -> Result<JobStatus, String> {
    text.parse().map_err(|_| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", known.join(", "))
    })
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Schema(command) => schema(cli.database_url.as_deref(), command).await,
        Command::Defer(args) => defer(cli.database_url.as_deref(), args).await,
        Command::Jobs(args) => jobs(cli.database_url.as_deref(), args).await,
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
        Command::Healthcheck(args) => ops::healthcheck(cli.database_url.as_deref(), args).await,
        Command::Check(args) => ops::check(cli.database_url.as_deref(), args).await,
        Command::Shell(args) => shell::run(cli.database_url.as_deref(), args).await,
        Command::Db(command) => db(command).await,
        Command::Bench(BenchCommand::Triggers(args)) => {
            bench::triggers(cli.database_url.as_deref(), args).await
        }
        Command::Bench(BenchCommand::Drain(args)) => {
            bench_drain::drain(cli.database_url.as_deref(), args).await
        }
    }
}

/// Resolves the jobs database, saying so when it falls back to the embedded one.
async fn jobs_database(explicit_url: Option<&str>) -> Result<JobsDatabase, Failure> {
    let database = JobsDatabase::resolve(explicit_url).await?;
    if database.is_embedded() {
        eprintln!(
            "dawdle: {DATABASE_URL_ENV} is not set; using the embedded PostgreSQL at {}",
            database.display_url()
        );
    }
    Ok(database)
}

/// A pool on the jobs database, after checking that the schema is there.
async fn jobs_pool(explicit_url: Option<&str>) -> Result<sqlx::PgPool, Failure> {
    jobs_pool_sized(explicit_url, 1).await
}

/// [`jobs_pool`] with up to `max_connections`.
async fn jobs_pool_sized(
    explicit_url: Option<&str>,
    max_connections: u32,
) -> Result<sqlx::PgPool, Failure> {
    let database = jobs_database(explicit_url).await?;
    let pool = database.connect(max_connections).await?;
    let mut conn = pool.acquire().await?;
    dawdle::schema::ensure_present(&mut conn).await?;
    drop(conn);
    Ok(pool)
}

async fn schema(explicit_url: Option<&str>, command: SchemaCommand) -> Result<ExitCode, Failure> {
    let database = jobs_database(explicit_url).await?;
    let pool = database.connect(1).await?;
    let mut conn = pool.acquire().await?;
    match command {
        SchemaCommand::Apply => {
            let report = dawdle::schema::apply(&mut conn).await?;
            if report.applied.is_empty() {
                println!(
                    "schema is current (version {}); nothing to apply",
                    report.version
                );
            } else {
                for (version, name) in &report.applied {
                    println!("applied migration {version:04}_{name}");
                }
                println!("schema is current (version {})", report.version);
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Check { json } => {
            let report = dawdle::schema::check(&mut conn).await?;
            if json {
                output::print_json(&serde_json::json!({
                    "current": report.is_current(),
                    "version": report.version,
                    "expected_version": report.expected_version,
                    "problems": report.problems,
                }));
            } else if report.is_current() {
                println!("schema is current (version {})", report.version);
            } else {
                println!(
                    "schema is NOT current (database at version {}, this build expects {}):",
                    report.version, report.expected_version
                );
                for problem in &report.problems {
                    println!("  - {problem}");
                }
                println!("fix: run ./scripts/jobs/apply-schema.sh (or `dawdle schema apply`)");
            }
            Ok(if report.is_current() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn defer(explicit_url: Option<&str>, args: DeferArgs) -> Result<ExitCode, Failure> {
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
    // Reject bad input before touching (or starting) any database.
    job.validate()
        .map_err(|error| Failure::from_error(&DeferError::from(error)))?;
    let pool = jobs_pool(explicit_url).await?;
    let id = dawdle::defer(&pool, &job).await?;
    if args.json {
        let job = admin::get_job(&pool, id).await?;
        output::print_json(&job);
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn jobs(explicit_url: Option<&str>, args: JobsArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(explicit_url).await?;
    let filter = JobFilter {
        queue: args.queue,
        task: args.task,
        status: args.status,
        lock: args.lock,
        limit: Some(args.limit),
        ..JobFilter::default()
    };
    let jobs = admin::list_jobs(&pool, &filter).await?;
    if args.json {
        output::print_json(&jobs);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
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
                match &job.args_error {
                    Some(why) => format!("(unreadable) {why}"),
                    None => job.args.to_string(),
                },
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

async fn db(command: DbCommand) -> Result<ExitCode, Failure> {
    let home = default_home();
    match command {
        DbCommand::Start | DbCommand::Url => {
            let database = JobsDatabase::embedded(home).await?;
            if matches!(command, DbCommand::Start) {
                println!("embedded PostgreSQL is running; jobs database URL:");
            }
            println!("{}", database.url());
        }
        DbCommand::Stop => {
            let cluster = LocalCluster::new(LocalClusterConfig::persistent(home))?;
            let stopped = cluster.clone();
            let was_running = tokio::task::spawn_blocking(move || -> Result<bool, Failure> {
                let running = stopped.is_running()?;
                stopped.stop()?;
                Ok(running)
            })
            .await
            .expect("stopping the local PostgreSQL panicked")?;
            if was_running {
                println!(
                    "stopped the embedded PostgreSQL in {}",
                    cluster.base_dir().display()
                );
            } else {
                println!(
                    "the embedded PostgreSQL in {} was not running",
                    cluster.base_dir().display()
                );
            }
        }
        DbCommand::Status => {
            let cluster = LocalCluster::new(LocalClusterConfig::persistent(home))?;
            let probed = cluster.clone();
            let running = tokio::task::spawn_blocking(move || probed.is_running())
                .await
                .expect("checking the local PostgreSQL panicked")?;
            if running {
                println!(
                    "running: {} (jobs database URL: {})",
                    cluster.base_dir().display(),
                    cluster.url(dawdle::database::EMBEDDED_JOBS_DATABASE)
                );
            } else {
                println!("not running: {}", cluster.base_dir().display());
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
