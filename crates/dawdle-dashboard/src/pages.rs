//! The pages: each reads through `dawdle::admin` and renders a template.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use dawdle::admin::{self, FailedFilter, JobFilter, StatsConfig};
use dawdle::{Event, Job, JobStatus};
use serde::Deserialize;
use sqlx::PgPool;

use crate::actions::Csrf;

/// Jobs per page of the jobs list.
const PAGE_SIZE: i64 = 50;
/// Most characters of arguments shown in a list row.
const ARGS_PREVIEW_CHARS: usize = 120;

#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) pool: PgPool,
    /// Prefix of every link (`/admin/jobs`), empty at the root.
    pub(crate) base: String,
    /// The action forms' token; `None` when the dashboard is read-only.
    pub(crate) csrf: Option<Csrf>,
}

impl State {
    pub(crate) fn new(pool: PgPool, base: String, csrf: Option<Csrf>) -> Self {
        Self { pool, base, csrf }
    }

    /// The token action forms carry, empty when actions are off (the
    /// templates show no form then).
    fn token(&self) -> String {
        self.csrf
            .as_ref()
            .map(|c| c.token().to_string())
            .unwrap_or_default()
    }
}

/// A page that could not be read: logged in full, shown in short.
pub(crate) struct PageError(String);

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        tracing::warn!(error = %error, "dashboard: a page could not read the jobs database");
        Self(dawdle::text::excerpt(&error.to_string(), 300))
    }
}

impl PageError {
    pub(crate) fn from_message(message: &str) -> Self {
        tracing::warn!(error = %message, "dashboard: a page could not read the jobs database");
        Self(dawdle::text::excerpt(message, 300))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = Message {
            base: String::new(),
            title: "The jobs database did not answer".into(),
            message: self.0,
        };
        (StatusCode::SERVICE_UNAVAILABLE, render(&page)).into_response()
    }
}

pub(crate) fn render(template: &impl Template) -> Html<String> {
    Html(template.render().unwrap_or_else(|error| {
        tracing::error!(error = %error, "dashboard: a template failed to render");
        "<!doctype html><title>dawdle</title><p>This page could not be rendered.</p>".into()
    }))
}

#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message {
    pub(crate) base: String,
    pub(crate) title: String,
    pub(crate) message: String,
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(String::new, |at| {
        if dawdle::rows::is_clamped(at) {
            "(out of range)".into()
        } else {
            at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        }
    })
}

// ---------------------------------------------------------------- overview

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    base: String,
    stats: admin::QueueStats,
    oldest: String,
    chart: Chart,
}

/// Hours the overview's chart covers.
const CHART_HOURS: u32 = 24;

/// One hour's bar: succeeded at the bottom, failed stacked on top.
struct Bar {
    x: u32,
    ok_y: u32,
    ok_height: u32,
    failed_y: u32,
    failed_height: u32,
    title: String,
}

/// The last hours' outcomes as SVG bars, drawn here: no chart library.
struct Chart {
    width: u32,
    height: u32,
    bar_width: u32,
    bars: Vec<Bar>,
    peak: i64,
    total_succeeded: i64,
    total_failed: i64,
}

impl Chart {
    const HEIGHT: u32 = 120;
    const BAR: u32 = 24;
    const GAP: u32 = 4;

    fn new(hours: &[admin::HourOutcomes]) -> Self {
        let peak = hours
            .iter()
            .map(|h| h.succeeded + h.failed)
            .max()
            .unwrap_or(0)
            .max(1);
        let scale =
            |count: i64| ((count as f64 / peak as f64) * f64::from(Self::HEIGHT)).round() as u32;
        let bars = hours
            .iter()
            .enumerate()
            .map(|(index, hour)| {
                let ok_height = scale(hour.succeeded);
                let failed_height = scale(hour.failed);
                Bar {
                    x: index as u32 * (Self::BAR + Self::GAP),
                    ok_y: Self::HEIGHT - ok_height,
                    ok_height,
                    failed_y: Self::HEIGHT - ok_height - failed_height,
                    failed_height,
                    title: format!(
                        "{}: {} succeeded, {} failed",
                        hour.hour.format("%Y-%m-%d %H:00 UTC"),
                        hour.succeeded,
                        hour.failed
                    ),
                }
            })
            .collect::<Vec<_>>();
        Self {
            width: (bars.len() as u32 * (Self::BAR + Self::GAP)).max(1),
            height: Self::HEIGHT,
            bar_width: Self::BAR,
            bars,
            peak,
            total_succeeded: hours.iter().map(|h| h.succeeded).sum(),
            total_failed: hours.iter().map(|h| h.failed).sum(),
        }
    }
}

