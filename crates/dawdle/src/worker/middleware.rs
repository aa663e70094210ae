//! Hooks around job execution, so applications add tracing, metrics or their
//! own logging without forking the worker. The worker's own job logs are a
//! middleware too ([`LogJobs`], installed by default).

use crate::text::printable;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::job::Job;
use crate::task_error::TaskError;

/// How an attempt ended, as middleware sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AttemptEnd<'a> {
    Succeeded,
    /// Failed; runs again after `wait`.
    WillRetry {
        error: &'a TaskError,
        wait: Duration,
    },
    /// Failed for good.
    Failed {
        error: &'a TaskError,
    },
    /// The task asked to run again after `wait` ([`TaskError::snooze`]).
    Snoozed {
        wait: Duration,
    },
    /// The task cancelled its job ([`TaskError::cancel`]).
    Cancelled {
        reason: &'a TaskError,
    },
    /// Stopped because an abort was requested.
    Aborted,
    /// The worker stopped before the attempt finished; the job runs again.
    Interrupted,
}

/// Called by the worker around every attempt, on the worker's task (keep
/// them quick: they delay the next claim). Every method has an empty default.
pub trait Middleware: Send + Sync + 'static {
    /// The attempt is about to start.
    fn before(&self, _job: &Job) {}

    /// The attempt ended; `duration` is its run time.
    fn after(&self, _job: &Job, _end: AttemptEnd<'_>, _duration: Duration) {}

    /// The attempt failed (called before `after`).
    fn on_error(&self, _job: &Job, _error: &TaskError, _will_retry: bool) {}
}

/// The worker's structured job logs: a line per transition with job id,
/// task, queue, attempt and duration.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogJobs;

impl Middleware for LogJobs {
    fn before(&self, job: &Job) {
        info!(job_id = job.id, task = %printable(&job.task_name), queue = %printable(&job.queue_name),
              attempt = job.attempts + 1, "job started");
    }

    fn after(&self, job: &Job, end: AttemptEnd<'_>, duration: Duration) {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let (id, task, queue, attempt) = (
            job.id,
            printable(&job.task_name),
            printable(&job.queue_name),
            job.attempts + 1,
        );
        match end {
            AttemptEnd::Succeeded => info!(job_id = id, task = %task, queue = %queue, attempt,
                                           duration_ms, "job succeeded"),
            AttemptEnd::WillRetry { error, wait } => {
                warn!(job_id = id, task = %task, queue = %queue,
                attempt, duration_ms, error_kind = error.kind(), error = %printable(error.message()),
                retry_in_s = wait.as_secs_f64(), "job failed; retry scheduled")
            }
            AttemptEnd::Failed { error } => {
                error!(job_id = id, task = %task, queue = %queue, attempt,
                duration_ms, error_kind = error.kind(), error = %printable(error.message()), "job failed")
            }
            AttemptEnd::Snoozed { wait } => {
                info!(job_id = id, task = %task, queue = %queue, attempt,
                duration_ms, snooze_s = wait.as_secs_f64(), "job snoozed; runs again later")
            }
            AttemptEnd::Cancelled { reason } => warn!(job_id = id, task = %task, queue = %queue,
                attempt, duration_ms, reason = %printable(reason.message()), "job cancelled by its task"),
            AttemptEnd::Aborted => warn!(job_id = id, task = %task, queue = %queue, attempt,
                                         duration_ms, "job aborted"),
            AttemptEnd::Interrupted => warn!(job_id = id, task = %task, queue = %queue, attempt,
                duration_ms, "job interrupted by shutdown; put back for retry"),
        }
    }
}
