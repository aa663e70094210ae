//! Errors as data: what a failed attempt records in its `error` event.
//!
//! A [`TaskError`] has a short kind (`ConnectionError`, `TimeoutError`,
//! `ValidationError`, `DatabaseError`, `Panic`, or a task's own), a message,
//! and the full cause chain as `error_traceback`, so the runbook's "errors by
//! type" query and `dawdle job` show the root cause. Any `std::error::Error`
//! converts with `?`; well-known error types get their kind automatically.

use std::error::Error as StdError;
use std::fmt;

use crate::text;

/// Kind of a connection failure to another service.
pub const CONNECTION_ERROR: &str = "ConnectionError";
/// Kind of an attempt that ran out of time.
pub const TIMEOUT_ERROR: &str = "TimeoutError";
/// Kind of bad job arguments: never retried.
pub const VALIDATION_ERROR: &str = "ValidationError";
/// Kind of a database failure.
pub const DATABASE_ERROR: &str = "DatabaseError";
/// Kind of a task that panicked.
pub const PANIC: &str = "Panic";
/// Kind of a job whose task no worker knows.
pub const UNKNOWN_TASK: &str = "UnknownTask";
/// Kind of an attempt interrupted by the worker shutting down.
pub const WORKER_SHUTDOWN: &str = "WorkerShutdown";
/// Kind given to errors nobody classified.
pub const GENERIC_ERROR: &str = "Error";
/// Kind of a job put back because no live worker held it any more, or
/// because an operator reset it.
pub const STALLED: &str = "Stalled";
/// Kind of an attempt stopped because its abort was requested.
pub const ABORTED: &str = "Aborted";
/// Kind recorded when a task cancels its own job ([`TaskError::cancel`]).
pub const CANCELLED: &str = "Cancelled";
/// Kind of a task's request to run again later ([`TaskError::snooze`]);
/// never stored as an error.
pub const SNOOZED: &str = "Snoozed";

/// An error kind: the ones dawdle gives errors itself, or a task's own.
/// Stored as its name (`ErrorKind::as_str`), the `error` column of an
/// `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `ConnectionError`: another service could not be reached.
    Connection,
    /// `TimeoutError`: an attempt or a call ran out of time.
    Timeout,
    /// `ValidationError`: bad arguments; never retried.
    Validation,
    /// `DatabaseError`.
    Database,
    /// `Panic`: the task panicked.
    Panic,
    /// `UnknownTask`: no task of that name in this worker.
    UnknownTask,
    /// `WorkerShutdown`: the worker stopped before the attempt ended.
    WorkerShutdown,
    /// `Stalled`: put back because its worker stopped, or by an operator.
    Stalled,
    /// `Aborted`: stopped on request.
    Aborted,
    /// `Cancelled`: the task cancelled its own job.
    Cancelled,
    /// `Snoozed`: the task asked to run again later.
    Snoozed,
    /// `Error`: nobody classified it.
    Generic,
    /// A task's own kind.
    Other(String),
}

impl ErrorKind {
    const KNOWN: [(ErrorKind, &'static str); 12] = [
        (ErrorKind::Connection, CONNECTION_ERROR),
        (ErrorKind::Timeout, TIMEOUT_ERROR),
        (ErrorKind::Validation, VALIDATION_ERROR),
        (ErrorKind::Database, DATABASE_ERROR),
        (ErrorKind::Panic, PANIC),
        (ErrorKind::UnknownTask, UNKNOWN_TASK),
        (ErrorKind::WorkerShutdown, WORKER_SHUTDOWN),
        (ErrorKind::Stalled, STALLED),
        (ErrorKind::Aborted, ABORTED),
        (ErrorKind::Cancelled, CANCELLED),
        (ErrorKind::Snoozed, SNOOZED),
        (ErrorKind::Generic, GENERIC_ERROR),
    ];

    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::Other(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(kind, _)| kind == known)
                .map_or(GENERIC_ERROR, |(_, name)| name),
        }
    }

    /// The kind a stored name stands for.
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, known)| *known == name)
            .map_or_else(
                || ErrorKind::Other(name.to_string()),
                |(kind, _)| kind.clone(),
            )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorKind> for String {
    fn from(kind: ErrorKind) -> Self {
        kind.as_str().to_string()
    }
}

/// Longest error kind stored; a longer (or empty) kind becomes `Error`.
pub const MAX_KIND_CHARS: usize = 64;
/// Longest error message stored or logged, in bytes; longer ones are cut
/// and end with [`text::TRUNCATED`].
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest traceback stored, in bytes.
pub const MAX_TRACEBACK_BYTES: usize = 64 * 1024;

