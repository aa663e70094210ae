//! An OTLP span exporter configured the standard way (feature `otlp`), for
//! binaries: the `dawdle` command's worker and the reference service.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` keep it off. Spans go over HTTP with protobuf
//! bodies (the `http/protobuf` protocol) to `{endpoint}/v1/traces`, batched
//! in a background thread. The other standard variables apply:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! let otlp = dawdle::telemetry::otlp::Otlp::from_env("my-service")?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otlp.as_ref().map(|otlp| otlp.layer()))
//!     .init();
//! // … run; dropping `otlp` at the end flushes the spans not yet sent.
//! # Ok::<(), dawdle::telemetry::otlp::OtlpError>(())
//! ```

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// Longest wait for the last spans to leave when the exporter is dropped.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("set up the OpenTelemetry exporter: {0}")]
    Build(String),
    #[error(
        "set up the OpenTelemetry exporter: protocol {} is not supported; \
         set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or leave it unset)",
        crate::text::quote(.0)
    )]
    Protocol(String),
}

/// A running OTLP span exporter; dropping it flushes and stops it.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Otlp {
    /// The exporter the `OTEL_*` variables ask for, or `None` when they
    /// ask for none. `default_service_name` names the service when
    /// `OTEL_SERVICE_NAME` does not. Switches on [`super::enable`].
    pub fn from_env(default_service_name: &str) -> Result<Option<Self>, OtlpError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if var("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.trim().eq_ignore_ascii_case("otlp")) {
            return Ok(None);
        }
        let Some(endpoint) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|traces| traces.trim().to_string())
            .or_else(|| {
                var("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .map(|base| format!("{}/v1/traces", base.trim().trim_end_matches('/')))
            })
        else {
            return Ok(None);
        };
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .filter(|p| p.trim() != "http/protobuf")
        {
            return Err(OtlpError::Protocol(protocol));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .build()
            // The exporter's message quotes the endpoint, user info and all.
            .map_err(|error| {
                let message = error.to_string().replace(&endpoint, "the endpoint");
                OtlpError::Build(format!(
                    "{} ({})",
                    crate::text::excerpt(&message, 200),
                    crate::database::redact_password(&endpoint)
                ))
            })?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(default_service_name.to_string());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        super::enable();
        Ok(Some(Self { provider, endpoint }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans sent
    /// by this exporter.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("dawdle"))
    }

    /// Where spans go, for a start-up log line (user info hidden).
    pub fn endpoint(&self) -> String {
        crate::database::redact_password(&self.endpoint)
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("OpenTelemetry exporter: the last spans may be lost: {error}");
        }
    }
}
