//! Job rows as they are stored, and new jobs as they are deferred.
//!
//! A [`NewJob`] is validated before any SQL runs, so a bad name or non-object
//! arguments come back as a clear [`InvalidJob`] instead of a database error
//! halfway through a batch.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::rows::DbTime;
use crate::trace_context::TraceContext;

/// Longest queue, task or periodic name the schema stores (`varchar(128)`).
pub const MAX_NAME_LEN: usize = 128;

/// The queue a job goes to when nobody says otherwise (Procrastinate's default).
pub const DEFAULT_QUEUE: &str = "default";

/// Status of a job: `procrastinate_job_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, sqlx::Type)]
#[sqlx(type_name = "procrastinate_job_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Todo,
    Doing,
    Succeeded,
    Failed,
    Cancelled,
    /// Kept for compatibility with older Procrastinate releases; never set.
    Aborting,
    Aborted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Todo,
        JobStatus::Doing,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Aborting,
        JobStatus::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Todo => "todo",
            JobStatus::Doing => "doing",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Aborting => "aborting",
            JobStatus::Aborted => "aborted",
        }
    }

    /// Whether the job has ended (it will not run again unless retried by hand).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Aborted
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job status {}; expected one of {}",
                    crate::text::quote(s),
                    known.join(", ")
                )
            })
    }
}

/// Type of a history event: `procrastinate_job_event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "procrastinate_job_event_type", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Deferred,
    Started,
    DeferredForRetry,
    Failed,
    Succeeded,
    Cancelled,
    AbortRequested,
    Aborted,
    Scheduled,
    Retried,
    /// dawdle's addition: one failed attempt, with its error details.
    Error,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Deferred => "deferred",
            EventType::Started => "started",
            EventType::DeferredForRetry => "deferred_for_retry",
            EventType::Failed => "failed",
            EventType::Succeeded => "succeeded",
            EventType::Cancelled => "cancelled",
            EventType::AbortRequested => "abort_requested",
            EventType::Aborted => "aborted",
            EventType::Scheduled => "scheduled",
            EventType::Retried => "retried",
            EventType::Error => "error",
        }
    }
}

/// A row of `procrastinate_jobs`.
///
/// Decoding a row never fails for what its values are: timestamps beyond
/// chrono's range (`infinity` included) read as `DateTime::MIN_UTC` or
/// `MAX_UTC`, and arguments serde_json cannot represent leave `args` null
/// with [`Job::args_error`] saying why. A worker fails such a job alone,
/// with a `ValidationError`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub queue_name: String,
    pub task_name: String,
    pub priority: i32,
    pub lock: Option<String>,
    pub queueing_lock: Option<String>,
    pub args: Value,
    /// Why the stored arguments could not be read (a number beyond what a
    /// 64-bit float holds, JSON nested deeper than 128 levels), quoting
    /// their beginning; `args` is then null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_error: Option<String>,
    pub status: JobStatus,
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
    pub scheduled_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub abort_requested: bool,
    pub worker_id: Option<i64>,
    #[serde(serialize_with = "crate::rows::serialize_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The trace context the job was deferred with, read by the claim
    /// (other reads leave it unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

/// The columns of [`Job`], for `SELECT`s that must not depend on `*`.
/// Arguments come as text: parsing them is per job, in Rust.
pub(crate) const JOB_COLUMNS: &str = "id, queue_name, task_name, priority, lock, queueing_lock, \
    args::text AS args, status, scheduled_at, attempts, abort_requested, worker_id, created_at, \
    started_at, finished_at";

impl Job {
    /// The number of the attempt a run of this job is: one more than the
    /// attempts recorded, which a row may hold at the top of their range.
    pub fn attempt(&self) -> i32 {
        self.attempts.saturating_add(1)
    }
}

