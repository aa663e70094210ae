//! Middleware around job execution, so applications add tracing, metrics,
//! their own logging or policies without forking the worker. The worker's
//! own job logs are a middleware too ([`LogJobs`], installed by default).
//!
//! A middleware can *wrap* each attempt ([`Middleware::wrap`]): it runs in
//! the attempt's own tokio task, around the task's code, so it can time it,
//! put it in a tracing span its logs inherit, or short-circuit it (return
//! without calling [`Attempt::run`], and the task never runs). It can also
//! be *told* of each attempt's start and end ([`Middleware::before`],
//! [`Middleware::after`], [`Middleware::on_error`]), with the verdict the
//! worker drew (retry when, failed for good, snoozed...).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::job::Job;
use crate::task_error::TaskError;
use crate::text::printable;

/// An attempt's future, as middleware passes it on.
pub type BoxAttempt<'a> = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send + 'a>>;

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

/// One attempt on its way through the middleware: the job, and the rest of
/// the chain down to the task's own code.
pub struct Attempt<'a> {
    job: &'a Job,
    rest: &'a [Arc<dyn Middleware>],
    task: BoxAttempt<'a>,
}

impl<'a> Attempt<'a> {
    /// The attempt of `job` running `task` inside `chain` (outermost first).
    pub(crate) fn new(
        job: &'a Job,
        chain: &'a [Arc<dyn Middleware>],
        task: BoxAttempt<'a>,
    ) -> Self {
        Self {
            job,
            rest: chain,
            task,
        }
    }

    /// The job this attempt runs (its `attempts` counts those before it).
    pub fn job(&self) -> &'a Job {
        self.job
    }

    /// Runs the rest of the chain and the task; its result is the
    /// attempt's unless the caller returns another.
    pub fn run(self) -> BoxAttempt<'a> {
        match self.rest.split_first() {
            Some((next, rest)) => next.wrap(Attempt {
                job: self.job,
                rest,
                task: self.task,
            }),
            None => self.task,
        }
    }
}

impl std::fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("job_id", &self.job.id)
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

/// Called by the worker for every attempt. Every method has a default that
/// does nothing (`wrap` just runs the attempt).
///
/// `wrap` runs in the attempt's task: a panic there fails the attempt as a
/// `Panic`, like one in the task. The other hooks run on the worker's own
/// task (keep them quick: they delay the next claim), and a panic in them is
/// logged and goes no further.
pub trait Middleware: Send + Sync + 'static {
    /// Wraps the attempt: call `attempt.run().await` to go on (to the next
    /// middleware, then the task), or return without it to short-circuit.
    /// The attempt's timeout bounds the task's code only.
    fn wrap<'a>(&'a self, attempt: Attempt<'a>) -> BoxAttempt<'a> {
        attempt.run()
    }

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
              attempt = job.attempt(), "job started");
    }

    fn after(&self, job: &Job, end: AttemptEnd<'_>, duration: Duration) {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let (id, task, queue, attempt) = (
            job.id,
            printable(&job.task_name),
            printable(&job.queue_name),
            job.attempt(),
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
