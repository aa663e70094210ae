//! Every log line a task writes carries its job: the attempt runs in the
//! worker's `job` span, which task code's own events inherit. With
//! OpenTelemetry switched on, that span is a messaging consumer span linked
//! to the trace context the job was deferred with.

use std::io::Write;
use std::sync::{Arc, Mutex};

use dawdle::testing::{drain, TestDatabase};
use dawdle::{defer_task, JobContext, JobOutcome, Registry, Task, TaskError};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// Log output, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Task for Greet {
    const NAME: &'static str = "test.greet";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        tracing::info!(name = %self.name, "the task says hello");
        Ok(())
    }
}

#[tokio::test]
async fn a_tasks_own_log_lines_carry_its_job_id_task_and_attempt() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // The test's runtime has one thread: the worker's tasks log through it.
    let _default = tracing::subscriber::set_default(subscriber);
    let db = TestDatabase::with_schema().await;
    let id = defer_task(db.pool(), &Greet { name: "Ada".into() })
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register::<Greet>();
    let outcomes = drain(db.pool(), registry).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, JobOutcome::Succeeded);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("the task says hello"))
        .unwrap_or_else(|| panic!("the task's line is missing from:\n{logs}"));
    for field in [
        format!("job_id={id}"),
        "task=test.greet".to_string(),
        "attempt=1".to_string(),
        "name=Ada".to_string(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line:?}");
    }
}

#[derive(Serialize, Deserialize)]
struct Refuse {}

impl Task for Refuse {
    const NAME: &'static str = "test.refuse";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("RemoteRefused", "the remote end said no").no_retry())
    }
}

mod opentelemetry_spans {
    use dawdle::telemetry::opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    };
    use dawdle::telemetry::opentelemetry::{Context, KeyValue, Value};
    use dawdle::telemetry::tracing_opentelemetry::{self, OpenTelemetrySpanExt};
    use dawdle::TraceContext;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::prelude::*;

    use super::*;

    fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|KeyValue { key: k, .. }| k.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn process_span(spans: &[SpanData], job_id: i64) -> &SpanData {
        spans
            .iter()
            .find(|span| {
                attribute(span, "messaging.message.id").map(|v| v.as_str().into_owned())
                    == Some(job_id.to_string())
            })
            .unwrap_or_else(|| {
                let names: Vec<_> = spans.iter().map(|s| s.name.as_ref()).collect();
                panic!("no span for job {job_id} among {names:?}")
            })
    }

    #[tokio::test]
    async fn an_attempt_span_links_to_the_trace_that_deferred_its_job() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        // One-thread runtime: the worker's tasks report to this subscriber.
        let _default = tracing::subscriber::set_default(subscriber);
        dawdle::telemetry::enable();
        let db = TestDatabase::with_schema().await;

        // A request from elsewhere: its traceparent arrives in a header.
        let caller = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let request = tracing::info_span!("request");
        request
            .set_parent(Context::new().with_remote_span_context(caller.clone()))
            .unwrap();
        // Deferred inside the request's span: its context goes with the job.
        let (in_request, request_context) = async {
            let id = defer_task(db.pool(), &Greet { name: "Ada".into() })
                .await
                .unwrap();
            (id, TraceContext::current().unwrap())
        }
        .instrument(request.clone())
        .await;
        drop(request);
        // Given explicitly, as `dawdle defer --traceparent` does.
        let given = TraceContext::new(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Some("vendor=value"),
        )
        .unwrap();
        let explicit = dawdle::defer(
            db.pool(),
            &dawdle::NewJob::new("test.refuse", serde_json::json!({}))
                .unwrap()
                .queue("billing")
                .lock("account-7")
                .trace_context(given.clone()),
        )
        .await
        .unwrap();
        // Neither: an attempt span of its own, with no link.
        let untraced = defer_task(db.pool(), &Greet { name: "Bo".into() })
            .await
            .unwrap();

        let mut registry = Registry::new();
        registry.register::<Greet>();
        registry.register::<Refuse>();
        let outcomes = drain(db.pool(), registry).await;
        assert_eq!(outcomes.len(), 3);
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();

        let first = process_span(&spans, in_request);
        assert_eq!(first.name, "process default");
        assert_eq!(first.span_kind, SpanKind::Consumer);
        assert_eq!(first.status, Status::Ok);
        assert_eq!(first.links.links.len(), 1, "one link: {:?}", first.links);
        let link = &first.links.links[0].span_context;
        assert_eq!(
            link.trace_id(),
            caller.trace_id(),
            "linked to the request's trace"
        );
        assert_eq!(
            link.span_id().to_string(),
            request_context.parent_id(),
            "linked to the span that deferred the job"
        );
        assert_ne!(
            first.span_context.trace_id(),
            caller.trace_id(),
            "the attempt is a trace of its own, linked rather than nested"
        );
        for (key, value) in [
            ("messaging.system", "dawdle"),
            ("messaging.operation.name", "process"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "default"),
            ("dawdle.job.task", "test.greet"),
        ] {
            assert_eq!(
                attribute(first, key)
                    .map(|v| v.as_str().into_owned())
                    .as_deref(),
                Some(value),
                "{key}"
            );
        }
        assert_eq!(attribute(first, "dawdle.job.attempt"), Some(&Value::I64(1)));

        let second = process_span(&spans, explicit);
        assert_eq!(second.name, "process billing");
        let link = &second.links.links[0].span_context;
        assert_eq!(link.trace_id().to_string(), given.trace_id());
        assert_eq!(link.span_id().to_string(), given.parent_id());
        assert_eq!(link.trace_state().header(), "vendor=value");
        assert!(
            matches!(second.status, Status::Error { .. }),
            "{:?}",
            second.status
        );
        assert_eq!(
            attribute(second, "error.type")
                .map(|v| v.as_str().into_owned())
                .as_deref(),
            Some("RemoteRefused")
        );
        assert_eq!(
            attribute(second, "dawdle.job.lock")
                .map(|v| v.as_str().into_owned())
                .as_deref(),
            Some("account-7")
        );

        let third = process_span(&spans, untraced);
        assert!(third.links.links.is_empty(), "{:?}", third.links);
    }
}
