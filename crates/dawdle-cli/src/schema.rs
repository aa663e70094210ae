//! `dawdle schema apply|check|adopt`: bring the jobs database's schema to
//! this build's version, say how far it is from it, or convert a database
//! Procrastinate created.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::database::jobs_database;
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Apply pending migrations (idempotent; safe when run concurrently).
    Apply,
    /// Exit 0 when the schema is current; otherwise exit 1 and say what is missing.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert, in place, a database created by Procrastinate 3.x into dawdle's
    /// schema, keeping every job, event, lock and periodic defer; workers may
    /// keep running. Resumable: run it again after an interruption.
    Adopt(AdoptArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdoptArgs {
    /// Print the plan and the row counts, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// Jobs whose timestamps are filled per transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    batch_size: i64,
    /// Longest wait for a table lock before letting go and trying again
    /// (workers queue behind a waiting lock, so keep it short).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = dawdle::duration::parse)]
    lock_timeout: Duration,
    /// Tries of each locking step before giving up.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    lock_attempts: u32,
}

pub(crate) async fn run(
    explicit_url: Option<&str>,
    command: SchemaCommand,
) -> Result<ExitCode, Failure> {
    let database = jobs_database(explicit_url).await?;
    let pool = database.connect(1).await?;
    let mut conn = pool.acquire().await?;
    match command {
        SchemaCommand::Apply => {
            let report = dawdle::schema::apply(&mut conn).await?;
            if report.applied.is_empty() {
                outln!(
                    "schema is current (version {}); nothing to apply",
                    report.version
                );
            } else {
                for (version, name) in &report.applied {
                    outln!("applied migration {version:04}_{name}");
                }
                outln!("schema is current (version {})", report.version);
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
                    "fix": report.fix,
                    "notes": report.notes,
                }));
            } else if report.is_current() {
                outln!("schema is current (version {})", report.version);
            } else {
                outln!(
                    "schema is NOT current (database at version {}, this build expects {}):",
                    report.version,
                    report.expected_version
                );
                for problem in &report.problems {
                    outln!("  - {problem}");
                }
                outln!("fix: {}", report.fix);
            }
            if !json {
                for note in &report.notes {
                    outln!("note: {note}");
                }
            }
            Ok(if report.is_current() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        SchemaCommand::Adopt(args) => adopt(&mut conn, args).await,
    }
}

async fn adopt(conn: &mut sqlx::PgConnection, args: AdoptArgs) -> Result<ExitCode, Failure> {
    use dawdle::schema::adopt::{self, Source};
    let options = adopt::AdoptOptions {
        batch_size: args.batch_size,
        lock_timeout: args.lock_timeout,
        lock_attempts: args.lock_attempts,
    };
    if args.dry_run {
        let plan = adopt::plan(conn, &options).await?;
        if args.json {
            output::print_json(&plan);
            return Ok(ExitCode::SUCCESS);
        }
        if plan.steps.is_empty() {
            outln!(
                "nothing to adopt: this database has {}",
                plan.source.describe()
            );
            return Ok(match plan.source {
                Source::Dawdle => ExitCode::SUCCESS,
                _ => {
                    outln!("{}", plan.source.remedy());
                    ExitCode::FAILURE
                }
            });
        }
        outln!(
            "dry run: nothing is changed. This database has {}.",
            plan.source.describe()
        );
        let counts = &plan.counts;
        outln!("rows the adoption keeps:");
        outln!("  jobs: {}", counts.jobs());
        for (status, n) in &counts.jobs_by_status {
            outln!("    {status}: {n}");
        }
        outln!("  events: {}", counts.events());
        for (kind, n) in &counts.events_by_type {
            outln!("    {kind}: {n}");
        }
        outln!("  locks held by running jobs: {}", counts.held_locks);
        outln!("  periodic defers: {}", counts.periodic_defers);
        outln!("  registered workers: {}", counts.workers);
        outln!("plan:");
        for (i, step) in plan.steps.iter().enumerate() {
            outln!(
                "  {}. {}{}: {}",
                i + 1,
                step.name,
                if step.done { " (done)" } else { "" },
                step.action
            );
        }
        outln!("run `dawdle schema adopt` without --dry-run to carry it out");
        return Ok(ExitCode::SUCCESS);
    }
    let began = Instant::now();
    let mut progress = |line: String| {
        outln!("[{:>6.1}s] {line}", began.elapsed().as_secs_f64());
    };
    let report = adopt::adopt(conn, &options, &mut progress).await?;
    if report.backfilled > 0 || !matches!(report.source, Source::Dawdle) {
        outln!(
            "done: {} jobs' timestamps filled; the schema is current (version {})",
            report.backfilled,
            dawdle::schema::latest_version()
        );
    }
    Ok(ExitCode::SUCCESS)
}
