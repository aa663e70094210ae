//! A worker running in the background: know when it is ready, stop it
//! gently or at once, follow what it records, and collect its report.
//!
//! `Worker::start` spawns the worker on the current tokio runtime and
//! returns a [`WorkerHandle`]. Tests and embedding applications wait on
//! [`WorkerHandle::ready`] instead of polling `procrastinate_workers`, and
//! on [`JobEvent`]s instead of polling job rows: an event is sent once the
//! outcome it reports is in the database.

use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::config::{WorkerError, WorkerReport};
use crate::task_error::ErrorKind;

/// How many events a slow subscriber may fall behind before it misses some
/// (it then gets `RecvError::Lagged`).
pub(super) const EVENT_BUFFER: usize = 4096;

/// What happened to a job, once it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job_id: i64,
    pub outcome: JobOutcome,
}

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobOutcome {
    Succeeded,
    /// Failed; runs again at `at`.
    Retrying {
        kind: ErrorKind,
        message: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// Failed for good.
    Failed {
        kind: ErrorKind,
        message: String,
    },
    /// The task snoozed: back to `todo`, runs again at `at`, the attempt
    /// not counted.
    Snoozed {
        at: chrono::DateTime<chrono::Utc>,
    },
    /// The task cancelled its own job, for `reason`.
    Cancelled {
        reason: String,
    },
    /// Stopped on request.
    Aborted,
    /// Claimed but not started (held too long, or the worker stopped):
    /// back to `todo`, not an attempt.
    PutBack,
    /// Deleted on success or failure by the worker's retention setting.
    Deleted,
}

/// How the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Running,
    /// Let running jobs finish within the shutdown timeout.
    Gently,
    /// Interrupt running jobs now (they are put back for retry).
    Now,
}

/// What a started worker shares with its handle.
#[derive(Debug, Clone)]
pub(super) struct Control {
    pub(super) stop: watch::Receiver<Stop>,
    pub(super) ready: watch::Sender<Option<i64>>,
    pub(super) events: broadcast::Sender<JobEvent>,
}

impl Control {
    /// For a worker run without a handle: nobody listens.
    pub(super) fn detached() -> Self {
        let (_stop, stop_receiver) = watch::channel(Stop::Running);
        Self {
            stop: stop_receiver,
            ready: watch::channel(None).0,
            events: broadcast::channel(1).0,
        }
    }

    /// Completes when a stop is asked for (never, for a detached worker).
    pub(super) async fn stop_requested(mut stop: watch::Receiver<Stop>) {
        if stop.wait_for(|stop| *stop != Stop::Running).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes when a stop *now* is asked for.
    pub(super) async fn stop_now_requested(mut stop: watch::Receiver<Stop>) {
        if stop.wait_for(|stop| *stop == Stop::Now).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// How long running jobs may still take, given the configured timeout.
    pub(super) fn drain_timeout(&self, configured: Duration) -> Duration {
        match *self.stop.borrow() {
            Stop::Now => Duration::ZERO,
            _ => configured,
        }
    }
}

/// A worker started with `Worker::start`.
#[derive(Debug)]
pub struct WorkerHandle {
    pub(super) stop: watch::Sender<Stop>,
    pub(super) ready: watch::Receiver<Option<i64>>,
    pub(super) events: broadcast::Sender<JobEvent>,
    /// Subscribed before the worker started: the first `events()` call
    /// gets it, and with it every outcome since the start.
    pub(super) first_events: std::sync::Mutex<Option<broadcast::Receiver<JobEvent>>>,
    pub(super) task: tokio::task::JoinHandle<Result<WorkerReport, WorkerError>>,
}

impl WorkerHandle {
    /// Waits until the worker is registered and about to claim; returns its
    /// `procrastinate_workers` id. An error if it stopped before that (its
    /// configuration was refused, or it was stopped).
    pub async fn ready(&self) -> Result<i64, WorkerStopped> {
        let mut ready = self.ready.clone();
        let id = ready
            .wait_for(Option::is_some)
            .await
            .map_err(|_| WorkerStopped)?;
        Ok(id.expect("waited for Some"))
    }

    /// Asks the worker to stop: it claims nothing more and lets running
    /// jobs finish within its shutdown timeout. Returns at once; `join`
    /// waits for the end.
    pub fn stop(&self) {
        self.stop.send_if_modified(|stop| {
            let changed = *stop == Stop::Running;
            if changed {
                *stop = Stop::Gently;
            }
            changed
        });
    }

    /// Asks the worker to stop now: running jobs are interrupted and put
    /// back for retry (`WorkerShutdown`).
    pub fn stop_now(&self) {
        let _ = self.stop.send(Stop::Now);
    }

    /// Job outcomes as they are recorded: the first call gets every one
    /// since the worker started, later calls those from then on. A receiver
    /// that falls more than 4,096 events behind misses some (`Lagged`).
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        let first = self
            .first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        first.unwrap_or_else(|| self.events.subscribe())
    }

    /// Waits for the worker to end and returns its report.
    pub async fn join(self) -> Result<WorkerReport, WorkerError> {
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(WorkerError::Crashed {
                reason: join_error.to_string(),
            }),
        }
    }

    /// [`stop`](Self::stop), then [`join`](Self::join).
    pub async fn shutdown(self) -> Result<WorkerReport, WorkerError> {
        self.stop();
        self.join().await
    }
}

/// The worker stopped before it was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wait for the worker: it stopped before it was ready")]
pub struct WorkerStopped;
