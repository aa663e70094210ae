//! `reference-service`: the web service of the operations runbook. An axum
//! API over users and orders, whose domain events become jobs (welcome and
//! confirmation emails, CRM notifications) run by a dawdle worker in the
//! same process, or in a process of its own.
//!
//! See README.md beside this crate for the configuration and the delivery
//! guarantees (after-commit dispatch versus the transactional outbox).

mod api;
mod config;
mod databases;
mod domain;
mod events;
mod metrics;
mod outbox;
mod service;
mod shutdown;
mod tasks;
mod unit_of_work;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, Settings};

/// The runbook's reference service: an API whose domain events defer jobs
/// into a separate PostgreSQL jobs database.
#[derive(Debug, Parser)]
#[command(name = "reference-service", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Command {
    /// The API, with the worker in-process unless JOB_QUEUE_ENABLED=false
    /// (the default command).
    Serve,
    /// The worker alone, no API: run as many as the load needs.
    Worker,
    /// Apply the main database's migrations and the jobs schema, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.settings.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => service::serve(cli.settings).await,
        Command::Worker => service::work(cli.settings).await,
        Command::Migrate => service::migrate(cli.settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "service_failed");
            eprintln!("error: failed to {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stdout, where container runtimes collect them; `RUST_LOG`
/// filters (default `info`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}
