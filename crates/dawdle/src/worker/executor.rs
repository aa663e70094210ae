//! Running claimed jobs: each attempt is a tokio task with its context,
//! timeout and abort; when it ends, its outcome (and the retry decision)
//! goes to the completer. Stopping lets running jobs finish within the
//! shutdown timeout and puts the others back.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tracing::{error, info, Instrument};

use super::config::Retention;
use super::handle::{Control, Stop};
use super::metrics::{self, JobLabels};
use super::middleware::{Attempt, AttemptEnd, BoxAttempt};
use super::producer::Loop;
use super::registry::{RegisteredTask, Registry};
use super::store::Store;
use crate::context::JobContext;
use crate::job::Job;
use crate::state::{Outcome, Verdict};
use crate::task_error::{self, ErrorKind, Request, TaskError};
use crate::text::printable;

/// A job being run, by tokio task id.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) job: Job,
    started: Instant,
    /// From the claim to the start: the database's `started_at` is the
    /// claim's time, corrected by this when the outcome is recorded.
    waited: Duration,
    abort: watch::Sender<bool>,
    abort_handle: tokio::task::AbortHandle,
    abort_requested: bool,
    follow_ups: Arc<std::sync::Mutex<Vec<crate::job::NewJob>>>,
    labels: JobLabels,
}

