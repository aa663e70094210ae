//! W3C trace context carried with a job, from the code that deferred it to
//! every attempt that runs it.
//!
//! A job may be deferred with a `traceparent` (and `tracestate`), given
//! explicitly ([`crate::NewJob::trace_context`], `dawdle defer --traceparent`)
//! or, with the `opentelemetry` feature and [`crate::telemetry`] switched on,
//! taken from the span current at defer time. It is stored beside the job in
//! `dawdle_job_trace_contexts` (the Python library's view of the job is
//! unchanged), read back by the claim, and each attempt's span links to it.

use serde::Serialize;

/// Longest `tracestate` kept: the W3C recommendation's 512 characters.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A W3C trace context: `traceparent` and, if any, `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceContext {
    traceparent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

/// Why a trace context was refused, worded to read after "the traceparent …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTraceContext(String);

impl TraceContext {
    /// A trace context from the `traceparent` and `tracestate` header values.
    /// `traceparent` must be version `00` (or a later version's first four
    /// fields): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
    /// with ids not all zero.
    pub fn new(traceparent: &str, tracestate: Option<&str>) -> Result<Self, InvalidTraceContext> {
        let traceparent = traceparent.trim();
        check_traceparent(traceparent)?;
        let tracestate = match tracestate.map(str::trim) {
            None | Some("") => None,
            Some(state) if state.len() > MAX_TRACESTATE_LEN => {
                return Err(InvalidTraceContext(format!(
                    "the tracestate is {} bytes long; the limit is {MAX_TRACESTATE_LEN}",
                    state.len()
                )))
            }
            Some(state) if !state.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                return Err(InvalidTraceContext(format!(
                    "the tracestate {} holds characters other than printable ASCII",
                    crate::text::quote(state)
                )))
            }
            Some(state) => Some(state.to_string()),
        };
        Ok(Self {
            traceparent: traceparent.to_ascii_lowercase(),
            tracestate,
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The id of the span that deferred the job (16 hex digits).
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// From the stored columns; what is not a valid trace context (a row
    /// written by hand) is dropped, so the job runs without a link.
    pub(crate) fn from_columns(
        traceparent: Option<String>,
        tracestate: Option<String>,
    ) -> Option<Self> {
        let traceparent = traceparent?;
        match Self::new(&traceparent, tracestate.as_deref()) {
            Ok(context) => Some(context),
            Err(_) => Self::new(&traceparent, None).ok(),
        }
    }
}

fn check_traceparent(value: &str) -> Result<(), InvalidTraceContext> {
    let refuse = |why: &str| {
        Err(InvalidTraceContext(format!(
            "the traceparent {} {why}; expected 00-<32 hex digits>-<16 hex digits>-<2 hex digits>",
            crate::text::quote(value)
        )))
    };
    let fields: Vec<&str> = value.split('-').collect();
    if fields.len() < 4 {
        return refuse("does not have four dash-separated fields");
    }
    let hex = |field: &str, len: usize| {
        field.len() == len && field.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let (version, trace_id, parent_id, flags) = (fields[0], fields[1], fields[2], fields[3]);
    if !hex(version, 2) || version.eq_ignore_ascii_case("ff") {
        return refuse("has no valid version");
    }
    if version == "00" && fields.len() != 4 {
        return refuse("has more than four fields for version 00");
    }
    if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return refuse("has no valid trace id");
    }
    if !hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
        return refuse("has no valid parent id");
    }
    if !hex(flags, 2) {
        return refuse("has no valid flags");
    }
    Ok(())
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::TraceContext;

    impl TraceContext {
        /// The context of the span current in `tracing` (through its
        /// OpenTelemetry layer), if it belongs to a valid trace.
        pub fn current() -> Option<Self> {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let context = tracing::Span::current().context();
            Self::from_span_context(context.span().span_context())
        }

        /// This context as an OpenTelemetry span context (remote).
        pub fn span_context(&self) -> Option<SpanContext> {
            let trace_id = TraceId::from_hex(self.trace_id()).ok()?;
            let span_id = SpanId::from_hex(self.parent_id()).ok()?;
            let flags = u8::from_str_radix(&self.traceparent[53..55], 16).ok()?;
            let state = self
                .tracestate()
                .and_then(|state| state.parse::<TraceState>().ok())
                .unwrap_or_default();
            let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
            context.is_valid().then_some(context)
        }

        /// A trace context naming `span`, if it is valid.
        pub fn from_span_context(span: &SpanContext) -> Option<Self> {
            if !span.is_valid() {
                return None;
            }
            let traceparent = format!(
                "00-{}-{}-{:02x}",
                span.trace_id(),
                span.span_id(),
                span.trace_flags().to_u8()
            );
            let state = span.trace_state().header();
            Self::new(&traceparent, Some(&state)).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_read() {
        let context = TraceContext::new(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(context.traceparent(), VALID);
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.parent_id(), "00f067aa0ba902b7");
        assert_eq!(context.tracestate(), Some("congo=t61rcWkgMzE"));
        let upper = TraceContext::new(&VALID.to_ascii_uppercase(), None);
        assert_eq!(upper.unwrap().traceparent(), VALID, "stored in lower case");
    }

    #[test]
    fn malformed_traceparents_are_refused_with_a_bounded_reason() {
        let long = "0".repeat(10_000);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            long.as_str(),
        ] {
            let error = TraceContext::new(bad, None).unwrap_err().to_string();
            assert!(error.contains("traceparent"), "{error}");
            assert!(error.len() < 400, "bounded: {} bytes", error.len());
        }
        let later_version = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::new(later_version, None).is_ok());
    }

    #[test]
    fn an_unusable_tracestate_is_refused_or_dropped_from_rows() {
        let long = "a=b,".repeat(200);
        assert!(TraceContext::new(VALID, Some(&long)).is_err());
        assert!(TraceContext::new(VALID, Some("a=\u{7}")).is_err());
        let from_row = TraceContext::from_columns(Some(VALID.into()), Some(long)).unwrap();
        assert_eq!(from_row.tracestate(), None);
        assert_eq!(TraceContext::from_columns(Some("junk".into()), None), None);
    }
}
