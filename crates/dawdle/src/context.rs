//! What a running task knows about its job, how it learns that an abort was
//! requested, and how it defers follow-ups.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::job::{InvalidJob, Job, NewJob};

/// Values shared with every task, one per type (`Registry::with_state`).
#[derive(Clone, Default)]
pub(crate) struct State(Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl State {
    pub(crate) fn insert<S: Send + Sync + 'static>(&mut self, value: S) {
        Arc::make_mut(&mut self.0).insert(TypeId::of::<S>(), Arc::new(value));
    }

    fn get<S: 'static>(&self) -> Option<&S> {
        self.0.get(&TypeId::of::<S>())?.downcast_ref()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "State({} values)", self.0.len())
    }
}

/// Handed to [`crate::Task::run`] with every attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: i64,
    /// Attempts made before this one (0 on the first run).
    pub attempts: i32,
    pub queue: String,
    pub task_name: String,
    pub lock: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The `procrastinate_workers` id of the worker running the job.
    pub worker_id: i64,
    /// `host:pid` of the process running the job, for logs.
    pub worker_name: String,
    pool: PgPool,
    abort: watch::Receiver<bool>,
    follow_ups: Arc<Mutex<Vec<NewJob>>>,
    state: State,
}

impl JobContext {
    pub(crate) fn new(
        job: &Job,
        worker_id: i64,
        worker_name: String,
        pool: PgPool,
        abort: watch::Receiver<bool>,
        follow_ups: Arc<Mutex<Vec<NewJob>>>,
        state: State,
    ) -> Self {
        Self {
            job_id: job.id,
            attempts: job.attempts,
            queue: job.queue_name.clone(),
            task_name: job.task_name.clone(),
            lock: job.lock.clone(),
            scheduled_at: job.scheduled_at,
            worker_id,
            worker_name,
            pool,
            abort,
            follow_ups,
            state,
        }
    }

    /// The value of type `S` given to `Registry::with_state`, if any.
    pub fn state<S: 'static>(&self) -> Option<&S> {
        self.state.get()
    }

    /// Defers `job` in the same transaction that records this attempt's
    /// success: it exists if and only if this job is recorded as succeeded.
    /// Validated now, so a bad follow-up fails this attempt, not the record.
    pub fn defer_after_success(&self, job: NewJob) -> Result<(), InvalidJob> {
        job.validate()?;
        self.follow_ups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(job);
        Ok(())
    }

    /// The jobs database, to defer follow-up jobs (`dawdle::defer(ctx.pool(), …)`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether someone asked to abort this job (`dawdle cancel`, or
    /// `procrastinate_cancel_job_v1` with abort).
    pub fn is_abort_requested(&self) -> bool {
        *self.abort.borrow()
    }

    /// Completes when an abort is requested: race it against the work with
    /// `tokio::select!` to stop cleanly. A task that ignores it is stopped by
    /// the worker after the abort grace period.
    pub async fn abort_requested(&self) {
        let mut abort = self.abort.clone();
        // An error means the worker dropped the job: nothing will come.
        if abort.wait_for(|requested| *requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