pub(crate) async fn overview(Extract(state): Extract<State>) -> Result<Html<String>, PageError> {
    let stats = admin::stats(&state.pool, &StatsConfig::default()).await?;
    let hours = admin::hourly_outcomes(&state.pool, CHART_HOURS).await?;
    let oldest = stats
        .oldest_runnable_age_seconds
        .map_or_else(|| "none waiting".into(), admin::human_duration);
    Ok(render(&Overview {
        base: state.base,
        stats,
        oldest,
        chart: Chart::new(&hours),
    }))
}

/// The overview's numbers, for the page's live refresh.
pub(crate) async fn overview_json(
    Extract(state): Extract<State>,
) -> Result<Json<admin::QueueStats>, PageError> {
    Ok(Json(
        admin::stats(&state.pool, &StatsConfig::default()).await?,
    ))
}

// -------------------------------------------------------------------- jobs

#[derive(Debug, Default, Deserialize)]
pub(crate) struct JobsQuery {
    status: Option<String>,
    queue: Option<String>,
    task: Option<String>,
    lock: Option<String>,
    /// Created at or after (`2026-12-04T09:30`, UTC).
    from: Option<String>,
    /// Created before.
    to: Option<String>,
    /// Text the arguments contain.
    text: Option<String>,
    before: Option<i64>,
}

/// Longest a listing may search before the page asks for a narrower one.
const LISTING_TIMEOUT_MS: u64 = 5_000;

/// A time from a `datetime-local` field (`2026-12-04T09:30`, seconds
/// optional), or an RFC 3339 time; read as UTC.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%d",
            ]
            .iter()
            .find_map(|format| {
                chrono::NaiveDateTime::parse_from_str(text, format)
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDate::parse_from_str(text, format)
                            .ok()
                            .and_then(|day| day.and_hms_opt(0, 0, 0))
                    })
            })
            .map(|at| at.and_utc())
        })
}

/// One row of the jobs list, ready to show.
struct JobRow {
    id: i64,
    status: String,
    queue: String,
    task: String,
    lock: String,
    attempts: i32,
    created: String,
    args: String,
}

/// Most characters of a name or lock shown in a list row.
const CELL_CHARS: usize = 120;
/// Most characters of one field shown on a job's page.
const FIELD_CHARS: usize = 4096;
/// Most characters of a job's arguments or of one traceback shown on its
/// page; `dawdle job ID --json` has them whole.
const BLOCK_CHARS: usize = 64 * 1024;

/// A value for one cell or field: control characters and bidirectional
/// overrides escaped as the CLI escapes them (`\u{202e}`), cut to
/// `max_chars` (`…` when cut).
fn shown(text: &str, max_chars: usize) -> String {
    dawdle::text::excerpt(text, max_chars)
}

/// The templates' `shown` filter: [`shown`] at a cell's width, for values
/// the templates take from rows as they are (queue and task names).
mod filters {
    #[askama::filter_fn]
    pub fn shown(text: impl std::fmt::Display, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::shown(&text.to_string(), super::CELL_CHARS))
    }
}

impl From<&admin::ListedJob> for JobRow {
    fn from(listed: &admin::ListedJob) -> Self {
        let job = &listed.job;
        Self {
            id: job.id,
            status: job.status.to_string(),
            queue: shown(&job.queue_name, CELL_CHARS),
            task: shown(&job.task_name, CELL_CHARS),
            lock: shown(job.lock.as_deref().unwrap_or_default(), CELL_CHARS),
            attempts: job.attempts,
            created: time(Some(job.created_at)),
            args: shown(&listed.args_summary(), ARGS_PREVIEW_CHARS),
        }
    }
}