/// `kind` if it is a usable error kind (1 to [`MAX_KIND_CHARS`] printable
/// characters, not all blank), else `Error` and a note saying what it was.
fn checked_kind(kind: String) -> (String, Option<String>) {
    let len = kind.chars().count();
    let problem = if kind.trim().is_empty() {
        "is empty"
    } else if len > MAX_KIND_CHARS {
        "is longer than 64 characters"
    } else if kind.chars().any(char::is_control) {
        "holds control characters"
    } else {
        return (kind, None);
    };
    let note = format!(
        "note: the error kind {} {problem}; recorded as {GENERIC_ERROR}",
        text::quote(&kind)
    );
    (GENERIC_ERROR.to_string(), Some(note))
}

/// What a task asked for by returning a [`TaskError`] that is not a plain
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Run again after this long; not an attempt, not an error.
    Snooze(std::time::Duration),
    /// End the job as `cancelled`.
    Cancel,
}

/// Why an attempt failed, or what the task asked for instead of
/// succeeding ([`snooze`](Self::snooze), [`cancel`](Self::cancel)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: String,
    message: String,
    traceback: String,
    retryable: bool,
    request: Option<Request>,
}

impl TaskError {
    /// An error of `kind` with `message`; its traceback is `kind: message`.
    ///
    /// What is stored and logged is bounded: a kind that is empty, longer
    /// than [`MAX_KIND_CHARS`] or not printable becomes `Error` (the
    /// traceback says what it was), the message is cut at
    /// [`MAX_MESSAGE_BYTES`] and the traceback at [`MAX_TRACEBACK_BYTES`],
    /// each ending with a visible marker when cut.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let (kind, note) = checked_kind(kind.into());
        let mut traceback = format!("{kind}: {message}");
        if let Some(note) = note {
            traceback.push('\n');
            traceback.push_str(&note);
        }
        Self {
            retryable: kind != VALIDATION_ERROR,
            message: text::storable(&message, MAX_MESSAGE_BYTES).into_owned(),
            traceback: text::storable(&traceback, MAX_TRACEBACK_BYTES).into_owned(),
            kind,
            request: None,
        }
    }

    /// Not a failure: the job goes back to `todo` and runs again after
    /// `wait`, without counting an attempt or recording an error (its
    /// history shows `deferred_for_retry` and `scheduled`). For work that
    /// cannot be done yet, such as waiting on another service's batch:
    ///
    /// ```
    /// # async fn ready() -> bool { true }
    /// # async fn run() -> Result<(), dawdle::TaskError> {
    /// if !ready().await {
    ///     return Err(dawdle::TaskError::snooze(std::time::Duration::from_secs(60)));
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// A job that snoozes forever runs forever; count in its arguments or
    /// state if that matters. A job whose abort was requested is aborted,
    /// not snoozed.
    pub fn snooze(wait: std::time::Duration) -> Self {
        let mut snooze = Self::new(
            SNOOZED,
            format!("the task asked to run again in {} s", wait.as_secs_f64()),
        );
        snooze.retryable = false;
        snooze.request = Some(Request::Snooze(wait));
        snooze
    }

    /// The job is not worth doing any more (the user it was for is gone,
    /// a newer job supersedes it): it ends `cancelled`, never retried, and
    /// its history keeps an `error` event of kind `Cancelled` with `reason`.
    pub fn cancel(reason: impl Into<String>) -> Self {
        let mut cancel = Self::new(CANCELLED, reason);
        cancel.retryable = false;
        cancel.request = Some(Request::Cancel);
        cancel
    }

    /// What the task asked for, if this is a snooze or a cancel.
    pub(crate) fn request(&self) -> Option<Request> {
        self.request
    }

    /// How long a [`snooze`](Self::snooze) waits; `None` for anything else.
    pub fn snoozed_for(&self) -> Option<std::time::Duration> {
        match self.request {
            Some(Request::Snooze(wait)) => Some(wait),
            _ => None,
        }
    }

    /// Whether this is a [`cancel`](Self::cancel).
    pub fn is_cancel(&self) -> bool {
        self.request == Some(Request::Cancel)
    }

    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(CONNECTION_ERROR, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(TIMEOUT_ERROR, message)
    }

    /// Bad arguments: the job fails without retry.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(VALIDATION_ERROR, message)
    }

    pub fn database(message: impl Into<String>) -> Self {
        Self::new(DATABASE_ERROR, message)
    }

    /// From any error, with its whole cause chain, under the given kind.
    pub fn from_error(kind: impl Into<String>, error: &(dyn StdError + 'static)) -> Self {
        let mut task_error = Self::new(kind, error.to_string());
        let chain = cause_chain(&task_error.kind, error);
        task_error.traceback = text::storable(&chain, MAX_TRACEBACK_BYTES).into_owned();
        task_error
    }

    /// The same error under another kind (bounded as in [`TaskError::new`]).
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        let (kind, note) = checked_kind(kind.into());
        let mut traceback = match self.traceback.strip_prefix(&format!("{}: ", self.kind)) {
            Some(rest) => format!("{kind}: {rest}"),
            None => self.traceback,
        };
        if let Some(note) = note {
            traceback.push('\n');
            traceback.push_str(&note);
        }
        self.traceback = text::storable(&traceback, MAX_TRACEBACK_BYTES).into_owned();
        self.retryable = self.retryable && kind != VALIDATION_ERROR;
        self.kind = kind;
        self
    }

    /// Fail the job now, whatever the retry strategy says.
    pub fn no_retry(mut self) -> Self {
        self.retryable = false;
        self
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The kind, typed.
    pub fn error_kind(&self) -> ErrorKind {
        ErrorKind::from_name(&self.kind)
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause chain, one error per line, outermost first.
    pub fn traceback(&self) -> &str {
        &self.traceback
    }

    /// Whether the retry strategy may retry it.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<E> From<E> for TaskError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let kind = classify(&error);
        Self::from_error(kind, &error)
    }
}