#[cfg(test)]
impl Job {
    /// A job of task `task` in `doing` under worker 1, for unit tests.
    pub(crate) fn doing_for_tests(id: i64, task: &str) -> Self {
        let now = Utc::now();
        Self {
            id,
            queue_name: "default".into(),
            task_name: task.into(),
            priority: 0,
            lock: None,
            queueing_lock: None,
            args: serde_json::json!({}),
            args_error: None,
            status: JobStatus::Doing,
            scheduled_at: None,
            attempts: 0,
            abort_requested: false,
            worker_id: Some(1),
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            trace_context: None,
        }
    }
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Job {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let (args, args_error) = parse_args(&row.try_get::<JsonText, _>("args")?.0);
        Job::from_row_with_args(row, args, args_error)
    }
}

impl Job {
    /// A job from a row of [`JOB_COLUMNS`] but for its arguments, which
    /// the caller read (or chose not to read) itself.
    pub(crate) fn from_row_with_args(
        row: &sqlx::postgres::PgRow,
        args: Value,
        args_error: Option<String>,
    ) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let time = |column: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
            Ok(row.try_get::<DbTime, _>(column)?.0)
        };
        Ok(Job {
            id: row.try_get("id")?,
            queue_name: row.try_get("queue_name")?,
            task_name: row.try_get("task_name")?,
            priority: row.try_get("priority")?,
            lock: row.try_get("lock")?,
            queueing_lock: row.try_get("queueing_lock")?,
            args,
            args_error,
            status: row.try_get("status")?,
            scheduled_at: time("scheduled_at")?,
            attempts: row.try_get("attempts")?,
            abort_requested: row.try_get("abort_requested")?,
            worker_id: row.try_get("worker_id")?,
            created_at: time("created_at")?.unwrap_or(DateTime::<Utc>::MIN_UTC),
            started_at: time("started_at")?,
            finished_at: time("finished_at")?,
            trace_context: optional_trace_context(row)?,
        })
    }
}

/// The `traceparent` and `tracestate` columns, when the query has them.
fn optional_trace_context(
    row: &sqlx::postgres::PgRow,
) -> Result<Option<TraceContext>, sqlx::Error> {
    use sqlx::Row;
    let column = |name: &str| match row.try_get::<Option<String>, _>(name) {
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        other => other,
    };
    Ok(TraceContext::from_columns(
        column("traceparent")?,
        column("tracestate")?,
    ))
}

/// Most characters of stored arguments quoted by [`Job::args_error`].
const ARGS_EXCERPT_CHARS: usize = 120;

/// A job's arguments from their stored text: the value, or null and why not.
pub(crate) fn parse_args(text: &str) -> (Value, Option<String>) {
    match serde_json::from_str(text) {
        Ok(args) => (args, None),
        Err(error) => (
            Value::Null,
            Some(format!(
                "the stored arguments cannot be read as JSON here ({error}); they begin \"{}\"",
                crate::text::excerpt(text, ARGS_EXCERPT_CHARS)
            )),
        ),
    }
}

/// JSON as its text, from a `json`, `jsonb` or `text` column.
struct JsonText(String);

