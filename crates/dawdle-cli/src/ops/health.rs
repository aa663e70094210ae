//! `dawdle healthcheck` for orchestrators, and `dawdle check`: the
//! runbook's monitoring queries by name.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dawdle::admin;
use dawdle::duration;
use dawdle::text::quote;

use crate::database::{jobs_database, jobs_pool};
use crate::output::{print_json, print_table};
use crate::Failure;

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
    let database = jobs_database(url).await?;
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
        outln!(
            "healthy: database reachable, schema current, {} live worker(s)",
            report.live_workers
        );
    } else {
        outln!("UNHEALTHY:");
        for problem in &report.problems {
            outln!("  - {problem}");
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
        .await
        .map_err(|error| check_failure(&name, error))?
        .expect("the name was checked above");
    if args.json {
        print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}", result.description);
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

/// A check that failed: what the row holds and how to find it when the
/// runbook's SQL cannot handle it, else the database's error.
pub(crate) fn check_failure(name: &str, error: sqlx::Error) -> Failure {
    match admin::explain_failure(name, &error) {
        Some(explained) => Failure::new(explained),
        None => Failure::from(error),
    }
}
