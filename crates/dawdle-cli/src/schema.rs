//! `dawdle schema apply|check`: bring the jobs database's schema to this
//! build's version, or say how far it is from it.

use std::process::ExitCode;

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
                outln!("fix: run ./scripts/jobs/apply-schema.sh (or `dawdle schema apply`)");
            }
            Ok(if report.is_current() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
