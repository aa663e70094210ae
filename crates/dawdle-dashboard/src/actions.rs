//! The dashboard's actions: the same `dawdle::admin` calls as the command
//! line (`retry`, `retry-failed`, `cancel`, `reset-stalled`, `purge`,
//! `queue pause|resume`), taken by an authenticated user through a form
//! that carries the page's CSRF token, checked once for every action route
//! by [`require_token`]. Each one says what it changed and is logged with
//! who took it.

use axum::extract::{Path, Request, State as Extract};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use dawdle::admin::{self, RetryFilter};
use serde::Deserialize;

use crate::auth::User;
use crate::pages::{render, Message, State};

/// A secret token per process, in every action form: a page of another
/// site cannot read it, so it cannot forge the form.
#[derive(Clone)]
pub(crate) struct Csrf(String);

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(***)")
    }
}

impl Csrf {
    pub(crate) fn new() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub(crate) fn token(&self) -> &str {
        &self.0
    }

    fn admits(&self, given: &str) -> bool {
        crate::auth::constant_time_eq(self.0.as_bytes(), given.as_bytes())
    }
}

/// Most bytes an action form may hold (a page of ticked jobs is far less).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Lets an action through only with the form's token, and refuses a form a
/// browser says another site sent (`Sec-Fetch-Site`): one check in front of
/// every action route, so no action can forget it.
pub(crate) async fn require_token(
    Extract(state): Extract<State>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let cross_site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none");
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return refused(&state, "The form is too large; select fewer jobs.".into());
    };
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let admitted = state.csrf.as_ref().is_some_and(|csrf| csrf.admits(&token));
    if cross_site || !admitted {
        tracing::warn!(
            cross_site,
            "dashboard: refused an action without a valid form token"
        );
        return (
            StatusCode::FORBIDDEN,
            render(&Message {
                base: state.base.clone(),
                title: "Refused".into(),
                message: "This form did not come from this dashboard (its token is missing \
                          or stale). Reload the page and try again."
                    .into(),
            }),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// What an action did, on a page that links back.
fn done(state: &State, title: &str, message: String) -> Response {
    render(&Message {
        base: state.base.clone(),
        title: title.into(),
        message,
    })
    .into_response()
}

/// The page refusing an action the database refused (a wrong status, say).
fn refused(state: &State, message: String) -> Response {
    (
        StatusCode::CONFLICT,
        render(&Message {
            base: state.base.clone(),
            title: "Nothing changed".into(),
            message,
        }),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct RetryFailedForm {
    task: Option<String>,
    queue: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PauseForm {
    reason: Option<String>,
}

pub(crate) async fn retry(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Path(id): Path<i64>,
) -> Response {
    match admin::retry(&state.pool, id).await {
        Ok(()) => {
            tracing::info!(user = %user.0, action = "retry", job_id = id, changed = 1, "dashboard_action");
            done(
                &state,
                "Retried",
                format!("Job {id} is waiting to run again (1 job changed)."),
            )
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

pub(crate) async fn cancel(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Path(id): Path<i64>,
) -> Response {
    match admin::cancel(&state.pool, id).await {
        Ok(outcome) => {
            tracing::info!(user = %user.0, action = "cancel", job_id = id, outcome = ?outcome,
                           changed = outcome.changed(), "dashboard_action");
            let message = match outcome {
                admin::CancelOutcome::Cancelled => format!("Job {id} was cancelled (1 job changed)."),
                admin::CancelOutcome::AbortRequested => format!(
                    "Job {id} is running: its abort was requested (1 job changed); its worker stops it."
                ),
                admin::CancelOutcome::AbortAlreadyRequested => format!(
                    "Job {id} is running and its abort was already requested; nothing changed."
                ),
            };
            done(&state, "Cancelled", message)
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

pub(crate) async fn reset(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Path(id): Path<i64>,
) -> Response {
    match admin::reset_stalled(&state.pool, &admin::ResetTarget::Job(id), false).await {
        Ok(reset) if !reset.reset.is_empty() => {
            tracing::info!(user = %user.0, action = "reset", job_id = id, changed = reset.reset.len(), "dashboard_action");
            done(
                &state,
                "Reset",
                format!("Job {id} is back in todo (1 job changed); a worker runs it again."),
            )
        }
        Ok(reset) if !reset.failed.is_empty() => {
            tracing::info!(user = %user.0, action = "reset", job_id = id, failed_instead = reset.failed.len(), "dashboard_action");
            refused(
                &state,
                format!(
                    "The database refused to put job {id} back in todo; it is failed instead \
                     (1 job changed). Its history says why."
                ),
            )
        }
        Ok(_) => refused(
            &state,
            format!("Job {id} is not in doing; nothing changed."),
        ),
        Err(error) => refused(&state, error.to_string()),
    }
}

/// Retries the failed jobs ticked on a jobs page (`id` repeated).
pub(crate) async fn retry_selected(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    body: axum::body::Bytes,
) -> Response {
    let ids: Vec<i64> = url::form_urlencoded::parse(&body)
        .filter(|(key, _)| key == "id")
        .filter_map(|(_, value)| value.parse().ok())
        .collect();
    if ids.is_empty() {
        return refused(
            &state,
            "No job was selected; tick the failed jobs to retry.".into(),
        );
    }
    let (mut retried, mut skipped, mut refused_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut why_refused = None;
    for id in ids.iter().take(MAX_SELECTED) {
        match admin::retry(&state.pool, *id).await {
            Ok(()) => retried.push(*id),
            Err(admin::ChangeError::Database { source, .. }) => {
                return refused(&state, format!("the database refused: {source}"))
            }
            Err(admin::ChangeError::Refused { why, .. }) => {
                refused_ids.push(*id);
                why_refused.get_or_insert((*id, why));
            }
            Err(_) => skipped.push(*id),
        }
    }
    tracing::info!(user = %user.0, action = "retry_selected", job_ids = ?retried,
                   skipped = ?skipped, refused = ?refused_ids, changed = retried.len(),
                   "dashboard_action");
    let mut message = format!("{} job(s) are waiting to run again.", retried.len());
    if !skipped.is_empty() {
        message.push_str(&format!(
            " {} were not failed any more and were left as they were.",
            skipped.len()
        ));
    }
    if let Some((id, why)) = why_refused {
        message.push_str(&format!(
            " {} were left failed (job {id}: {why}).",
            refused_ids.len()
        ));
    }
    done(&state, "Retried", message)
}

/// Most jobs one selection retries (a page holds 50).
const MAX_SELECTED: usize = 200;

pub(crate) async fn retry_failed(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Form(form): Form<RetryFailedForm>,
) -> Response {
    let filter = RetryFilter {
        task: form.task.filter(|t| !t.is_empty()),
        queue: form.queue.filter(|q| !q.is_empty()),
        dry_run: false,
    };
    match admin::retry_failed(&state.pool, &filter).await {
        Ok(retried) => {
            let changed = retried.retried;
            tracing::info!(user = %user.0, action = "retry_failed", task = ?filter.task,
                           queue = ?filter.queue, changed, left_out = retried.left_out.len(),
                           "dashboard_action");
            let mut message = format!("{changed} failed job(s) are waiting to run again.");
            if let Some((id, why)) = retried.left_out.first() {
                message.push_str(&format!(
                    " {} were left failed (job {id}: {why}).",
                    retried.left_out.len()
                ));
            }
            done(&state, "Retried", message)
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

pub(crate) async fn pause(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Path(queue): Path<String>,
    Form(form): Form<PauseForm>,
) -> Response {
    match admin::pause_queue(&state.pool, &queue, Some(&user.0), form.reason.as_deref()).await {
        Ok(paused) => {
            tracing::info!(user = %user.0, action = "pause", queue = %dawdle::text::excerpt(&queue, 60),
                           changed = u8::from(paused), "dashboard_action");
            let message = if paused {
                format!(
                    "Queue {} is paused: no worker claims its jobs until it is resumed.",
                    dawdle::text::quote(&queue)
                )
            } else {
                format!(
                    "Queue {} was paused already; nothing changed.",
                    dawdle::text::quote(&queue)
                )
            };
            done(&state, "Paused", message)
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

pub(crate) async fn resume(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Path(queue): Path<String>,
) -> Response {
    match admin::resume_queue(&state.pool, &queue).await {
        Ok(resumed) => {
            tracing::info!(user = %user.0, action = "resume", queue = %dawdle::text::excerpt(&queue, 60),
                           changed = u8::from(resumed), "dashboard_action");
            let message = if resumed {
                format!(
                    "Queue {} is running again: its workers were woken.",
                    dawdle::text::quote(&queue)
                )
            } else {
                format!(
                    "Queue {} was not paused; nothing changed.",
                    dawdle::text::quote(&queue)
                )
            };
            done(&state, "Resumed", message)
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PurgeForm {
    days: Option<String>,
    include_failed: Option<String>,
    queue: Option<String>,
}

pub(crate) async fn purge(
    Extract(state): Extract<State>,
    Extension(user): Extension<User>,
    Form(form): Form<PurgeForm>,
) -> Response {
    let request = match crate::pages::PurgeRequest::read(
        form.days.as_deref(),
        form.include_failed.as_deref(),
        form.queue,
    ) {
        Ok(request) => request,
        Err(why) => return refused(&state, why),
    };
    match admin::purge(&state.pool, &request.options(false), |_| {}).await {
        Ok(deleted) => {
            tracing::info!(user = %user.0, action = "purge", days = request.days,
                           include_failed = request.include_failed, queue = ?request.queue,
                           changed = deleted, "dashboard_action");
            done(
                &state,
                "Purged",
                format!(
                    "Deleted {deleted} job(s) finished more than {} day(s) ago, with their history.",
                    request.days
                ),
            )
        }
        Err(error) => refused(&state, error.to_string()),
    }
}

/// Actions answer only on an authenticated dashboard with actions on; the
/// routes do not exist otherwise, which this explains.
pub(crate) async fn disabled() -> impl IntoResponse {
    (
        StatusCode::FORBIDDEN,
        Html(
            "<!doctype html><title>dawdle</title><p>Actions are off: this dashboard is read-only. \
              Start it with credentials (DAWDLE_DASHBOARD_USER, DAWDLE_DASHBOARD_PASSWORD) and \
              actions on to change jobs.</p>",
        ),
    )
}
