//! A stand-in OpenTelemetry collector for tests: an HTTP/1.1 server on a
//! local port that answers every request `200 OK` and keeps what it got.
//! Point `OTEL_EXPORTER_OTLP_ENDPOINT` at [`OtlpSink::endpoint`], then read
//! the raw requests ([`OtlpSink::requests`]) or, with the `otlp` feature, the
//! spans they carried, decoded ([`OtlpSink::spans`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    /// `POST /v1/traces HTTP/1.1`
    pub request_line: String,
    pub body: Vec<u8>,
}

/// The running sink; it stops with the test process.
#[derive(Debug, Clone)]
pub struct OtlpSink {
    address: String,
    received: Arc<Mutex<Vec<SinkRequest>>>,
}

impl OtlpSink {
    /// Starts the sink on a free local port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free local port");
        let address = listener.local_addr().expect("a bound address").to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || serve(stream, &keep));
            }
        });
        Self { address, received }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<SinkRequest> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A span as an OTLP exporter sent it, decoded (feature `otlp`).
#[cfg(feature = "otlp")]
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    pub name: String,
    /// OTLP's numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Hex, as in a traceparent.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `(trace id, span id)` of each linked span, hex.
    pub links: Vec<(String, String)>,
    /// String, integer, float and boolean attributes, as text.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// OTLP's numbering: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The `service.name` of the resource that sent it.
    pub service_name: Option<String>,
}

#[cfg(feature = "otlp")]
impl OtlpSink {
    /// Every span received on `/v1/traces` so far; bodies that do not
    /// decode are skipped.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let mut spans = Vec::new();
        for request in self.requests() {
            if !request.request_line.contains("/v1/traces") {
                continue;
            }
            let Ok(export) = ExportTraceServiceRequest::decode(request.body.as_slice()) else {
                continue;
            };
            for resource_spans in export.resource_spans {
                let service_name = resource_spans
                    .resource
                    .and_then(|resource| attributes(&resource.attributes).remove("service.name"));
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    spans.push(ExportedSpan {
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        links: span
                            .links
                            .iter()
                            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                            .collect(),
                        attributes: attributes(&span.attributes),
                        status_code: span.status.map_or(0, |status| status.code),
                        service_name: service_name.clone(),
                    });
                }
            }
        }
        spans
    }
}

#[cfg(feature = "otlp")]
fn attributes(
    pairs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> std::collections::BTreeMap<String, String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    pairs
        .iter()
        .filter_map(|pair| {
            let value = match pair.value.as_ref()?.value.as_ref()? {
                Value::StringValue(text) => text.clone(),
                Value::IntValue(number) => number.to_string(),
                Value::DoubleValue(number) => number.to_string(),
                Value::BoolValue(flag) => flag.to_string(),
                _ => return None,
            };
            Some((pair.key.clone(), value))
        })
        .collect()
}

#[cfg(feature = "otlp")]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Answers the requests of one connection until it closes.
fn serve(stream: TcpStream, received: &Mutex<Vec<SinkRequest>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(mut received) = received.lock() {
            received.push(SinkRequest {
                request_line: request_line.trim().to_string(),
                body,
            });
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                      content-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