impl From<&Job> for JobRow {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id,
            status: job.status.to_string(),
            queue: shown(&job.queue_name, FIELD_CHARS),
            task: shown(&job.task_name, FIELD_CHARS),
            lock: shown(job.lock.as_deref().unwrap_or_default(), FIELD_CHARS),
            attempts: job.attempts,
            created: time(Some(job.created_at)),
            args: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs {
    base: String,
    csrf: String,
    /// Offer "retry all matching": the filter is failed jobs by queue or
    /// task only (what `retry-failed` selects).
    retry_matching: bool,
    rows: Vec<JobRow>,
    status: String,
    queue: String,
    task: String,
    lock: String,
    from: String,
    to: String,
    text: String,
    statuses: Vec<&'static str>,
    /// The query string of the next page, if there may be one.
    next: Option<String>,
    problem: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub(crate) async fn jobs(
    Extract(state): Extract<State>,
    Query(query): Query<JobsQuery>,
) -> Result<Html<String>, PageError> {
    let statuses = vec![
        "todo",
        "doing",
        "succeeded",
        "failed",
        "cancelled",
        "aborted",
    ];
    let status_text = non_empty(query.status).unwrap_or_default();
    let (status, problem) = match status_text.as_str() {
        "" => (None, None),
        text => match text.parse::<JobStatus>() {
            Ok(status) => (Some(status), None),
            Err(_) => (
                None,
                Some(format!(
                    "unknown status {}; showing every status",
                    dawdle::text::quote(text)
                )),
            ),
        },
    };
    let mut problems: Vec<String> = problem.into_iter().collect();
    let mut time = |what: &str, value: Option<String>| {
        let value = non_empty(value)?;
        let parsed = parse_time(&value);
        if parsed.is_none() {
            problems.push(format!(
                "{what} {} is not a time such as 2026-12-04T09:30 (UTC); ignored",
                dawdle::text::quote(&value)
            ));
        }
        parsed
    };
    let created_after = time("from", query.from.clone());
    let created_before = time("to", query.to.clone());
    let filter = JobFilter {
        status,
        queue: non_empty(query.queue),
        task: non_empty(query.task),
        lock: non_empty(query.lock),
        created_after,
        created_before,
        args_contain: non_empty(query.text),
        before_id: query.before,
        limit: Some(PAGE_SIZE),
        ..JobFilter::default()
    };
    let mut tx = state.pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {LISTING_TIMEOUT_MS}"
    ))
    .execute(&mut *tx)
    .await?;
    let found = match admin::job_listing(&mut *tx, &filter).await {
        Ok(found) => found,
        Err(error) if is_timeout(&error) => {
            problems.push(format!(
                "the search took longer than {} s and was stopped: narrow it with a queue, a \
                 task, a status or a time range",
                LISTING_TIMEOUT_MS / 1000
            ));
            Vec::new()
        }
        Err(error) => return Err(error.into()),
    };
    drop(tx);
    let next = (found.len() as i64 == PAGE_SIZE)
        .then(|| found.last().map(|listed| listed.job.id))
        .flatten()
        .map(|last| {
            let mut pairs = vec![];
            let time_text =
                |at: Option<DateTime<Utc>>| at.map(|at| at.format("%Y-%m-%dT%H:%M:%S").to_string());
            for (key, value) in [
                ("status", status.map(|s| s.to_string())),
                ("queue", filter.queue.clone()),
                ("task", filter.task.clone()),
                ("lock", filter.lock.clone()),
                ("from", time_text(filter.created_after)),
                ("to", time_text(filter.created_before)),
                ("text", filter.args_contain.clone()),
            ] {
                if let Some(value) = value {
                    pairs.push(format!("{key}={}", encode(&value)));
                }
            }
            pairs.push(format!("before={last}"));
            pairs.join("&")
        });
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let retry_matching = status == Some(JobStatus::Failed)
        && filter.lock.is_none()
        && filter.created_after.is_none()
        && filter.created_before.is_none()
        && filter.args_contain.is_none();
    Ok(render(&Jobs {
        csrf: state.token(),
        retry_matching,
        base: state.base,
        rows: found.iter().map(JobRow::from).collect(),
        status: status.map(|s| s.to_string()).unwrap_or_default(),
        queue: filter.queue.unwrap_or_default(),
        task: filter.task.unwrap_or_default(),
        lock: filter.lock.unwrap_or_default(),
        from: query.from.unwrap_or_default(),
        to: query.to.unwrap_or_default(),
        text: filter.args_contain.unwrap_or_default(),
        statuses,
        next,
        problem,
    }))
}