/// The runbook's kinds for the error types whose meaning is known.
fn classify(error: &(dyn StdError + 'static)) -> &'static str {
    if let Some(error) = error.downcast_ref::<sqlx::Error>() {
        return match error {
            sqlx::Error::PoolTimedOut => TIMEOUT_ERROR,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => CONNECTION_ERROR,
            _ => DATABASE_ERROR,
        };
    }
    if error.is::<tokio::time::error::Elapsed>() {
        return TIMEOUT_ERROR;
    }
    if error.is::<serde_json::Error>() {
        return VALIDATION_ERROR;
    }
    if let Some(error) = error.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        return match error.kind() {
            ErrorKind::TimedOut => TIMEOUT_ERROR,
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::AddrNotAvailable => CONNECTION_ERROR,
            _ => GENERIC_ERROR,
        };
    }
    GENERIC_ERROR
}

fn cause_chain(kind: &str, error: &(dyn StdError + 'static)) -> String {
    let mut chain = format!("{kind}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(&format!("\ncaused by: {cause}"));
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("send welcome email to user 42")]
    struct SendFailed(#[source] std::io::Error);

    #[test]
    fn the_cause_chain_becomes_the_traceback() {
        let error = SendFailed(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "smtp.example.com:25 refused the connection",
        ));
        let task_error = TaskError::from(error).with_kind(CONNECTION_ERROR);
        assert_eq!(task_error.kind(), "ConnectionError");
        assert_eq!(task_error.message(), "send welcome email to user 42");
        assert_eq!(
            task_error.traceback(),
            "ConnectionError: send welcome email to user 42\n\
             caused by: smtp.example.com:25 refused the connection"
        );
        assert!(task_error.is_retryable());
    }

    #[test]
    fn well_known_errors_get_the_runbook_kinds() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(TaskError::from(refused).kind(), CONNECTION_ERROR);
        let bad_json = serde_json::from_str::<i32>("x").unwrap_err();
        let validation = TaskError::from(bad_json);
        assert_eq!(validation.kind(), VALIDATION_ERROR);
        assert!(!validation.is_retryable());
        assert_eq!(
            TaskError::from(sqlx::Error::RowNotFound).kind(),
            DATABASE_ERROR
        );
        assert_eq!(
            TaskError::from(sqlx::Error::PoolTimedOut).kind(),
            TIMEOUT_ERROR
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for (kind, name) in ErrorKind::KNOWN {
            assert_eq!(kind.as_str(), name);
            assert_eq!(ErrorKind::from_name(name), kind);
        }
        assert_eq!(
            ErrorKind::from_name("SmtpDown"),
            ErrorKind::Other("SmtpDown".into())
        );
        assert_eq!(
            TaskError::new(ErrorKind::Stalled, "x").error_kind(),
            ErrorKind::Stalled
        );
    }

    #[test]
    fn unusable_kinds_become_error_and_say_so() {
        for bad in ["", "   ", &"K".repeat(65), "Bad\nKind"] {
            let error = TaskError::new(bad, "boom");
            assert_eq!(error.kind(), GENERIC_ERROR, "{bad:?}");
            assert!(
                error.traceback().contains("note: the error kind"),
                "{}",
                error.traceback()
            );
        }
        assert_eq!(TaskError::new("K".repeat(64), "x").kind(), "K".repeat(64));
        assert_eq!(
            TaskError::new("Custom", "x").with_kind("").kind(),
            GENERIC_ERROR
        );
    }

    #[test]
    fn messages_and_tracebacks_are_bounded_and_storable() {
        let error = TaskError::new("Custom", format!("a\0b{}", "x".repeat(1 << 20)));
        assert!(error.message().len() <= MAX_MESSAGE_BYTES);
        assert!(error.message().ends_with(text::TRUNCATED));
        assert!(error.message().starts_with("a\\0b"));
        assert!(error.traceback().len() <= MAX_TRACEBACK_BYTES);
        assert!(!error.traceback().contains('\0'));
    }

    #[test]
    fn validation_errors_are_never_retryable() {
        assert!(!TaskError::validation("bad").is_retryable());
        assert!(!TaskError::new("Custom", "x")
            .with_kind(VALIDATION_ERROR)
            .is_retryable());
        assert!(!TaskError::connection("x").no_retry().is_retryable());
    }
}
