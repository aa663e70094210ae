//! The worker: claims jobs in batches, runs them, records their outcomes in
//! batches, and keeps itself registered.
//!
//! One loop owns claiming. It asks for its free slots' worth of jobs, plus a
//! few held ready when jobs finish faster than a claim round trip (see
//! `pace`), with one statement (`dawdle_claim_jobs_v1`), spawns each job as a
//! tokio task, and hands every outcome to the completer (see `completion`),
//! which writes them in batches. A claim runs while the loop goes on starting
//! held jobs and collecting finished ones. Claiming happens again when a
//! claim came back full (there is probably more) and the held jobs run low,
//! when a notification says jobs were inserted, or when the poll interval
//! passes (notifications can be lost). Database errors are logged and retried
//! with backoff; the worker never gives up on its own.
//!
//! Invariants: the worker never holds a row lock while user code runs (a
//! claim commits before any job of it starts), and a job held ready but not
//! started within `WorkerConfig::hold_limit`, or when the worker stops, is
//! put back for other workers without counting as an attempt.

//! The parts, one concern each:
//!
//! - `config`: [`WorkerConfig`], [`WorkerReport`], [`WorkerError`];
//! - `producer`: the claiming loop (when and how much to claim, held jobs);
//! - `pace`: how many jobs to hold ready ahead of the free slots;
//! - `executor`: running attempts (spawn, timeout, abort, verdict, drain);
//! - `completion`: the completer task that records outcomes in batches;
//! - `notifier`: LISTEN for new jobs, abort requests and paused queues;
//! - `maintenance`: registration, heartbeat, stalled-worker rescue,
//!   abort polling, periodic defers;
//! - `registry`, `middleware`, `backoff`: tasks by name, hooks, retry waits.
//!
//! This file starts them and stops them.

mod backoff;
mod completion;
mod config;
mod executor;
pub(crate) mod floor;
mod handle;
mod held;
mod maintenance;
pub mod metrics;
mod middleware;
mod notifier;
mod pace;
mod producer;
mod registry;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use config::{Retention, WorkerConfig, WorkerError, WorkerReport, DEFAULT_PREFETCH};
pub use handle::{JobEvent, JobOutcome, WorkerHandle, WorkerStopped};
pub use middleware::{Attempt, AttemptEnd, BoxAttempt, LogJobs, Middleware};
pub use registry::{Periodic, Registry, TaskOptions};

use crate::database::pinned::Db;
use crate::state::{PutBack, Selection};
use completion::Completer;
use executor::panic_message;
use handle::{Control, Stop};
use held::HeldJobs;
use maintenance::{register, Registered};
use notifier::{channels, listen};
use pace::Pace;
use producer::Loop;
use store::Store;

