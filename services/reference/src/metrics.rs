//! `GET /metrics`: the in-process worker's metrics and the jobs database's
//! queue gauges, in Prometheus' text format, through dawdle's recorder.
//! This is how an application mounts dawdle's metrics in its own axum API.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use dawdle::admin::GaugeRecorder;
use dawdle::worker::metrics::{describe, DURATION_BUCKETS, SIZE_BUCKETS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tracing::warn;

use crate::api::AppState;
use crate::shutdown::Signal;

/// How often the queue gauges are read from the jobs database (and the
/// recorder's upkeep runs).
const GAUGE_REFRESH: Duration = Duration::from_secs(15);

/// Installs the process's metrics recorder; `None` (with a warning) when
/// one is installed already.
pub(crate) fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Suffix("_jobs".into()), SIZE_BUCKETS)
        })
        .and_then(PrometheusBuilder::install_recorder);
    match recorder {
        Ok(handle) => {
            describe();
            GaugeRecorder::describe();
            Some(handle)
        }
        Err(error) => {
            warn!(error = %error, "metrics are off: a metrics recorder could not be installed");
            None
        }
    }
}

/// Every 15 s until `stop` fires: reads the queue gauges (a failed reading
/// is logged and shows as `dawdle_queue_gauges_up 0`), and runs the
/// recorder's upkeep, which drains histogram samples that would otherwise
/// pile up between scrapes (`install_recorder` leaves that to its caller).
pub(crate) async fn maintain(
    handle: PrometheusHandle,
    jobs: PgPool,
    stalled_after: Duration,
    stop: Signal,
) {
    let mut recorder = GaugeRecorder::default();
    let stop = stop.fired();
    tokio::pin!(stop);
    loop {
        recorder.refresh(&jobs, stalled_after).await;
        handle.run_upkeep();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
        }
    }
}

/// The handler of `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
    }
}
