//! `dawdle worker`: a worker process with the built-in diagnostic tasks
//! (`dawdle.noop`, `dawdle.sleep`, `dawdle.fail`), for smoke tests,
//! benchmarks, alert drills, and running jobs outside an application.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dawdle::duration;
use dawdle::{Registry, Worker, WorkerConfig};

use crate::database::{jobs_database, worker_pool};
use crate::{output, Failure};

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Queues to work on, comma-separated (default: every queue).
    #[arg(long, value_delimiter = ',', value_name = "QUEUE,...", value_parser = queue_name)]
    queues: Option<Vec<String>>,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Most jobs claimed ahead of the free slots and held ready, when jobs
    /// finish faster than a claim round trip (0: claim only for free slots).
    #[arg(long, default_value_t = dawdle::worker::DEFAULT_PREFETCH as u32, value_name = "JOBS",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    prefetch: u32,
    /// Exit once no runnable job is left; the exit code is 1 if any job failed.
    #[arg(long)]
    one_shot: bool,
    /// Time between claims when no notification arrives.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = duration::parse)]
    poll_interval: Duration,
    /// Time running jobs get to finish on SIGINT/SIGTERM before they are put back.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = duration::parse)]
    shutdown_timeout: Duration,
    /// Defer a job on a cron schedule: `TASK=CRON`, e.g.
    /// `dawdle.remove_old_jobs=0 3 * * *` or `dawdle.noop=* * * * * */10` (a
    /// sixth field is seconds). Repeatable.
    #[arg(long, value_name = "TASK=CRON")]
    periodic: Vec<String>,
    /// Time zone of the --periodic schedules (e.g. Europe/Paris).
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    time_zone: String,
    /// Delete finished jobs right away: never (keep them, the default), successful, always.
    #[arg(long, value_enum, default_value_t = RetentionArg::Never)]
    delete_finished: RetentionArg,
    /// Time between heartbeats (and stalled-worker checks).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration::parse)]
    heartbeat_interval: Duration,
    /// A worker silent this long is dead: pruned, its jobs put back.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = duration::parse)]
    stalled_after: Duration,
    /// Time a job gets to stop by itself after an abort request.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration::parse)]
    abort_grace: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DAWDLE_LOG_FORMAT")]
    log_format: LogFormat,
    /// At exit, print what the worker did (and its peak memory) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// `off` commits the worker's claims and outcomes without waiting for
    /// the WAL to reach disk; a PostgreSQL crash may then lose the last few
    /// hundred milliseconds of them, and those jobs run again.
    #[arg(long, value_enum, default_value_t = SynchronousCommit::On, value_name = "on|off")]
    synchronous_commit: SynchronousCommit,
    /// The jobs database URL leads to PgBouncer in transaction pooling: no
    /// LISTEN (new jobs are found by polling every --poll-interval, abort
    /// requests every --heartbeat-interval), and every statement of the
    /// worker in a transaction of its own. Not with --synchronous-commit off.
    #[arg(
        long,
        env = "JOB_QUEUE_PGBOUNCER",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pgbouncer: bool,
    /// With --pgbouncer: a URL of the same database that does not go
    /// through PgBouncer, used only to LISTEN, so that new jobs, abort
    /// requests and paused queues reach the worker within milliseconds
    /// instead of at the next poll or heartbeat. The worker holds one
    /// connection to it; if it cannot connect it polls and retries, logging
    /// why.
    #[arg(
        long,
        env = "JOB_QUEUE_LISTEN_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    listen_url: Option<String>,
    /// Serve the worker's metrics in Prometheus' text format at
    /// http://ADDR/metrics (e.g. 127.0.0.1:9187). Off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RetentionArg {
    Never,
    Successful,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SynchronousCommit {
    On,
    Off,
}