/// A worker over one jobs database.
pub struct Worker {
    pool: PgPool,
    /// Where LISTEN runs, when not on `pool` (see
    /// [`WorkerBuilder::listen_through`]).
    listen_pool: Option<PgPool>,
    registry: Arc<Registry>,
    config: WorkerConfig,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("tasks", &self.registry.names())
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Worker`]: its configuration is checked when built.
pub struct WorkerBuilder {
    worker: Worker,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("worker", &self.worker)
            .finish()
    }
}

impl WorkerBuilder {
    /// The whole configuration (default: `WorkerConfig::default()`).
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.worker.config = config;
        self
    }

    /// Changes the configuration: `.configure(|c| c.concurrency(20))`.
    pub fn configure(mut self, change: impl FnOnce(WorkerConfig) -> WorkerConfig) -> Self {
        self.worker.config = change(self.worker.config);
        self
    }

    /// LISTENs on `pool` instead of the worker's own pool. Behind PgBouncer
    /// in transaction pooling ([`WorkerConfig::pgbouncer`]) the worker
    /// otherwise does not LISTEN at all and finds new jobs by polling: give
    /// it a pool of direct connections to the same PostgreSQL database (not
    /// through PgBouncer), and new jobs, abort requests and paused queues
    /// reach it within milliseconds while every other statement still goes
    /// through PgBouncer. The worker holds one connection of `pool` for as
    /// long as it runs, and reconnects with backoff (polling meanwhile)
    /// when it is lost or cannot be made.
    pub fn listen_through(mut self, pool: PgPool) -> Self {
        self.worker.listen_pool = Some(pool);
        self
    }

    /// Adds a middleware, after the built-in job logs and those added before.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.worker = self.worker.with_middleware(middleware);
        self
    }

    /// Without the built-in job logs (and any middleware added so far).
    pub fn without_middleware(mut self) -> Self {
        self.worker = self.worker.without_middleware();
        self
    }

    /// The worker, if its configuration holds together.
    pub fn build(self) -> Result<Worker, WorkerError> {
        self.worker.config.validate()?;
        Ok(self.worker)
    }
}

impl Worker {
    /// A builder with the default configuration and the built-in job logs.
    pub fn builder(pool: PgPool, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            worker: Worker::new(pool, registry, WorkerConfig::default()),
        }
    }

    /// Starts the worker on the current tokio runtime and returns its
    /// handle: wait until it is ready, follow its recorded outcomes, stop it.
    pub fn start(self) -> WorkerHandle {
        let (stop, stop_receiver) = tokio::sync::watch::channel(Stop::Running);
        let (ready, ready_receiver) = tokio::sync::watch::channel(None);
        let (events, first_events) = tokio::sync::broadcast::channel(handle::EVENT_BUFFER);
        let control = Control {
            stop: stop_receiver,
            ready,
            events: events.clone(),
        };
        let shutdown = Control::stop_requested(control.stop.clone());
        let task = tokio::spawn(self.run_controlled(shutdown, control));
        WorkerHandle {
            stop,
            ready: ready_receiver,
            first_events: std::sync::Mutex::new(Some(first_events)),
            events,
            task,
        }
    }

    /// A worker with `config` (checked when it runs; [`Worker::builder`]
    /// checks it earlier).
    pub fn new(pool: PgPool, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            pool,
            listen_pool: None,
            registry: Arc::new(registry),
            config,
            middleware: vec![Arc::new(LogJobs)],
        }
    }

    /// The pool the worker LISTENs on, if it listens: the one given to
    /// [`WorkerBuilder::listen_through`], else its own pool, except behind
    /// PgBouncer in transaction pooling, where a LISTEN would hold a server
    /// connection for good and hear nothing.
    fn listen_pool(&self) -> Option<PgPool> {
        if !self.config.listen {
            return None;
        }
        match &self.listen_pool {
            Some(pool) => Some(pool.clone()),
            None if self.config.pgbouncer => None,
            None => Some(self.pool.clone()),
        }
    }

    /// Whether notifications reach the worker (see [`Worker::listen_pool`]).
    fn listens(&self) -> bool {
        self.listen_pool().is_some()
    }

    /// Adds a middleware; they run in the order added, after the built-in
    /// job logs.
    pub fn with_middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Drops every middleware, the built-in job logs included.
    pub fn without_middleware(mut self) -> Self {
        self.middleware.clear();
        self
    }

    /// Runs until `shutdown` completes (or, in one-shot mode, until no
    /// runnable job is left), then lets running jobs finish within the
    /// shutdown timeout, records every outcome and unregisters.
    pub async fn run<S>(self, shutdown: S) -> Result<WorkerReport, WorkerError>
    where
        S: Future<Output = ()> + Send,
    {
        self.run_controlled(shutdown, Control::detached()).await
    }

    async fn run_controlled<S>(
        self,
        shutdown: S,
        control: Control,
    ) -> Result<WorkerReport, WorkerError>
    where
        S: Future<Output = ()> + Send,
    {
        self.config.validate()?;
        tokio::pin!(shutdown);
        // A one-shot run (a script, a cron job) must end: it gives up on a
        // database that stays away as long as it takes to count as stalled.
        let give_up = self.config.one_shot.then_some(self.config.stalled_after);
        let db = Db::new(self.pool.clone(), self.config.pgbouncer);
        let worker_id = match register(&db, &mut shutdown, give_up).await {
            Registered::Id(id) => id,
            Registered::Stopped => return Ok(WorkerReport::default()),
            Registered::GaveUp => {
                return Err(WorkerError::Unreachable {
                    waited: self.config.stalled_after,
                })
            }
        };
        let worker_id = Arc::new(AtomicI64::new(worker_id));
        let wake = Arc::new(Notify::new());
        let retries_written = Arc::new(completion::RetriesWritten::default());
        let (abort_sender, mut abort_requests) = mpsc::unbounded_channel::<notifier::Request>();
        let mut helpers = JoinSet::new();
        let announced = floor::Announced::default();
        if let Some(listen_pool) = self.listen_pool() {
            helpers.spawn(listen(
                listen_pool,
                channels(&self.config.queues),
                wake.clone(),
                announced.clone(),
                abort_sender.clone(),
            ));
        }
        helpers.spawn(maintenance::run(
            db.clone(),
            worker_id.clone(),
            self.config.heartbeat_interval,
            self.config.stalled_after,
            abort_sender,
        ));
        if !self.registry.periodic().is_empty() {
            helpers.spawn(maintenance::defer_periodic(
                db.clone(),
                self.registry.periodic().to_vec(),
            ));
        }
        let (completer, completer_task) = Completer::spawn(
            db.clone(),
            self.config.shutdown_timeout,
            retries_written.clone(),
            control.events.clone(),
        );
        info!(
            worker_id = worker_id.load(Ordering::Relaxed),
            queues = %self.config.queues.as_ref().map_or("*".to_string(), |q| q.join(",")),
            concurrency = self.config.concurrency,
            tasks = %self.registry.names().join(","),
            "job_queue_worker_started"
        );
        control
            .ready
            .send_replace(Some(worker_id.load(Ordering::Relaxed)));

        let mut state = Loop {
            worker: &self,
            store: db.clone(),
            worker_id: worker_id.clone(),
            completer: completer.clone(),
            running: JoinSet::new(),
            by_task: HashMap::new(),
            queues: Arc::new(self.config.queues.clone()),
            held: HeldJobs::default(),
            pace: Pace::new(self.config.prefetch, Instant::now()),
            report: WorkerReport::default(),
            labels: metrics::Labeller::new(self.registry.clone(), self.config.queues.as_deref()),
            reconcile: false,
            floor: floor::ClaimFloor::new(announced),
        };
        // The loop runs code that is not the worker's (the shutdown future,
        // middleware): whatever happens in it, every job it holds is
        // finished or put back before the worker reports how it ended.
        let ended = AssertUnwindSafe(state.main_loop(
            &mut shutdown,
            &wake,
            &retries_written,
            &mut abort_requests,
        ))
        .catch_unwind()
        .await;
        let mut failure = match ended {
            Ok(Ok(())) => None,
            Ok(Err(failure)) => Some(failure),
            Err(panic) => {
                let reason = panic_message(panic);
                error!(reason = %reason, "the worker loop panicked; putting its jobs back and stopping");
                Some(WorkerError::Crashed { reason })
            }
        };
        let timeout = control.drain_timeout(self.config.shutdown_timeout);
        let drained = AssertUnwindSafe(state.drain(timeout, control.stop.clone()))
            .catch_unwind()
            .await;
        if let Err(panic) = drained {
            let reason = panic_message(panic);
            error!(reason = %reason, "stopping the worker panicked; putting its jobs back");
            failure.get_or_insert(WorkerError::Crashed { reason });
        }
        let mut report = state.report;
        drop(state);
        drop(completer);
        match completer_task.await {
            Ok(refused) => report.refused = refused,
            Err(_) => error!("the completion task panicked"),
        }
        helpers.abort_all();
        let id = worker_id.load(Ordering::Relaxed);
        if failure.is_some() {
            put_back_unfinished(&db, id).await;
        }
        let unregistered = db
            .run(|conn| {
                Box::pin(
                    sqlx::query("SELECT procrastinate_unregister_worker_v1($1)")
                        .bind(id)
                        .execute(conn),
                )
            })
            .await;
        if let Err(error) = unregistered {
            warn!(worker_id = id, error = %error, "failed to unregister the worker; it will be pruned as stalled");
        }
        info!(
            worker_id = id,
            succeeded = report.succeeded,
            retried = report.retried,
            failed = report.failed,
            interrupted = report.interrupted,
            refused = report.refused,
            "job_queue_worker_stopped"
        );
        match failure {
            Some(failure) => Err(failure),
            None => Ok(report),
        }
    }
}

/// After the loop ended abnormally: every `doing` job still under this
/// worker goes back to `todo` (not an attempt), so none waits for the
/// stalled-worker rescue. Outcomes were written before this runs.
async fn put_back_unfinished(db: &Db, worker_id: i64) {
    let everything = PutBack {
        which: Selection {
            worker_id: Some(worker_id),
            ..Selection::default()
        },
        count_attempt: false,
        note: None,
    };
    match Store::put_back(db, &everything).await {
        Ok(jobs) if !jobs.back.is_empty() => warn!(
            jobs = jobs.back.len(),
            "put back jobs the stopped worker still held"
        ),
        Ok(_) => {}
        Err(error) => warn!(error = %error,
            "failed to put back the stopped worker's jobs; they will be found as stalled"),
    }
}