/// Whether the statement was stopped by its timeout.
fn is_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "57014")
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// --------------------------------------------------------------------- job

struct EventRow {
    at: String,
    kind: String,
    error: String,
    message: String,
    traceback: String,
}

impl From<&Event> for EventRow {
    fn from(event: &Event) -> Self {
        Self {
            at: time(event.at),
            kind: event
                .event_type
                .map_or_else(|| "(unknown)".into(), |t| t.as_str().to_string()),
            error: shown(event.error.as_deref().unwrap_or_default(), CELL_CHARS),
            message: shown(
                event.error_message.as_deref().unwrap_or_default(),
                FIELD_CHARS,
            ),
            traceback: dawdle::text::printable_lines(
                event.error_traceback.as_deref().unwrap_or_default(),
                BLOCK_CHARS,
            ),
        }
    }
}

impl EventRow {
    /// The row standing for the events a job's page leaves out.
    fn left_out(count: i64) -> Self {
        Self {
            at: "…".into(),
            kind: "left-out".into(),
            error: String::new(),
            message: format!(
                "{count} events left out: the first {} and the last {} are shown",
                admin::HISTORY_FIRST,
                admin::HISTORY_LAST
            ),
            traceback: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    base: String,
    csrf: String,
    job: JobRow,
    args: String,
    priority: i32,
    queueing_lock: String,
    scheduled: String,
    started: String,
    finished: String,
    worker: String,
    traceparent: String,
    events: Vec<EventRow>,
}

pub(crate) async fn job(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok(not_found(
            &state.base,
            "Job ids are whole numbers, such as 42.",
        ));
    };
    let Some(detail) = admin::job_detail(&state.pool, id).await? else {
        return Ok(not_found(&state.base, &format!("There is no job {id}.")));
    };
    let job = &detail.job;
    let args = match &job.args_error {
        Some(why) => shown(why, FIELD_CHARS),
        None => {
            let pretty = serde_json::to_string_pretty(&job.args).unwrap_or_default();
            let mut args = dawdle::text::printable_lines(&pretty, BLOCK_CHARS);
            if pretty.chars().nth(BLOCK_CHARS).is_some() {
                args.push_str(&format!(
                    "\n\n(the arguments are {} characters long; `dawdle job {} --json` shows \
                     them whole)",
                    pretty.chars().count(),
                    job.id
                ));
            }
            args
        }
    };
    let mut events: Vec<EventRow> = detail.events.iter().map(EventRow::from).collect();
    if detail.events_left_out > 0 {
        let at = admin::HISTORY_FIRST.min(events.len());
        events.insert(at, EventRow::left_out(detail.events_left_out));
    }
    Ok(render(&JobPage {
        csrf: state.token(),
        base: state.base,
        args,
        priority: job.priority,
        queueing_lock: shown(
            job.queueing_lock.as_deref().unwrap_or_default(),
            FIELD_CHARS,
        ),
        scheduled: time(job.scheduled_at),
        started: time(job.started_at),
        finished: time(job.finished_at),
        worker: job.worker_id.map(|id| id.to_string()).unwrap_or_default(),
        traceparent: job
            .trace_context
            .as_ref()
            .map(|c| c.traceparent().to_string())
            .unwrap_or_default(),
        events,
        job: JobRow::from(job),
    })
    .into_response())
}

fn not_found(base: &str, message: &str) -> Response {
    let page = Message {
        base: base.to_string(),
        title: "Not found".into(),
        message: message.into(),
    };
    (StatusCode::NOT_FOUND, render(&page)).into_response()
}

// ---------------------------------------------------------------- failures

struct FailureGroup {
    /// The task's name as stored, for the retry form.
    task: String,
    /// The task's name for people.
    task_shown: String,
    kind: String,
    jobs: usize,
    latest: String,
    message: String,
    ids: Vec<i64>,
}

#[derive(Template)]
#[template(path = "failures.html")]
struct Failures {
    base: String,
    csrf: String,
    groups: Vec<FailureGroup>,
    shown: usize,
}

/// Most recent failures grouped on the page.
const FAILURES_READ: i64 = 1000;

pub(crate) async fn failures(Extract(state): Extract<State>) -> Result<Html<String>, PageError> {
    let failed = admin::failed_jobs(
        &state.pool,
        &FailedFilter {
            limit: Some(FAILURES_READ),
            ..FailedFilter::default()
        },
    )
    .await?;
    // Newest first already: the first of each group is its latest.
    let mut groups: BTreeMap<(String, String), FailureGroup> = BTreeMap::new();
    let mut order = Vec::new();
    for job in &failed {
        let kind = job
            .error
            .clone()
            .unwrap_or_else(|| "(no error recorded)".into());
        let key = (job.task_name.clone(), kind.clone());
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            FailureGroup {
                task: job.task_name.clone(),
                task_shown: shown(&job.task_name, CELL_CHARS),
                kind: shown(&kind, CELL_CHARS),
                jobs: 0,
                latest: time(job.finished_at),
                message: dawdle::text::excerpt(job.error_message.as_deref().unwrap_or(""), 200),
                ids: Vec::new(),
            }
        });
        group.jobs += 1;
        if group.ids.len() < 10 {
            group.ids.push(job.id);
        }
    }
    let groups = order
        .into_iter()
        .filter_map(|key| groups.remove(&key))
        .collect();
    Ok(render(&Failures {
        csrf: state.token(),
        base: state.base,
        groups,
        shown: failed.len(),
    }))
}

