//! Testing your own tasks: run one task directly, see what a piece of code
//! deferred, and run everything deferred to completion.
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)]
//! # struct SendWelcomeEmail { user_id: i64 }
//! # impl dawdle::Task for SendWelcomeEmail {
//! #     const NAME: &'static str = "email.send_welcome";
//! #     async fn run(self, _ctx: dawdle::JobContext) -> Result<(), dawdle::TaskError> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use dawdle::testing::{assert_deferred, drain, perform, TestDatabase};
//!
//! let db = TestDatabase::with_schema().await;
//! // One task, run directly: no job row, no worker.
//! let run = perform(db.pool(), SendWelcomeEmail { user_id: 42 }).await;
//! assert!(run.result.is_ok());
//!
//! // What the code under test deferred, then everything run to the end.
//! dawdle::defer_task(db.pool(), &SendWelcomeEmail { user_id: 7 }).await.unwrap();
//! assert_deferred(db.pool(), "email.send_welcome", serde_json::json!({"user_id": 7})).await;
//! let mut registry = dawdle::Registry::new();
//! registry.register::<SendWelcomeEmail>();
//! let outcomes = drain(db.pool(), registry).await;
//! assert!(outcomes.iter().all(|event| event.outcome == dawdle::JobOutcome::Succeeded));
//! # }
//! ```

use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::admin::{self, JobFilter};
use crate::context::{JobContext, State};
use crate::job::{Job, JobStatus, NewJob};
use crate::task::Task;
use crate::task_error::TaskError;
use crate::worker::{JobEvent, Registry, Worker, WorkerConfig};

/// What running one task directly gave.
#[derive(Debug)]
pub struct Performed {
    /// What `Task::run` returned.
    pub result: Result<(), TaskError>,
    /// The jobs it deferred with `JobContext::defer_after_success`; a worker
    /// would insert them only on success.
    pub follow_ups: Vec<NewJob>,
}

/// Runs one task's `run` directly, as a worker would on its first attempt,
/// with no job row and no worker: for unit tests of a task's logic.
/// `JobContext::pool` is `pool`.
pub async fn perform<T: Task>(pool: &PgPool, task: T) -> Performed {
    TaskRunner::new(pool).run(task).await
}

/// [`perform`] with a chosen context: shared state, attempt number, job id.
#[derive(Debug, Clone)]
pub struct TaskRunner {
    pool: PgPool,
    state: State,
    attempts: i32,
    job_id: i64,
}

impl TaskRunner {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            state: State::default(),
            attempts: 0,
            job_id: 0,
        }
    }

    /// A value the task reads with `JobContext::state` (as given to
    /// `Registry::with_state` in production).
    pub fn state<S: Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// Attempts made before this one (the context's `attempts`).
    pub fn attempts(mut self, attempts: i32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The context's `job_id`.
    pub fn job_id(mut self, job_id: i64) -> Self {
        self.job_id = job_id;
        self
    }

    /// Runs `task` once and returns what it did.
    pub async fn run<T: Task>(&self, task: T) -> Performed {
        let now = chrono::Utc::now();
        let job = Job {
            id: self.job_id,
            queue_name: T::QUEUE.to_string(),
            task_name: T::NAME.to_string(),
            priority: T::PRIORITY,
            lock: task.lock(),
            queueing_lock: task.queueing_lock(),
            args: serde_json::to_value(&task).unwrap_or(Value::Null),
            args_error: None,
            status: JobStatus::Doing,
            scheduled_at: None,
            attempts: self.attempts,
            abort_requested: false,
            worker_id: None,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            trace_context: None,
        };
        let follow_ups = Arc::new(Mutex::new(Vec::new()));
        // The abort sender lives as long as the run: no abort is requested.
        let (_abort, abort_receiver) = tokio::sync::watch::channel(false);
        let context = JobContext::new(
            &job,
            0,
            "test".to_string(),
            self.pool.clone(),
            abort_receiver,
            follow_ups.clone(),
            self.state.clone(),
        );
        let result = task.run(context).await;
        let follow_ups = std::mem::take(&mut *follow_ups.lock().unwrap_or_else(|e| e.into_inner()));
        Performed { result, follow_ups }
    }
}

/// The jobs waiting to run (`todo`), oldest first: what the code under test
/// deferred. Works on a pool or inside a transaction (`&mut *tx`), so a
/// test can defer in a transaction it rolls back.
pub async fn deferred_jobs<'e, E: PgExecutor<'e>>(executor: E) -> Vec<Job> {
    let filter = JobFilter {
        status: Some(JobStatus::Todo),
        ..JobFilter::default()
    };
    let mut jobs = admin::list_jobs(executor, &filter)
        .await
        .expect("read the deferred jobs");
    jobs.reverse();
    jobs
}

/// Panics, listing what was deferred, unless a waiting job of `task_name`
/// has arguments that include every field of `args` (a JSON object; `{}`
/// matches any). Returns the first match.
pub async fn assert_deferred<'e, E: PgExecutor<'e>>(
    executor: E,
    task_name: &str,
    args: Value,
) -> Job {
    let jobs = deferred_jobs(executor).await;
    let found = jobs
        .iter()
        .find(|job| job.task_name == task_name && includes(&job.args, &args));
    match found {
        Some(job) => job.clone(),
        None => {
            let listing: Vec<String> = jobs
                .iter()
                .map(|job| format!("  #{} {} {}", job.id, job.task_name, job.args))
                .collect();
            panic!(
                "no waiting job of {task_name:?} with arguments including {args}; deferred:\n{}",
                if listing.is_empty() {
                    "  (none)".to_string()
                } else {
                    listing.join("\n")
                }
            )
        }
    }
}

/// Whether `actual` holds every field of `expected`, recursively for objects.
fn includes(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected.iter().all(|(key, value)| {
            actual
                .get(key)
                .is_some_and(|present| includes(present, value))
        }),
        (actual, expected) => actual == expected,
    }
}

/// Runs every runnable job, and the follow-ups and retries due meanwhile,
/// to completion with a one-shot worker over `registry`; returns each
/// recorded outcome in the order recorded. Jobs of tasks the registry does
/// not know fail as `UnknownTask`.
pub async fn drain(pool: &PgPool, registry: Registry) -> Vec<JobEvent> {
    drain_with(pool, registry, WorkerConfig::default()).await
}

/// [`drain`] with a worker configuration (its `one_shot` is forced on).
pub async fn drain_with(pool: &PgPool, registry: Registry, config: WorkerConfig) -> Vec<JobEvent> {
    let worker = Worker::builder(pool.clone(), registry)
        .config(config.one_shot(true))
        .build()
        .expect("a valid worker configuration");
    let handle = worker.start();
    let mut events = handle.events();
    // Collected while the worker runs, so no burst of outcomes outruns the
    // event buffer; the channel closes when the worker and its handle end.
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match events.recv().await {
                Ok(event) => seen.push(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    panic!("drain fell {missed} outcomes behind the worker")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return seen,
            }
        }
    });
    handle
        .join()
        .await
        .expect("the draining worker ended normally");
    collector.await.expect("collect the outcomes")
}
