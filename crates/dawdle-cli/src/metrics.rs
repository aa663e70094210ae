//! Prometheus metrics: the exporter the worker serves its own metrics with
//! (`worker --metrics-addr`), and `dawdle metrics serve`, a sidecar serving
//! the queue gauges read from the jobs database.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::header;
use clap::{Args, Subcommand};
use dawdle::admin::{queue_gauges, GaugeRecorder, QueueGauges};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::database::jobs_pool_sized;
use crate::failure::Failure;
use crate::worker::{init_logging, shutdown_signal, LogFormat};

#[derive(Debug, Subcommand)]
pub(crate) enum MetricsCommand {
    /// Serve the queue gauges (jobs by queue and status, the oldest waiting
    /// job's age, stuck jobs, failures, live workers) at http://BIND/metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to serve /metrics on.
    #[arg(long, default_value = "127.0.0.1:9189", value_name = "ADDR")]
    bind: SocketAddr,
    /// How often the gauges are read from the database (one statement).
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = dawdle::duration::parse)]
    refresh: Duration,
    /// A worker silent this long is not counted as live.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = dawdle::duration::parse)]
    stalled_after: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DAWDLE_LOG_FORMAT")]
    log_format: LogFormat,
}

pub(crate) async fn run(
    explicit_url: Option<&str>,
    command: MetricsCommand,
) -> Result<ExitCode, Failure> {
    let MetricsCommand::Serve(args) = command;
    let _otlp = init_logging(args.log_format)?;
    let exposition = serve_exposition(args.bind).await?;
    let refresh = args.refresh.max(Duration::from_millis(100));
    // The last good reading: shown (with `dawdle_queue_gauges_up 0`) while
    // the database cannot be read.
    let mut last: Option<QueueGauges> = None;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut pool = None;
    loop {
        if pool.is_none() {
            match jobs_pool_sized(explicit_url, 1).await {
                Ok(connected) => pool = Some(connected),
                // A malformed URL or a database without the schema does not
                // heal by waiting: exit, as the worker and the dashboard do.
                Err(failure) if !failure.is_unreachable() => return Err(failure),
                Err(failure) => {
                    tracing::warn!(error = %failure.message(), retry_in_s = refresh.as_secs_f64(),
                                   "cannot read the queue gauges: the jobs database is unavailable; retrying");
                }
            }
        }
        let mut up = false;
        if let Some(pool) = &pool {
            match queue_gauges(pool, args.stalled_after).await {
                Ok(gauges) => {
                    last = Some(gauges);
                    up = true;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "failed to read the queue gauges; retrying");
                }
            }
        }
        let rendered = render(last.as_ref(), up);
        *exposition.write().unwrap_or_else(PoisonError::into_inner) = rendered;
        tokio::select! {
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(refresh) => {}
        }
    }
}

/// The exposition of one reading, recorded into a recorder of its own: the
/// series are exactly the queues of that reading (the busiest
/// [`dawdle::admin::gauges::MAX_QUEUES`], `other`, the paused ones), so a
/// queue gone from the database is gone from /metrics at the next refresh.
fn render(reading: Option<&QueueGauges>, up: bool) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    GaugeRecorder::record_reading_into(&recorder, reading, up);
    recorder.handle().render()
}

/// Serves the latest exposition at `address`/metrics; binds before it
/// returns, so a taken address is a clear error at start.
async fn serve_exposition(address: SocketAddr) -> Result<Arc<RwLock<String>>, Failure> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            Failure::new(format!(
                "failed to serve metrics on {address}: {error}; choose a free address with --bind"
            ))
        })?;
    let exposition = Arc::new(RwLock::new(String::new()));
    let shared = Arc::clone(&exposition);
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = shared
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(error = %error, "the metrics listener stopped");
        }
    });
    tracing::info!(address = %address, "serving metrics at /metrics");
    Ok(exposition)
}

/// Installs the Prometheus recorder and its HTTP listener on `address`
/// (given with `flag`): histograms as buckets; the exporter binds before it
/// returns, so a taken address is a clear error at start.
pub(crate) fn install_exporter(address: SocketAddr, flag: &str) -> Result<(), Failure> {
    use dawdle::worker::metrics::{DURATION_BUCKETS, SIZE_BUCKETS};
    use metrics_exporter_prometheus::Matcher;
    PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Suffix("_jobs".into()), SIZE_BUCKETS)
        })
        .and_then(PrometheusBuilder::install)
        .map_err(|error| {
            Failure::new(format!(
                "failed to serve metrics on {address}: {error}; choose a free address with {flag}"
            ))
        })?;
    tracing::info!(address = %address, "serving metrics at /metrics");
    Ok(())
}