// ------------------------------------------------------------------ queues

struct QueueRow {
    name: String,
    todo: i64,
    doing: i64,
    succeeded: i64,
    failed: i64,
    paused: Option<admin::PausedQueue>,
    paused_at: String,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct Queues {
    base: String,
    csrf: String,
    rows: Vec<QueueRow>,
}

pub(crate) async fn queues(Extract(state): Extract<State>) -> Result<Html<String>, PageError> {
    // Counts and pauses only: the full health reading scans history.
    let counts =
        admin::group_counts(&state.pool, admin::Grouping::Queue, &JobFilter::default()).await?;
    let mut rows: Vec<QueueRow> = counts
        .into_iter()
        .map(|counts| QueueRow {
            name: counts.name,
            todo: counts.todo,
            doing: counts.doing,
            succeeded: counts.succeeded,
            failed: counts.failed,
            paused: None,
            paused_at: String::new(),
        })
        .collect();
    for paused in admin::paused_queues(&state.pool).await? {
        let at = time(Some(paused.paused_at));
        match rows.iter_mut().find(|row| row.name == paused.queue) {
            Some(row) => {
                row.paused_at = at;
                row.paused = Some(paused);
            }
            None => rows.push(QueueRow {
                name: paused.queue.clone(),
                todo: 0,
                doing: 0,
                succeeded: 0,
                failed: 0,
                paused: Some(paused),
                paused_at: at,
            }),
        }
    }
    Ok(render(&Queues {
        csrf: state.token(),
        base: state.base,
        rows,
    }))
}

// ----------------------------------------------------------------- workers

struct WorkerLine {
    id: i64,
    heartbeat: String,
    silent: String,
    live: bool,
    running: i64,
}

struct PeriodicLine {
    task: String,
    periodic_id: String,
    last_tick: String,
    last_job: Option<i64>,
    defers: i64,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct Workers {
    base: String,
    workers: Vec<WorkerLine>,
    periodic: Vec<PeriodicLine>,
}

pub(crate) async fn workers(Extract(state): Extract<State>) -> Result<Html<String>, PageError> {
    let live_within = StatsConfig::default().worker_alive_within.as_secs_f64();
    let workers = admin::workers(&state.pool)
        .await?
        .into_iter()
        .map(|worker| WorkerLine {
            id: worker.id,
            heartbeat: time(Some(worker.last_heartbeat)),
            silent: if worker.silent_seconds.is_finite() {
                admin::human_duration(worker.silent_seconds.max(0.0))
            } else {
                "(unknown)".into()
            },
            // A heartbeat from the future (beyond clock skew) is no sign of life.
            live: worker.silent_seconds <= live_within
                && worker.silent_seconds >= -admin::HEARTBEAT_SKEW.as_secs_f64(),
            running: worker.running,
        })
        .collect();
    let periodic = admin::periodic_defers(&state.pool)
        .await?
        .into_iter()
        .map(|defer| PeriodicLine {
            task: defer.task_name,
            periodic_id: defer.periodic_id,
            last_tick: time(defer.last_tick),
            last_job: defer.last_job_id,
            defers: defer.defers,
        })
        .collect();
    Ok(render(&Workers {
        base: state.base,
        workers,
        periodic,
    }))
}

// ------------------------------------------------------------------- purge

#[derive(Debug, Deserialize)]
pub(crate) struct PurgeQuery {
    days: Option<String>,
    include_failed: Option<String>,
    queue: Option<String>,
}

/// What a purge would delete, read from a form (the preview and the
/// action read the same fields).
pub(crate) struct PurgeRequest {
    pub(crate) days: u64,
    pub(crate) include_failed: bool,
    pub(crate) queue: Option<String>,
}

impl PurgeRequest {
    /// Whole days, 1 or more; a clear error otherwise.
    pub(crate) fn read(
        days: Option<&str>,
        include_failed: Option<&str>,
        queue: Option<String>,
    ) -> Result<Self, String> {
        let days = days.unwrap_or("30").trim();
        let days = days
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| {
                format!(
                    "{} is not a number of days from 1 to 36500",
                    dawdle::text::quote(days)
                )
            })?;
        Ok(Self {
            days,
            include_failed: include_failed.is_some_and(|v| v == "on" || v == "true"),
            queue: non_empty(queue),
        })
    }

