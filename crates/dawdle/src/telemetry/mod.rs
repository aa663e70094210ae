//! OpenTelemetry for the worker's spans (feature `opentelemetry`).
//!
//! Every attempt runs in a `tracing` span named `job` (job id, task, queue,
//! attempt, lock) whatever the features; the lines a task logs inherit it.
//! Once [`enable`] is called (after installing a `tracing-opentelemetry`
//! layer; [`otlp::Otlp`] does both), that span is also an OpenTelemetry
//! consumer span following the messaging conventions:
//!
//! - name `process {queue}`, kind `consumer`;
//! - `messaging.system` = `dawdle`, `messaging.operation.name` and
//!   `messaging.operation.type` = `process`, `messaging.destination.name` =
//!   the queue, `messaging.message.id` = the job id; `dawdle.job.task`,
//!   `dawdle.job.attempt`, `dawdle.job.lock`;
//! - status `error` and `error.type` = the error kind when the attempt fails;
//! - a link to the trace context the job was deferred with.
//!
//! And deferring takes the trace context of the span current at the call
//! for every job deferred without one. Until [`enable`] is called none of
//! this runs: no cost when off.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::Status;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::job::Job;
use crate::task_error::TaskError;
use crate::text::printable;

#[cfg(feature = "otlp")]
pub mod otlp;

// The versions dawdle's spans are built with, for code that needs the same.
pub use opentelemetry;
pub use tracing_opentelemetry;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Switches on the OpenTelemetry side of dawdle's spans and trace context
/// capture at defer. Call it once a `tracing-opentelemetry` layer is
/// installed in the process's subscriber.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Makes the fresh attempt `span` of `job` an OpenTelemetry consumer span.
/// Must run before the span is first entered (its name and kind are fixed
/// then).
pub(crate) fn attempt_started(span: &tracing::Span, job: &Job) {
    if !is_enabled() {
        return;
    }
    let queue = printable(&job.queue_name).to_string();
    span.record("otel.name", format!("process {queue}"));
    span.record("otel.kind", "consumer");
    span.set_attribute("messaging.system", "dawdle");
    span.set_attribute("messaging.operation.name", "process");
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.destination.name", queue);
    span.set_attribute("messaging.message.id", job.id.to_string());
    span.set_attribute("dawdle.job.task", printable(&job.task_name).to_string());
    span.set_attribute("dawdle.job.attempt", i64::from(job.attempts) + 1);
    if let Some(lock) = &job.lock {
        span.set_attribute("dawdle.job.lock", printable(lock).to_string());
    }
    if let Some(link) = job.trace_context.as_ref().and_then(|c| c.span_context()) {
        span.add_link(link);
    }
}

/// Records how the attempt in `span` ended.
pub(crate) fn attempt_ended(span: &tracing::Span, result: &Result<(), TaskError>) {
    if !is_enabled() {
        return;
    }
    match result {
        Ok(()) => span.set_status(Status::Ok),
        Err(error) => {
            span.set_attribute("error.type", error.kind().to_string());
            span.set_status(Status::error(crate::text::excerpt(error.message(), 200)));
        }
    }
}