impl<S: Store> Loop<'_, S> {
    /// Starts a claimed job that waited `waited` for its slot.
    pub(super) fn start(&mut self, job: Job, waited: Duration) {
        let worker_id = job
            .worker_id
            .unwrap_or_else(|| self.worker_id.load(Ordering::Relaxed));
        for middleware in &self.worker.middleware {
            hook("before", &job, || middleware.before(&job));
        }
        let registered = self.worker.registry.get(&job.task_name).cloned();
        let (abort, abort_receiver) = watch::channel(false);
        let follow_ups = Arc::new(std::sync::Mutex::new(Vec::new()));
        let context = JobContext::new(
            &job,
            worker_id,
            worker_name(),
            self.worker.pool.clone(),
            abort_receiver,
            follow_ups.clone(),
            self.worker.registry.state(),
        );
        let labels = self.labels.job(&job.task_name, &job.queue_name);
        labels.started(queue_wait(&job));
        let attempt_job = job.clone();
        let registry = self.worker.registry.clone();
        let middleware = self.worker.middleware.clone();
        let span = attempt_span(&job);
        let handle = self.running.spawn(
            async move {
                let job = attempt_job;
                let task = run_task(&job, registered, &registry, context);
                let result = Attempt::new(&job, &middleware, task).run().await;
                #[cfg(feature = "opentelemetry")]
                crate::telemetry::attempt_ended(&tracing::Span::current(), &result);
                result
            }
            .instrument(span),
        );
        self.by_task.insert(
            handle.id(),
            Running {
                job,
                started: Instant::now(),
                waited,
                abort,
                abort_handle: handle,
                abort_requested: false,
                follow_ups,
                labels,
            },
        );
    }

    /// Tells a running job its abort was requested, and cancels it if it has
    /// not stopped by itself after the grace period.
    pub(super) fn request_abort(&mut self, job_id: i64) {
        if let Some(held) = self.held.take(job_id) {
            info!(job_id, task = %printable(&held.job.task_name), queue = %printable(&held.job.queue_name),
                  attempt = held.job.attempt(), duration_ms = 0.0,
                  "job aborted before it started");
            self.report.aborted += 1;
            self.labels
                .job(&held.job.task_name, &held.job.queue_name)
                .ended(metrics::outcome(&Verdict::Aborted));
            let delete = self.worker.config.retention == Retention::DeleteAll;
            self.completer
                .send(held.never_ran(Verdict::Aborted, delete));
            return;
        }
        let Some(running) = self.by_task.values_mut().find(|r| r.job.id == job_id) else {
            return;
        };
        if running.abort_requested {
            return;
        }
        running.abort_requested = true;
        let _ = running.abort.send(true);
        info!(job_id, task = %printable(&running.job.task_name), "abort requested; asking the job to stop");
        let handle = running.abort_handle.clone();
        let grace = self.worker.config.abort_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            handle.abort();
        });
    }

    /// Turns a finished (or panicked) attempt into an outcome for the completer.
    pub(super) fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, Result<(), TaskError>), tokio::task::JoinError>,
    ) {
        let (task_id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(join_error) => {
                let id = join_error.id();
                // A task is only cancelled once its abort grace has passed.
                let error = if join_error.is_panic() {
                    TaskError::new(
                        ErrorKind::Panic,
                        format!(
                            "the task panicked: {}",
                            panic_message(join_error.into_panic())
                        ),
                    )
                } else {
                    TaskError::new(
                        ErrorKind::Aborted,
                        format!(
                            "the job did not stop within {} s of its abort request and was cancelled",
                            self.worker.config.abort_grace.as_secs_f64()
                        ),
                    )
                };
                (id, Err(error))
            }
        };
        let Some(running) = self.by_task.remove(&task_id) else {
            return;
        };
        let Running {
            job,
            started,
            waited,
            abort_requested,
            follow_ups,
            labels,
            ..
        } = running;
        let duration = started.elapsed();
        let (verdict, error) = match result {
            Ok(()) => {
                self.report.succeeded += 1;
                self.notify_after(&job, AttemptEnd::Succeeded, duration);
                (Verdict::Succeeded, None)
            }
            Err(error) if abort_requested => {
                self.report.aborted += 1;
                self.notify_after(&job, AttemptEnd::Aborted, duration);
                (Verdict::Aborted, Some(error))
            }
            Err(error) if error.request().is_some() => self.request(&job, error, duration),
            Err(error) => {
                let verdict = self.failure(&job, &error, duration);
                (verdict, Some(error))
            }
        };
        labels.attempt_ended(metrics::outcome(&verdict), duration);
        let attempted = !matches!(verdict, Verdict::Snooze { .. });
        let delete = match (self.worker.config.retention, &verdict) {
            (Retention::KeepAll, _) | (_, Verdict::Retry { .. } | Verdict::Snooze { .. }) => false,
            (Retention::DeleteSuccessful, verdict) => matches!(verdict, Verdict::Succeeded),
            (Retention::DeleteAll, _) => true,
        };
        let follow_ups = if matches!(verdict, Verdict::Succeeded) {
            std::mem::take(
                &mut *follow_ups
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
        } else {
            Vec::new()
        };
        self.completer.send(Outcome {
            job_id: job.id,
            worker_id: job.worker_id,
            verdict,
            error,
            attempted,
            waited,
            delete,
            follow_ups,
        });
    }

    /// A snooze or a cancel the task asked for: its verdict, and the error
    /// to record with it (none for a snooze, which is not a failure).
    fn request(
        &mut self,
        job: &Job,
        error: TaskError,
        duration: Duration,
    ) -> (Verdict, Option<TaskError>) {
        match error.request() {
            Some(Request::Snooze(wait)) => {
                self.report.snoozed += 1;
                self.notify_after(job, AttemptEnd::Snoozed { wait }, duration);
                let at = after(wait);
                (Verdict::Snooze { at }, None)
            }
            Some(Request::Cancel) | None => {
                self.report.cancelled += 1;
                self.notify_after(job, AttemptEnd::Cancelled { reason: &error }, duration);
                (Verdict::Cancelled, Some(error))
            }
        }
    }

    fn notify_after(&self, job: &Job, end: AttemptEnd<'_>, duration: Duration) {
        for middleware in &self.worker.middleware {
            hook("after", job, || middleware.after(job, end, duration));
        }
    }

    fn failure(&mut self, job: &Job, error: &TaskError, duration: Duration) -> Verdict {
        let attempts = u32::try_from(job.attempts).unwrap_or(0);
        let wait = if error.is_retryable() {
            self.worker
                .registry
                .get(&job.task_name)
                .and_then(|task| task.retry.next_wait(attempts, error.kind()))
        } else {
            None
        };
        for middleware in &self.worker.middleware {
            hook("on_error", job, || {
                middleware.on_error(job, error, wait.is_some())
            });
        }
        match wait {
            Some(wait) => {
                self.report.retried += 1;
                self.notify_after(job, AttemptEnd::WillRetry { error, wait }, duration);
                let at = after(wait);
                Verdict::Retry { at }
            }
            None => {
                self.report.failed += 1;
                self.notify_after(job, AttemptEnd::Failed { error }, duration);
                Verdict::Failed
            }
        }
    }

    /// After the loop: let running jobs finish within `timeout`, then put the
    /// others back for retry.
    pub(super) async fn drain(&mut self, timeout: Duration, stop: watch::Receiver<Stop>) {
        // Held jobs go back first, so that other workers can start them
        // while these finish.
        let held = self.held.len();
        while let Some(job) = self.held.next() {
            self.release(job);
        }
        if held > 0 {
            info!(
                jobs = held,
                "stopping: put back jobs claimed but not started"
            );
        }
        if !self.running.is_empty() {
            info!(
                running = self.running.len(),
                timeout_s = timeout.as_secs_f64(),
                "stopping: waiting for running jobs to finish"
            );
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Asked to stop now while draining: stop waiting.
        let now = Control::stop_now_requested(stop);
        tokio::pin!(now);
        while !self.running.is_empty() {
            tokio::select! {
                joined = tokio::time::timeout_at(deadline, self.running.join_next_with_id()) => {
                    match joined {
                        Ok(Some(joined)) => self.finished(joined),
                        Ok(None) | Err(_) => break,
                    }
                }
                _ = &mut now => break,
            }
        }
        self.running.abort_all();
        let interrupted: Vec<Running> = self.by_task.drain().map(|(_, running)| running).collect();
        for Running {
            job,
            started,
            waited,
            ..
        } in interrupted
        {
            self.report.interrupted += 1;
            self.notify_after(&job, AttemptEnd::Interrupted, started.elapsed());
            self.completer.send(Outcome {
                job_id: job.id,
                worker_id: job.worker_id,
                verdict: Verdict::Retry { at: Utc::now() },
                error: Some(TaskError::new(
                    task_error::WORKER_SHUTDOWN,
                    format!(
                        "the worker stopped before the job finished (waited {} s)",
                        timeout.as_secs_f64()
                    ),
                )),
                attempted: true,
                waited,
                delete: false,
                follow_ups: Vec::new(),
            });
        }
        // Aborted tasks still report through the JoinSet; nothing to record.
        while self.running.join_next().await.is_some() {}
    }
}

/// The span an attempt runs in, a root of its own: every line the task
/// (and its middleware) logs says which job it is about. With the
/// `opentelemetry` feature switched on, it is also the attempt's
/// OpenTelemetry span (see [`crate::telemetry`]).
fn attempt_span(job: &Job) -> tracing::Span {
    use tracing::field::{display, Empty};
    let span = tracing::info_span!(parent: None, "job", job_id = job.id,
        task = %printable(&job.task_name), queue = %printable(&job.queue_name),
        attempt = job.attempt(), lock = Empty, otel.name = Empty, otel.kind = Empty);
    if let Some(lock) = &job.lock {
        span.record("lock", display(printable(lock)));
    }
    #[cfg(feature = "opentelemetry")]
    crate::telemetry::attempt_started(&span, job);
    span
}

/// From when `job` could first run (its schedule, or its creation when
/// later) until now.
fn queue_wait(job: &Job) -> Duration {
    let runnable = job
        .scheduled_at
        .map_or(job.created_at, |at| at.max(job.created_at));
    (Utc::now() - runnable).to_std().unwrap_or(Duration::ZERO)
}

/// The task's own code for one attempt, bounded by its timeout; what a
/// job cannot run (unreadable arguments, an unknown task) fails at once.
fn run_task<'a>(
    job: &'a Job,
    registered: Option<RegisteredTask>,
    registry: &'a Registry,
    context: JobContext,
) -> BoxAttempt<'a> {
    Box::pin(async move {
        // Stored arguments this process cannot read fail the job alone,
        // at once: no retry would read them differently.
        if let Some(why) = &job.args_error {
            return Err(TaskError::validation(why.clone()));
        }
        let Some(task) = registered else {
            let known = registry.names().join(", ");
            return Err(TaskError::new(
                task_error::UNKNOWN_TASK,
                format!(
                    "no task named {} is registered in this worker (it knows: {known})",
                    crate::text::quote(&job.task_name)
                ),
            )
            .no_retry());
        };
        let run = (task.run)(job.args.clone(), context);
        match task.timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                Err(TaskError::timeout(format!(
                    "the job ran longer than its timeout of {} s and was stopped",
                    limit.as_secs_f64()
                )))
            }),
            None => run.await,
        }
    })
}

/// Runs a middleware hook; a panic in it is logged and goes no further, so a
/// hook that trips over one job stops neither that job nor the worker.
pub(super) fn hook(name: &str, job: &Job, call: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(call)) {
        error!(job_id = job.id, hook = name, reason = %panic_message(panic),
               "a middleware hook panicked; carrying on without it for this call");
    }
}

/// The message a panic carried (bounded: a panic may quote anything).
pub(super) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.as_str()
    } else {
        "no message"
    };
    crate::text::storable(message, task_error::MAX_MESSAGE_BYTES).into_owned()
}

/// `wait` from now, at the latest the end of year 9999: later times
/// overflow here, and Python (which reads the same rows) cannot represent
/// them.
fn after(wait: Duration) -> chrono::DateTime<Utc> {
    let latest = chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .map_or(chrono::DateTime::<Utc>::MAX_UTC, |at| {
            at.with_timezone(&Utc)
        });
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| Utc::now().checked_add_signed(wait))
        .map_or(latest, |at| at.min(latest))
}

/// `host:pid`, computed once: names the process in job contexts and logs.
fn worker_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        format!("{host}:{}", std::process::id())
    })
    .clone()
}