    pub(crate) fn options(&self, dry_run: bool) -> admin::PurgeOptions {
        admin::PurgeOptions {
            older_than: std::time::Duration::from_secs(self.days * 86_400),
            include_failed: self.include_failed,
            queue: self.queue.clone(),
            dry_run,
            batch_size: 10_000,
        }
    }
}

#[derive(Template)]
#[template(path = "purge.html")]
struct Purge {
    base: String,
    csrf: String,
    days: String,
    include_failed: bool,
    queue: String,
    /// How many jobs the purge would delete, once previewed.
    preview: Option<u64>,
    problem: Option<String>,
}

pub(crate) async fn purge(
    Extract(state): Extract<State>,
    Query(query): Query<PurgeQuery>,
) -> Result<Html<String>, PageError> {
    let previewing = query.days.is_some();
    let days = query.days.clone().unwrap_or_else(|| "30".into());
    let (preview, problem, include_failed, queue) = match PurgeRequest::read(
        query.days.as_deref(),
        query.include_failed.as_deref(),
        query.queue.clone(),
    ) {
        Ok(request) => {
            let preview = if previewing {
                Some(
                    admin::purge(&state.pool, &request.options(true), |_| {})
                        .await
                        .map_err(|error| PageError::from_message(&error.to_string()))?,
                )
            } else {
                None
            };
            (
                preview,
                None,
                request.include_failed,
                request.queue.unwrap_or_default(),
            )
        }
        Err(why) => (None, Some(why), false, query.queue.unwrap_or_default()),
    };
    Ok(render(&Purge {
        csrf: state.token(),
        base: state.base,
        days,
        include_failed,
        queue,
        preview,
        problem,
    }))
}

// ------------------------------------------------------------------ assets

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/dashboard.js");

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
