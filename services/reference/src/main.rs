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
    let _otlp = match init_logging(cli.settings.log_format) {
        Ok(otlp) => otlp,
        Err(error) => {
            eprintln!("error: failed to {error}");
            return ExitCode::FAILURE;
        }
    };
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
/// filters (default `info`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans
/// (requests, job attempts) also go to that OpenTelemetry collector until
/// the returned exporter is dropped.
fn init_logging(
    format: LogFormat,
) -> Result<Option<dawdle::telemetry::otlp::Otlp>, dawdle::telemetry::otlp::OtlpError> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let otlp = dawdle::telemetry::otlp::Otlp::from_env("reference-service")?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.with_ansi(std::io::stdout().is_terminal()).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otlp.as_ref().map(|otlp| otlp.layer()))
        .init();
    if let Some(otlp) = &otlp {
        tracing::info!(endpoint = %otlp.endpoint(), "sending spans over OTLP");
    }
    Ok(otlp)
}
