//! `dawdle bench`: measurements of the performance claims, which print
//! numbers next to their targets and leave the judgement to the reader.
//!
//! `triggers` isolates the schema's hot statements (statement-level against
//! per-row history triggers); `drain` times the whole path through a real
//! worker process. Both work in scratch databases on the jobs database's
//! server (`scratch`), which they create, check and drop. A rate below its
//! target is a result, not an error; a self-check that fails (jobs gone
//! missing, histories incomplete, variants that differ) is an error, since
//! the numbers would then describe other work than they claim.

mod adopt;
mod cpu;
mod drain;
mod drain_worker;
mod jobs_list;
mod latency;
mod scratch;
mod sql_floor;
mod trigger_events;
mod triggers;

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Compare batched claim+finish throughput: statement-level vs per-row history triggers.
    ///
    /// Creates two scratch databases on the jobs database's server (dawdle_bench_statement
    /// with the schema as shipped, dawdle_bench_row with per-row history triggers), checks
    /// that both record the same events, times draining jobs from each, and drops them.
    Triggers(triggers::TriggerBenchArgs),
    /// Time enqueueing jobs with defer_batch and draining them with one worker process.
    ///
    /// Creates a scratch database on the jobs database's server (dawdle_bench_drain); per
    /// round and concurrency, enqueues no-op jobs, runs `dawdle worker --one-shot` on them
    /// as a child process, checks that every job succeeded with its full history, and
    /// reports enqueue and drain rates and the worker's peak memory. Drops the database.
    Drain(drain::DrainBenchArgs),
    /// Time the jobs listing (the dashboard's Jobs page, `dawdle jobs`) on a large table.
    ///
    /// Creates a scratch database on the jobs database's server (dawdle_bench_jobs_list)
    /// with --jobs jobs in every status, reads each filter's first page (and pages deep
    /// down) --repeat times, reports medians, and drops the database.
    JobsList(jobs_list::JobsListBenchArgs),
    /// Time `dawdle schema adopt` on a large Procrastinate database in use.
    ///
    /// Creates a scratch database on the jobs database's server (dawdle_bench_adopt) with
    /// Procrastinate's schema (from --procrastinate-schema) and --jobs finished jobs with their
    /// history, runs Procrastinate-style workers and a deferring client on it, adopts it, and
    /// reports the adoption's time and longest lock and what the clients saw before, during
    /// and after. Checks that the history is unchanged. Drops the database.
    Adopt(adopt::AdoptBenchArgs),
    /// Time from defer to start when jobs arrive one at a time at a fixed rate.
    ///
    /// Creates a scratch database on the jobs database's server (dawdle_bench_latency), runs
    /// a `dawdle worker` process on it, defers one job per statement at each --rate for
    /// --seconds, optionally with a session left `idle in transaction` throughout, and
    /// reports each job's started_at - created_at as p50/p95/p99, for the whole run and its
    /// last 10 s. Drops the database.
    Latency(latency::LatencyBenchArgs),
}

/// Runs a `dawdle bench` command.
pub(crate) async fn run(
    explicit_url: Option<&str>,
    command: BenchCommand,
) -> Result<ExitCode, Failure> {
    match command {
        BenchCommand::Triggers(args) => triggers::run(explicit_url, args).await,
        BenchCommand::Drain(args) => drain::run(explicit_url, args).await,
        BenchCommand::JobsList(args) => jobs_list::run(explicit_url, args).await,
        BenchCommand::Adopt(args) => adopt::run(explicit_url, args).await,
        BenchCommand::Latency(args) => latency::run(explicit_url, args).await,
    }
}

/// Whether a session sits `idle in transaction` during a measurement, holding
/// a snapshot that keeps vacuum from removing what the measured work leaves
/// dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IdleTransaction {
    /// Nothing else on the database.
    Without,
    /// A session `idle in transaction` with a snapshot for the whole run.
    With,
}

impl IdleTransaction {
    pub(crate) fn word(self) -> &'static str {
        match self {
            IdleTransaction::Without => "without",
            IdleTransaction::With => "with",
        }
    }
}

/// Opens the idle transaction of [`IdleTransaction::With`] on a connection
/// of its own: a snapshot taken and held until the connection is closed.
async fn open_idle_transaction(
    options: &sqlx::postgres::PgConnectOptions,
) -> Result<sqlx::PgConnection, BenchError> {
    use sqlx::Connection;
    let mut session = sqlx::PgConnection::connect_with(options)
        .await
        .or_failed_to(|| "connect the idle session".to_string())?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM procrastinate_jobs")
        .execute(&mut session)
        .await
        .or_failed_to(|| "open the idle transaction".to_string())?;
    Ok(session)
}

/// Ends the idle transaction and its connection.
async fn close_idle_transaction(mut session: sqlx::PgConnection) -> Result<(), BenchError> {
    use sqlx::Connection;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut session)
        .await
        .or_failed_to(|| "end the idle transaction".to_string())?;
    session
        .close()
        .await
        .or_failed_to(|| "disconnect the idle session".to_string())
}

/// Prints a benchmark's report, as JSON or for people. The command succeeds
/// whatever the numbers say.
fn print_report<R: Serialize>(report: &R, json: bool, for_people: fn(&R)) -> ExitCode {
    if json {
        output::print_json(report);
    } else {
        for_people(report);
    }
    ExitCode::SUCCESS
}

/// Failures of the benchmarks, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("{action}: {source}")]
    Database {
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("apply the schema to {database}: {source}")]
    Schema {
        database: &'static str,
        #[source]
        source: dawdle::schema::SchemaError,
    },
    /// A self-check found the system under measurement misbehaving (the two
    /// variants differ, jobs went missing): timing it would measure
    /// something other than the work the numbers claim.
    #[error("{0}")]
    Check(String),
}

pub(crate) trait OrFailedTo<T> {
    fn or_failed_to(self, action: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> OrFailedTo<T> for Result<T, sqlx::Error> {
    fn or_failed_to(self, action: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Database {
            action: action(),
            source,
        })
    }
}

/// Drops repeated values from a list of cases to measure, keeping the first
/// of each: `--concurrency 10,10` would measure the same thing twice and
/// then report it once.
pub(crate) fn dedup<T: PartialEq + Copy>(values: &mut Vec<T>) {
    let mut seen = Vec::new();
    values.retain(|value| {
        let new = !seen.contains(value);
        seen.push(*value);
        new
    });
}

/// The median of `values`, or `None` when there are none. With an even count
/// it is the mean of the two middle values, so it never favours either half.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

/// The `fraction` (0 to 1) percentile of `sorted`, in ascending order,
/// interpolated between neighbours as PostgreSQL's `percentile_cont` does;
/// `None` when there are no values.
pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = fraction.clamp(0.0, 1.0) * last as f64;
    let (below, above) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[below] + (sorted[above] - sorted[below]) * (rank - below as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_of_an_odd_count_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[3.0, 100.0, 2.0, 1.0, 4.0]), Some(3.0));
    }

    #[test]
    fn percentiles_interpolate_between_neighbours_as_percentile_cont_does() {
        let sorted: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.99), Some(100.0));
        assert_eq!(percentile(&[10.0, 20.0], 0.25), Some(12.5));
        assert_eq!(percentile(&[10.0, 20.0], 1.0), Some(20.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[10.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