impl SynchronousCommit {
    /// The word of `--synchronous-commit`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr; `RUST_LOG` filters (default `info`). With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans also go to that OpenTelemetry
/// collector until the returned exporter is dropped.
pub(crate) fn init_logging(
    format: LogFormat,
) -> Result<Option<dawdle::telemetry::otlp::Otlp>, Failure> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let otlp = dawdle::telemetry::otlp::Otlp::from_env("dawdle-worker")
        .map_err(|error| Failure::new(format!("failed to {error}")))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
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

pub(crate) async fn run(explicit_url: Option<&str>, args: WorkerArgs) -> Result<ExitCode, Failure> {
    let _otlp = init_logging(args.log_format)?;
    if let Some(address) = args.metrics_addr {
        crate::metrics::install_exporter(address, "--metrics-addr")?;
        dawdle::worker::metrics::describe();
    }
    let time_zone: chrono_tz::Tz = args.time_zone.parse().map_err(|_| {
        Failure::new(format!(
            "failed to start the worker: unknown time zone {}; use a name such as UTC or \
             Europe/Paris",
            dawdle::text::quote(&args.time_zone)
        ))
    })?;
    let mut periodic = Vec::new();
    for declaration in &args.periodic {
        let Some((task, cron)) = declaration.split_once('=') else {
            return Err(Failure::new(format!(
                "failed to start the worker: --periodic {} is not TASK=CRON \
                 (e.g. dawdle.remove_old_jobs=0 3 * * *)",
                dawdle::text::quote(declaration)
            )));
        };
        // A name the database would refuse fails now, not at every tick.
        dawdle::NewJob::new(task.trim(), serde_json::json!({}))
            .and_then(|job| job.validate())
            .map_err(|error| {
                Failure::new(format!("failed to start the worker: --periodic: {error}"))
            })?;
        let schedule = dawdle::cron::Schedule::parse_in(cron.trim(), time_zone)
            .map_err(|error| Failure::new(format!("failed to start the worker: {error}")))?;
        let mut entry = dawdle::Periodic::new(task.trim(), schedule);
        // Several schedules of one task need their own ids to be told apart.
        entry.periodic_id = cron.trim().to_string();
        periodic.push(entry);
    }
    if args.pgbouncer && matches!(args.synchronous_commit, SynchronousCommit::Off) {
        return Err(Failure::new(
            "failed to start the worker: --synchronous-commit off cannot be used with \
             --pgbouncer (PgBouncer refuses the startup parameter that carries it); \
             set synchronous_commit for the database or role instead",
        ));
    }
    let listen_pool = match &args.listen_url {
        None => None,
        Some(_) if !args.pgbouncer => {
            return Err(Failure::new(
                "failed to start the worker: --listen-url is for a worker behind PgBouncer; \
                 add --pgbouncer, or drop --listen-url (without PgBouncer the worker \
                 LISTENs on its own connections)",
            ))
        }
        Some(url) => Some(
            dawdle::JobsDatabase::from_url(url)
                .map_err(|error| {
                    Failure::new(format!("failed to start the worker: --listen-url: {error}"))
                })?
                .listen_pool(),
        ),
    };
    let config = WorkerConfig::default()
        .pgbouncer(args.pgbouncer)
        .queues(args.queues)
        .concurrency(args.concurrency as usize)
        .prefetch(args.prefetch as usize)
        .poll_interval(args.poll_interval.max(Duration::from_millis(10)))
        .shutdown_timeout(args.shutdown_timeout)
        .one_shot(args.one_shot)
        .heartbeat_interval(args.heartbeat_interval.max(Duration::from_millis(50)))
        .stalled_after(args.stalled_after)
        .abort_grace(args.abort_grace)
        .retention(match args.delete_finished {
            RetentionArg::Never => dawdle::Retention::KeepAll,
            RetentionArg::Successful => dawdle::Retention::DeleteSuccessful,
            RetentionArg::Always => dawdle::Retention::DeleteAll,
        });
    // Claims, completions and heartbeats each use a connection; tasks may
    // borrow a few more to defer follow-up jobs. A database that is not up
    // yet (services starting together) is waited for, not a reason to exit.
    let pool = loop {
        let pool = async {
            let mut database = jobs_database(explicit_url).await?;
            if let SynchronousCommit::Off = args.synchronous_commit {
                database = database.with_synchronous_commit_off();
            }
            if args.pgbouncer {
                database = database.behind_pgbouncer();
            }
            worker_pool(database, 8).await
        };
        match pool.await {
            Ok(pool) => break pool,
            Err(failure) if failure.is_unreachable() => {
                tracing::warn!(error = %failure.message(), "the jobs database is unreachable; retrying in 2 s");
                tokio::select! {
                    _ = shutdown_signal() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(failure) => return Err(failure),
        }
    };
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry.register::<dawdle::builtin::RemoveOldJobs>();
    for entry in periodic {
        registry.add_periodic(entry);
    }
    let mut worker = Worker::builder(pool, registry).config(config);
    if let Some(listen_pool) = listen_pool {
        worker = worker.listen_through(listen_pool);
    }
    let worker = worker
        .build()
        .map_err(|error| Failure::from_error(&error))?;
    let report = worker
        .run(shutdown_signal())
        .await
        .map_err(|error| Failure::from_error(&error))?;
    if args.json {
        output::print_json(&serde_json::json!({
            "succeeded": report.succeeded,
            "retried": report.retried,
            "failed": report.failed,
            "interrupted": report.interrupted,
            "refused": report.refused,
            "peak_rss_kb": peak_rss_kb(),
        }));
    }
    Ok(
        if args.one_shot && (report.failed > 0 || report.refused > 0) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only SIGINT stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
    }
}

/// The process's peak resident memory (VmHWM), in KiB, where /proc has it.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A queue of `--queues`: a name a job can have. An empty one, from a
/// stray comma, would have the worker wait for jobs that cannot exist.
fn queue_name(name: &str) -> Result<String, String> {
    match name.chars().count() {
        0 => Err("a queue name is empty (list the queues separated by commas: a,b)".into()),
        129.. => Err("a queue name is longer than 128 characters, the limit".into()),
        _ => Ok(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        args: WorkerArgs,
    }

    fn parse(args: &[&str]) -> WorkerArgs {
        let mut argv = vec!["worker"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).unwrap().args
    }

    /// The flags' defaults are written twice, here for `--help` and in
    /// `WorkerConfig::default`, where the library's defaults live.
    #[test]
    fn the_flags_default_to_the_library_defaults() {
        let args = parse(&[]);
        let config = WorkerConfig::default();
        assert_eq!(args.poll_interval, config.poll_interval);
        assert_eq!(args.shutdown_timeout, config.shutdown_timeout);
        assert_eq!(args.heartbeat_interval, config.heartbeat_interval);
        assert_eq!(args.stalled_after, config.stalled_after);
        assert_eq!(args.abort_grace, config.abort_grace);
        assert_eq!(args.concurrency as usize, config.concurrency);
        assert_eq!(args.prefetch as usize, config.prefetch);
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let args = parse(&[
            "--poll-interval",
            "500ms",
            "--shutdown-timeout",
            "0.5",
            "--heartbeat-interval",
            "1m",
            "--stalled-after",
            "1h 30m",
            "--abort-grace",
            "45",
        ]);
        assert_eq!(args.poll_interval, Duration::from_millis(500));
        assert_eq!(args.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(args.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(args.stalled_after, Duration::from_secs(5_400));
        assert_eq!(args.abort_grace, Duration::from_secs(45));
        let error = Probe::try_parse_from(["worker", "--stalled-after=-5"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("is negative"), "{error}");
    }
}