impl sqlx::Type<sqlx::Postgres> for JsonText {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            || <Value as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for JsonText {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        use sqlx::{TypeInfo, ValueRef};
        let binary_jsonb = value.format() == sqlx::postgres::PgValueFormat::Binary
            && value.type_info().name() == "JSONB";
        let bytes = value.as_bytes()?;
        // Binary jsonb is a version byte (1) followed by the text.
        let bytes = if binary_jsonb {
            bytes.get(1..).unwrap_or_default()
        } else {
            bytes
        };
        Ok(JsonText(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// A row of `procrastinate_events`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub job_id: i64,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub event_type: Option<EventType>,
    #[sqlx(try_from = "DbTime")]
    #[serde(serialize_with = "crate::rows::serialize_optional_time")]
    pub at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub error_message: Option<String>,
    pub error_traceback: Option<String>,
}

/// Why a job was rejected before reaching the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJob(pub String);

/// A job to defer: task name, JSON object arguments and placement options.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub task_name: String,
    pub args: Map<String, Value>,
    pub queue: String,
    pub priority: i32,
    pub lock: Option<String>,
    pub queueing_lock: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The trace context of the code deferring the job; each attempt's span
    /// links to it.
    pub trace_context: Option<TraceContext>,
}

impl NewJob {
    /// A job for a task known only by name, with raw JSON arguments (a job
    /// another process, Python for instance, will run). `args` must be a
    /// JSON object: the task receives it as keyword arguments.
    pub fn new(task_name: impl Into<String>, args: Value) -> Result<Self, InvalidJob> {
        let task_name = task_name.into();
        let args = match args {
            Value::Object(map) => map,
            other => {
                return Err(InvalidJob(format!(
                    "arguments of task {} must be a JSON object (keyword arguments), not {}",
                    crate::text::quote(&task_name),
                    json_kind(&other)
                )))
            }
        };
        Ok(Self {
            task_name,
            args,
            queue: DEFAULT_QUEUE.to_string(),
            priority: 0,
            lock: None,
            queueing_lock: None,
            scheduled_at: None,
            trace_context: None,
        })
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Higher runs first; the default is 0.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Jobs sharing a lock run one at a time, in priority then id order.
    pub fn lock(mut self, lock: impl Into<String>) -> Self {
        self.lock = Some(lock.into());
        self
    }

    /// At most one waiting (`todo`) job per queueing lock; deferring a second
    /// one fails with [`crate::DeferError::AlreadyEnqueued`].
    pub fn queueing_lock(mut self, queueing_lock: impl Into<String>) -> Self {
        self.queueing_lock = Some(queueing_lock.into());
        self
    }

    /// Not runnable before `at`.
    pub fn scheduled_at(mut self, at: DateTime<Utc>) -> Self {
        self.scheduled_at = Some(at);
        self
    }

    /// Carries `context` (the deferring request's W3C trace context) with the
    /// job: each attempt's span links to it.
    pub fn trace_context(mut self, context: TraceContext) -> Self {
        self.trace_context = Some(context);
        self
    }

    /// Not runnable before `delay` from now (this machine's clock).
    pub fn scheduled_in(mut self, delay: std::time::Duration) -> Result<Self, InvalidJob> {
        let delay = chrono::Duration::from_std(delay)
            .map_err(|_| InvalidJob(format!("delay {delay:?} is too large")))?;
        let at = Utc::now()
            .checked_add_signed(delay)
            .ok_or_else(|| InvalidJob(format!("delay {delay} is too large")))?;
        self.scheduled_at = Some(at);
        Ok(self)
    }

    /// Checks everything the database would reject, with a clearer message.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        check_name("task name", &self.task_name)?;
        check_name("queue name", &self.queue)?;
        for (what, value) in [("lock", &self.lock), ("queueing lock", &self.queueing_lock)] {
            if value.as_deref() == Some("") {
                return Err(InvalidJob(format!(
                    "{what} of task {} is empty; leave it unset instead",
                    crate::text::quote(&self.task_name)
                )));
            }
            if value.as_deref().is_some_and(|value| value.contains('\0')) {
                return Err(InvalidJob(format!(
                    "{what} of task {} holds a NUL character (\\u0000), which PostgreSQL \
                     text cannot store",
                    crate::text::quote(&self.task_name)
                )));
            }
        }
        if let Some(path) = nul_in(&self.args) {
            return Err(InvalidJob(format!(
                "arguments of task {} hold a NUL character (\\u0000) at {}, which PostgreSQL's \
                 jsonb cannot store; encode the value (base64, say) or leave the character out",
                crate::text::quote(&self.task_name),
                crate::text::excerpt(&path, 200)
            )));
        }
        Ok(())
    }
}

/// Where in `args` a key or a string holds a NUL character, as a path
/// (`args.a[2].b`); `None` when nowhere. Walks with a stack of its own, so
/// no nesting depth can exhaust the thread's.
fn nul_in(args: &Map<String, Value>) -> Option<String> {
    // The common case first, without building any path.
    let mut values: Vec<&Value> = Vec::new();
    let mut found = false;
    for (key, value) in args {
        found |= key.contains('\0');
        values.push(value);
    }
    while let (false, Some(value)) = (found, values.pop()) {
        match value {
            Value::String(text) => found = text.contains('\0'),
            Value::Array(items) => values.extend(items),
            Value::Object(map) => {
                for (key, value) in map {
                    found |= key.contains('\0');
                    values.push(value);
                }
            }
            _ => {}
        }
    }
    if !found {
        return None;
    }
    let mut stack: Vec<(String, &Value)> = Vec::new();
    if let Some(found) = push_entries(&mut stack, "args", args) {
        return Some(found);
    }
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return Some(path),
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}[{index}]"), item));
                }
            }
            Value::Object(map) => {
                if let Some(found) = push_entries(&mut stack, &path, map) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// Pushes the entries of `map` at `path` for [`nul_in`]; the path of a key
/// holding a NUL character, if one does.
fn push_entries<'a>(
    stack: &mut Vec<(String, &'a Value)>,
    path: &str,
    map: &'a Map<String, Value>,
) -> Option<String> {
    for (key, value) in map.iter().rev() {
        let path = format!("{path}.{}", crate::text::excerpt(key, 40));
        if key.contains('\0') {
            return Some(path);
        }
        stack.push((path, value));
    }
    None
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), InvalidJob> {
    if name.is_empty() {
        return Err(InvalidJob(format!("{what} is empty")));
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(InvalidJob(format!(
            "{what} {} is {len} characters long; the limit is {MAX_NAME_LEN}",
            crate::text::quote(name)
        )));
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_object_arguments_are_rejected_with_their_kind() {
        let error = NewJob::new("t", json!([1, 2])).unwrap_err();
        assert!(error.0.contains("must be a JSON object"), "{error}");
        assert!(error.0.contains("an array"), "{error}");
    }

    #[test]
    fn nul_characters_are_rejected_with_where_they_are() {
        let job = NewJob::new("t", json!({"a": [1, {"b": "x\u{0}y"}]})).unwrap();
        let error = job.validate().unwrap_err().0;
        assert!(
            error.contains("NUL character") && error.contains("args.a[1].b"),
            "{error}"
        );
        let job = NewJob::new("t", json!({"k\u{0}": 1})).unwrap();
        assert!(job.validate().unwrap_err().0.contains("args.k"));
        let job = NewJob::new("t", json!({})).unwrap().lock("l\u{0}");
        assert!(job.validate().unwrap_err().0.starts_with("lock of task"));
        assert!(NewJob::new("t", json!({"a": "fine"}))
            .unwrap()
            .validate()
            .is_ok());
    }

    #[test]
    fn names_over_128_characters_are_rejected() {
        let long = "x".repeat(129);
        let job = NewJob::new(long.clone(), json!({})).unwrap();
        assert!(job.validate().unwrap_err().0.contains("129 characters"));
        let job = NewJob::new("t", json!({})).unwrap().queue(long);
        assert!(job.validate().unwrap_err().0.starts_with("queue name"));
        // 128 multi-byte characters fit: the limit is in characters, as in varchar(128).
        let job = NewJob::new("é".repeat(128), json!({})).unwrap();
        assert!(job.validate().is_ok());
    }

    #[test]
    fn empty_names_and_locks_are_rejected() {
        assert!(NewJob::new("", json!({})).unwrap().validate().is_err());
        let job = NewJob::new("t", json!({})).unwrap().lock("");
        assert!(job.validate().unwrap_err().0.contains("lock"));
    }

    #[test]
    fn status_parses_from_its_name() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done"
            .parse::<JobStatus>()
            .unwrap_err()
            .contains("expected one of"));
    }
}
