//! The HTTP API: register users, place orders, read them back, /health and
//! /metrics.
//!
//! Each writing request is one unit of work: its writes commit together and
//! its domain events are published only then (see `unit_of_work`). A request
//! never waits for email or the CRM; those are jobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::PgPool;
use tracing::{error, info, Instrument};

use crate::domain::{self, DomainError, NewOrder, Order, Registration, User};
use crate::outbox;
use crate::unit_of_work::{Publisher, UnitOfWork};

/// How long /health waits for each database before calling it unavailable.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this process runs a worker, and whether it is up.
#[derive(Debug)]
pub(crate) struct WorkerStatus {
    pub(crate) enabled: bool,
    pub(crate) running: AtomicBool,
}

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) main: PgPool,
    pub(crate) jobs: PgPool,
    pub(crate) publisher: Publisher,
    pub(crate) worker: Arc<WorkerStatus>,
    pub(crate) outbox_enabled: bool,
    /// Renders `GET /metrics`; `None` when metrics are off.
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/users", post(register_user))
        .route("/users/{id}", get(get_user))
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::serve))
        .route_layer(middleware::from_fn(trace_request))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// One structured line per request: what the runbook's readers grep for
/// when a user reports an error.
async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "http_request"
    );
    response
}

/// Runs a routed request in its OpenTelemetry server span when spans are
/// exported (nothing otherwise).
async fn trace_request(request: Request, next: Next) -> Response {
    if dawdle::telemetry::is_enabled() {
        let span = request_span(&request);
        next.run(request).instrument(span).await
    } else {
        next.run(request).await
    }
}

/// The OpenTelemetry server span of a request, continuing the caller's
/// trace when the request carries a valid W3C `traceparent`: the jobs its
/// domain events defer link back to it.
fn request_span(request: &Request) -> tracing::Span {
    use dawdle::telemetry::opentelemetry::trace::TraceContextExt as _;
    use dawdle::telemetry::tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let method = request.method().as_str();
    // The route template when routing already ran; the method alone
    // otherwise (the HTTP conventions' name when no template is known).
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_string());
    let name = route
        .as_ref()
        .map_or_else(|| method.to_string(), |route| format!("{method} {route}"));
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = method,
        url.path = request.uri().path(),
        http.route = route.as_deref()
    );
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let caller = header("traceparent")
        .and_then(|parent| dawdle::TraceContext::new(parent, header("tracestate")).ok())
        .and_then(|context| context.span_context());
    if let Some(caller) = caller {
        let parent =
            dawdle::telemetry::opentelemetry::Context::new().with_remote_span_context(caller);
        let _ = span.set_parent(parent);
    }
    span
}

/// An answer other than success, as `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let status = match &error {
            DomainError::Invalid(_) | DomainError::UnknownUser(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            DomainError::EmailTaken(_) => StatusCode::CONFLICT,
            DomainError::Database(error) => return database_failure(error),
        };
        ApiError {
            status,
            message: error.to_string(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        database_failure(&error)
    }
}

/// Logged in full; the client learns only whether to come back later.
fn database_failure(error: &sqlx::Error) -> ApiError {
    error!(error = %error, "request failed on the main database");
    let unavailable = matches!(
        error,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    );
    if unavailable {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the database is unavailable; try again later".into(),
        }
    } else {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error".into(),
        }
    }
}

fn not_found(what: &str, id: i64) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{what} {id} does not exist"),
    }
}

async fn register_user(
    State(state): State<AppState>,
    Json(registration): Json<Registration>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let mut work = UnitOfWork::begin(&state.main).await?;
    let user = domain::register_user(&mut work, &registration).await?;
    work.commit(&state.publisher).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn place_order(
    State(state): State<AppState>,
    Json(new_order): Json<NewOrder>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let mut work = UnitOfWork::begin(&state.main).await?;
    let order = domain::place_order(&mut work, &new_order).await?;
    work.commit(&state.publisher).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<User>, ApiError> {
    let mut conn = state.main.acquire().await?;
    domain::find_user(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("user", id))
}

async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Order>, ApiError> {
    let mut conn = state.main.acquire().await?;
    domain::find_order(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("order", id))
}

/// 200 when the API, both databases and (if enabled) the worker are up,
/// else 503, with each part's state so that the on-call engineer sees which.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (main, jobs) = tokio::join!(ping(&state.main), ping(&state.jobs));
    let worker_running = state.worker.running.load(Ordering::Relaxed);
    let outbox_pending = if state.outbox_enabled && main.is_ok() {
        outbox::pending(&state.main).await.ok()
    } else {
        None
    };
    let healthy = main.is_ok() && jobs.is_ok() && (!state.worker.enabled || worker_running);
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "api": "ok",
        "main_database": database_health(&main),
        "jobs_database": database_health(&jobs),
        "worker": {
            "enabled": state.worker.enabled,
            "running": worker_running,
        },
        "outbox": {
            "enabled": state.outbox_enabled,
            "pending": outbox_pending,
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Round-trip time of a trivial query, or why it failed.
async fn ping(pool: &PgPool) -> Result<f64, String> {
    let started = Instant::now();
    // A pooled connection the server has closed (a restart, a terminated
    // backend) fails its first statement without saying anything about the
    // database; the pool drops it, and one more try uses a fresh one.
    let probe = async {
        match sqlx::query("SELECT 1").execute(pool).await {
            Err(error) if error.as_database_error().is_none() => {
                sqlx::query("SELECT 1").execute(pool).await
            }
            answered => answered,
        }
    };
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, probe).await {
        Ok(Ok(_)) => Ok(started.elapsed().as_secs_f64() * 1000.0),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            HEALTH_CHECK_TIMEOUT.as_secs()
        )),
    }
}

fn database_health(result: &Result<f64, String>) -> Value {
    match result {
        Ok(latency_ms) => json!({ "status": "ok", "latency_ms": latency_ms }),
        Err(error) => json!({ "status": "unavailable", "error": error }),
    }
}
