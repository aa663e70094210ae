//! `GET /metrics`: the in-process worker's metrics and the jobs database's
//! queue gauges, in Prometheus' text format, through dawdle's recorder.
//! This is how an application mounts dawdle's metrics in its own axum API.
//!
//! The worker records into the process's recorder; the queue gauges are
//! read every 15 s and each reading is rendered alone, so a queue that
//! has no job left is gone from the page at the next reading instead of
//! staying at 0 for as long as the process lives.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use dawdle::admin::{queue_gauges, GaugeRecorder, QueueGauges};
use dawdle::worker::metrics::{describe, DURATION_BUCKETS, SIZE_BUCKETS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tracing::warn;

use crate::api::AppState;
use crate::shutdown::Signal;

/// How often the queue gauges are read from the jobs database (and the
/// recorder's upkeep runs).
const GAUGE_REFRESH: Duration = Duration::from_secs(15);

/// What `GET /metrics` renders.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// The process's recorder: the worker's metrics.
    handle: PrometheusHandle,
    /// The exposition of the last reading of the queue gauges.
    gauges: Arc<RwLock<String>>,
}

/// Installs the process's metrics recorder; `None` (with a warning) when
/// one is installed already.
pub(crate) fn install() -> Option<Metrics> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Suffix("_jobs".into()), SIZE_BUCKETS)
        })
        .and_then(PrometheusBuilder::install_recorder);
    match recorder {
        Ok(handle) => {
            describe();
            Some(Metrics {
                handle,
                gauges: Arc::default(),
            })
        }
        Err(error) => {
            warn!(error = %error, "metrics are off: a metrics recorder could not be installed");
            None
        }
    }
}

/// Every 15 s until `stop` fires: reads the queue gauges and renders the
/// reading alone (a failed reading is logged, keeps the last one and shows
/// as `dawdle_queue_gauges_up 0`), and runs the recorder's upkeep, which
/// drains histogram samples that would otherwise pile up between scrapes
/// (`install_recorder` leaves that to its caller).
pub(crate) async fn maintain(
    metrics: Metrics,
    jobs: PgPool,
    stalled_after: Duration,
    stop: Signal,
) {
    let mut last: Option<QueueGauges> = None;
    let stop = stop.fired();
    tokio::pin!(stop);
    loop {
        let up = match queue_gauges(&jobs, stalled_after).await {
            Ok(reading) => {
                last = Some(reading);
                true
            }
            Err(error) => {
                warn!(error = %error, "failed to read the queue gauges; retrying");
                false
            }
        };
        let recorder = PrometheusBuilder::new().build_recorder();
        GaugeRecorder::record_reading_into(&recorder, last.as_ref(), up);
        *metrics
            .gauges
            .write()
            .unwrap_or_else(PoisonError::into_inner) = recorder.handle().render();
        metrics.handle.run_upkeep();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
        }
    }
}

/// The handler of `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(metrics) => {
            let mut page = metrics.handle.render();
            page.push_str(
                &metrics
                    .gauges
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page).into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
    }
}
