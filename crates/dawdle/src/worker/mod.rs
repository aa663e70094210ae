//! The worker: claims jobs in batches, runs them, records their outcomes in
//! batches, and keeps itself registered.
//!
//! One loop owns claiming. It asks for its free slots' worth of jobs, plus a
//! few held ready when jobs finish faster than a claim round trip (see
//! `pace`), with one statement (`dawdle_fetch_jobs_v1`), spawns each job as a
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

mod backoff;
mod completion;
mod maintenance;
mod middleware;
mod pace;
mod registry;

use crate::text::printable;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

pub use middleware::{AttemptEnd, LogJobs, Middleware};
pub use registry::{Periodic, Registry};

use crate::context::JobContext;
use crate::job::Job;
use crate::state::{self, Outcome, PutBack, Selection, Verdict};
use crate::task_error::{self, ErrorKind, TaskError};
use backoff::Backoff;
use completion::Completer;
use pace::Pace;

/// `WorkerConfig::prefetch` unless set otherwise.
pub const DEFAULT_PREFETCH: usize = 1000;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to take jobs from; `None` takes from every queue.
    pub queues: Option<Vec<String>>,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// Most jobs claimed ahead of the free slots, held ready so that slots
    /// never wait on a claim round trip; 0 claims only for free slots. How
    /// many are actually held follows how fast jobs finish: about two claim
    /// round trips' worth, so none for jobs slower than a few milliseconds.
    pub prefetch: usize,
    /// Longest a job claimed ahead waits for a free slot (the jobs running
    /// turned out slower than the pace assumed) before it is put back for
    /// other workers.
    pub hold_limit: Duration,
    /// Claim at least this often even without notifications.
    pub poll_interval: Duration,
    /// How often the worker's row in `procrastinate_workers` is refreshed.
    pub heartbeat_interval: Duration,
    /// On shutdown, how long running jobs may take to finish before they are
    /// interrupted and put back for retry.
    pub shutdown_timeout: Duration,
    /// Stop once no runnable job is left (scripts, tests, cron).
    pub one_shot: bool,
    /// LISTEN for new jobs (otherwise only poll).
    pub listen: bool,
    /// A worker whose heartbeat is older than this is considered dead: it is
    /// pruned and its running jobs are put back (by any live worker).
    pub stalled_after: Duration,
    /// After an abort request, how long a task gets to stop by itself
    /// before the worker cancels it.
    pub abort_grace: Duration,
    /// Which finished jobs are deleted instead of kept.
    pub retention: Retention,
}

/// Which finished jobs a worker deletes right away (with their history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Keep every job (the runbook's default: failed jobs stay for debugging).
    #[default]
    KeepAll,
    /// Delete jobs that succeeded.
    DeleteSuccessful,
    /// Delete every finished job.
    DeleteAll,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: None,
            concurrency: 10,
            prefetch: DEFAULT_PREFETCH,
            hold_limit: Duration::from_secs(1),
            poll_interval: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            one_shot: false,
            listen: true,
            stalled_after: Duration::from_secs(30),
            abort_grace: Duration::from_secs(10),
            retention: Retention::KeepAll,
        }
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    pub succeeded: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Attempts interrupted by shutdown and put back for retry.
    pub interrupted: u64,
    /// Jobs stopped because an abort was requested.
    pub aborted: u64,
}

/// Failures that stop a worker before it starts, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("start the worker: concurrency must be at least 1")]
    NoConcurrency,
    #[error("start the worker: the queue list is empty (leave it unset to work on every queue)")]
    NoQueues,
    /// The worker's own loop (not a task) panicked. Every job it held was
    /// finished or put back before this was returned.
    #[error("run the worker: it stopped on an internal error ({reason}); the jobs it held were put back")]
    Crashed { reason: String },
    /// One-shot mode only: the jobs database did not answer for
    /// `stalled_after`, so the run cannot finish its work.
    #[error("run the worker in one-shot mode: the jobs database did not answer for {} s", waited.as_secs_f64())]
    Unreachable { waited: Duration },
}

/// A worker over one jobs database.
pub struct Worker {
    pool: PgPool,
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

/// A job being run, by tokio task id.
#[derive(Debug)]
struct Running {
    job: Job,
    started: Instant,
    /// From the claim to the start: the database's `started_at` is the
    /// claim's time, corrected by this when the outcome is recorded.
    waited: Duration,
    abort: watch::Sender<bool>,
    abort_handle: tokio::task::AbortHandle,
    abort_requested: bool,
    follow_ups: Arc<std::sync::Mutex<Vec<crate::job::NewJob>>>,
}

impl Worker {
    pub fn new(pool: PgPool, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            pool,
            registry: Arc::new(registry),
            config,
            middleware: vec![Arc::new(LogJobs)],
        }
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
        if self.config.concurrency == 0 {
            return Err(WorkerError::NoConcurrency);
        }
        if self.config.queues.as_ref().is_some_and(Vec::is_empty) {
            return Err(WorkerError::NoQueues);
        }
        tokio::pin!(shutdown);
        // A one-shot run (a script, a cron job) must end: it gives up on a
        // database that stays away as long as it takes to count as stalled.
        let give_up = self.config.one_shot.then_some(self.config.stalled_after);
        let worker_id = match register(&self.pool, &mut shutdown, give_up).await {
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
        let retries_written = Arc::new(Notify::new());
        let (abort_sender, mut abort_requests) = mpsc::unbounded_channel::<i64>();
        let mut helpers = JoinSet::new();
        if self.config.listen {
            helpers.spawn(listen(
                self.pool.clone(),
                channels(&self.config.queues),
                wake.clone(),
                abort_sender.clone(),
            ));
        }
        helpers.spawn(maintenance::run(
            self.pool.clone(),
            worker_id.clone(),
            self.config.heartbeat_interval,
            self.config.stalled_after,
            abort_sender,
        ));
        if !self.registry.periodic().is_empty() {
            helpers.spawn(maintenance::defer_periodic(
                self.pool.clone(),
                self.registry.periodic().to_vec(),
            ));
        }
        let (completer, completer_task) = Completer::spawn(
            self.pool.clone(),
            self.config.shutdown_timeout,
            retries_written.clone(),
        );
        info!(
            worker_id = worker_id.load(Ordering::Relaxed),
            queues = %self.config.queues.as_ref().map_or("*".to_string(), |q| q.join(",")),
            concurrency = self.config.concurrency,
            tasks = %self.registry.names().join(","),
            "job_queue_worker_started"
        );

        let mut state = Loop {
            worker: &self,
            worker_id: worker_id.clone(),
            completer: completer.clone(),
            running: JoinSet::new(),
            by_task: HashMap::new(),
            queues: Arc::new(self.config.queues.clone()),
            held: VecDeque::new(),
            pace: Pace::new(self.config.prefetch, Instant::now()),
            report: WorkerReport::default(),
            reconcile: false,
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
        let drained = AssertUnwindSafe(state.drain(self.config.shutdown_timeout))
            .catch_unwind()
            .await;
        if let Err(panic) = drained {
            let reason = panic_message(panic);
            error!(reason = %reason, "stopping the worker panicked; putting its jobs back");
            failure.get_or_insert(WorkerError::Crashed { reason });
        }
        let report = state.report;
        drop(state);
        drop(completer);
        if completer_task.await.is_err() {
            error!("the completion task panicked");
        }
        helpers.abort_all();
        let id = worker_id.load(Ordering::Relaxed);
        if failure.is_some() {
            put_back_unfinished(&self.pool, id).await;
        }
        if let Err(error) = sqlx::query("SELECT procrastinate_unregister_worker_v1($1)")
            .bind(id)
            .execute(&self.pool)
            .await
        {
            warn!(worker_id = id, error = %error, "failed to unregister the worker; it will be pruned as stalled");
        }
        info!(
            worker_id = id,
            succeeded = report.succeeded,
            retried = report.retried,
            failed = report.failed,
            interrupted = report.interrupted,
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
async fn put_back_unfinished(pool: &PgPool, worker_id: i64) {
    let everything = PutBack {
        which: Selection {
            worker_id: Some(worker_id),
            ..Selection::default()
        },
        count_attempt: false,
        note: None,
    };
    match state::put_back(pool, &everything).await {
        Ok(jobs) if !jobs.is_empty() => warn!(
            jobs = jobs.len(),
            "put back jobs the stopped worker still held"
        ),
        Ok(_) => {}
        Err(error) => warn!(error = %error,
            "failed to put back the stopped worker's jobs; they will be found as stalled"),
    }
}

/// The claiming loop's state.
struct Loop<'w> {
    worker: &'w Worker,
    worker_id: Arc<AtomicI64>,
    completer: Completer,
    running: JoinSet<Result<(), TaskError>>,
    by_task: HashMap<tokio::task::Id, Running>,
    /// The queues claims take from, shared with each claim in flight.
    queues: Arc<Option<Vec<String>>>,
    /// Claimed jobs waiting for a free slot, in claim order.
    held: VecDeque<Held>,
    pace: Pace,
    report: WorkerReport,
    /// Set when a claim failed for lack of a connection: the claim may have
    /// committed without us seeing its rows, leaving jobs in `doing` that
    /// nobody runs. The next claim first puts those back.
    reconcile: bool,
}

/// A claimed job not started yet.
#[derive(Debug)]
struct Held {
    job: Job,
    claimed: Instant,
}

impl Held {
    /// The outcome of a held job that ends without running: not an
    /// attempt, no error.
    fn never_ran(&self, verdict: Verdict, delete: bool) -> Outcome {
        Outcome {
            job_id: self.job.id,
            worker_id: self.job.worker_id,
            verdict,
            error: None,
            attempted: false,
            waited: self.claimed.elapsed(),
            delete,
            follow_ups: Vec::new(),
        }
    }
}

/// What a claim statement returns, with what it asked for.
struct Claimed {
    jobs: Result<Vec<Job>, sqlx::Error>,
    limit: usize,
    worker_id: i64,
    round_trip: Duration,
}

type ClaimFuture = std::pin::Pin<Box<dyn Future<Output = Claimed> + Send>>;

/// Claims up to `limit` jobs for `worker_id` with one statement.
fn claim_jobs(
    pool: PgPool,
    queues: Arc<Option<Vec<String>>>,
    worker_id: i64,
    limit: usize,
) -> ClaimFuture {
    Box::pin(async move {
        let sent = Instant::now();
        let jobs = state::claim(&pool, queues.as_deref(), worker_id, limit).await;
        Claimed {
            jobs,
            limit,
            worker_id,
            round_trip: sent.elapsed(),
        }
    })
}

impl Loop<'_> {
    async fn main_loop<S: Future<Output = ()>>(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut S>,
        wake: &Notify,
        retries_written: &Notify,
        abort_requests: &mut mpsc::UnboundedReceiver<i64>,
    ) -> Result<(), WorkerError> {
        let config = &self.worker.config;
        // Since when claims have failed without a success in between.
        let mut failing_since: Option<Instant> = None;
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut claim_due = true;
        let mut in_flight: Option<ClaimFuture> = None;
        // After a failed claim, no other before this.
        let mut retry_at: Option<tokio::time::Instant> = None;
        // When the earliest job scheduled for later becomes runnable.
        let mut next_scheduled: Option<tokio::time::Instant> = None;
        let mut backoff = Backoff::new();
        loop {
            self.start_held();
            if config.one_shot {
                if let Some(since) = failing_since {
                    if since.elapsed() >= config.stalled_after {
                        error!(
                            failing_s = since.elapsed().as_secs_f64(),
                            "one-shot worker: the jobs database keeps failing; giving up"
                        );
                        return Err(WorkerError::Unreachable {
                            waited: since.elapsed(),
                        });
                    }
                }
            }
            if in_flight.is_none() && claim_due && retry_at.is_none() {
                if let Some(limit) = self.claim_size() {
                    if self.reconcile && self.put_back_orphans().await.is_err() {
                        failing_since.get_or_insert_with(Instant::now);
                        retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                        continue;
                    }
                    in_flight = Some(self.claim(limit));
                }
            }
            let hold_expires = self
                .held
                .front()
                .map(|held| tokio::time::Instant::from_std(held.claimed + config.hold_limit));
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => {
                    // A claim in flight may commit: keep its jobs, to be put
                    // back with the others held. If the database does not
                    // answer in time, jobs it claimed are found as stalled
                    // once this worker is gone.
                    if let Some(claim) = in_flight.take() {
                        let answered = tokio::time::timeout(config.shutdown_timeout, claim).await;
                        if let Ok(Claimed { jobs: Ok(jobs), .. }) = answered {
                            self.hold(jobs);
                        }
                    }
                    return Ok(());
                }
                claimed = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    match self.claimed(claimed).await {
                        Ok((count, limit)) => {
                            backoff.reset();
                            failing_since = None;
                            claim_due = count == limit;
                            if count == 0 && config.one_shot && self.idle() {
                                // Outcomes not yet written may be retries
                                // runnable now: write them, then look once more.
                                self.completer.flush().await;
                                let again = self.claim(config.concurrency).await;
                                match self.claimed(again).await {
                                    Ok((0, _)) => return Ok(()),
                                    Ok((count, limit)) => claim_due = count == limit,
                                    Err(()) => {
                                        failing_since.get_or_insert_with(Instant::now);
                                        retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                                    }
                                }
                            } else if !claim_due {
                                next_scheduled = self.next_scheduled().await;
                            }
                        }
                        Err(()) => {
                            failing_since.get_or_insert_with(Instant::now);
                            retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                        }
                    }
                }
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.finished(joined);
                    while let Some(joined) = self.running.try_join_next_with_id() {
                        self.finished(joined);
                    }
                    // Idle in one-shot mode: find out now whether we are done.
                    if config.one_shot && self.idle() {
                        claim_due = true;
                    }
                }
                Some(job_id) = abort_requests.recv() => self.request_abort(job_id),
                _ = wake.notified() => claim_due = true,
                _ = poll.tick() => claim_due = true,
                // A retry was recorded: its time may come before the timer's.
                _ = retries_written.notified() => {
                    let due = self.next_scheduled().await;
                    next_scheduled = match (next_scheduled, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                _ = sleep_until_some(next_scheduled), if next_scheduled.is_some() => {
                    next_scheduled = None;
                    claim_due = true;
                }
                _ = sleep_until_some(retry_at), if retry_at.is_some() => {
                    retry_at = None;
                    claim_due = true;
                }
                _ = sleep_until_some(hold_expires), if hold_expires.is_some() => {
                    self.release_expired();
                }
            }
        }
    }

    /// Nothing running and nothing held.
    fn idle(&self) -> bool {
        self.running.is_empty() && self.held.is_empty()
    }

    /// How many jobs to claim now, if a claim is worth its round trip:
    /// when slots would otherwise stay free, or when the held jobs are down
    /// to half of what the pace asks for.
    fn claim_size(&self) -> Option<usize> {
        let free = self.worker.config.concurrency - self.running.len();
        let target = self.pace.target();
        let wanted = (free + target).saturating_sub(self.held.len());
        let worth = free > self.held.len() || self.held.len() <= target / 2;
        (wanted > 0 && worth).then_some(wanted)
    }

    /// When the earliest job of our queues scheduled for later becomes
    /// runnable (`None` if there is none, or on error: the poll covers it).
    async fn next_scheduled(&self) -> Option<tokio::time::Instant> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM min(scheduled_at) - now())::float8
             FROM procrastinate_jobs
             WHERE status = 'todo' AND scheduled_at IS NOT NULL AND scheduled_at > now()
               AND ($1::varchar[] IS NULL OR queue_name = ANY ($1))",
        )
        .bind(&self.worker.config.queues)
        .fetch_one(&self.worker.pool)
        .await
        .ok()
        .flatten();
        let wait = Duration::try_from_secs_f64(seconds?.max(0.0)).ok()?;
        Some(tokio::time::Instant::now() + wait)
    }

    /// Takes in what a claim returned: the jobs are held in claim order and
    /// started as slots allow. `Ok((claimed, asked for))`; `Err` after
    /// logging a database error.
    async fn claimed(&mut self, claimed: Claimed) -> Result<(usize, usize), ()> {
        let Claimed {
            jobs,
            limit,
            worker_id,
            round_trip,
        } = claimed;
        let mut jobs = match jobs {
            Ok(jobs) => jobs,
            Err(error) => {
                let code = error
                    .as_database_error()
                    .and_then(|e| e.code())
                    .map(|c| c.into_owned());
                match code.as_deref() {
                    // Another claimer took the last job of a lock between our
                    // snapshot and our update: nothing is wrong, claim again.
                    Some("23505") => return Ok((0, 0)),
                    // This worker was pruned as stalled: register anew.
                    Some("23503") => {
                        warn!(
                            worker_id,
                            "the worker was pruned as stalled; registering again"
                        );
                        if let Ok(id) = register_once(&self.worker.pool).await {
                            self.worker_id.store(id, Ordering::Relaxed);
                        }
                    }
                    Some(_) => warn!(error = %error, "failed to claim jobs; retrying"),
                    None => {
                        warn!(error = %error, "failed to claim jobs (connection); retrying");
                        self.reconcile = true;
                    }
                }
                return Err(());
            }
        };
        self.pace.claim_answered(round_trip, Instant::now());
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        let count = jobs.len();
        self.hold(jobs);
        self.start_held();
        Ok((count, limit))
    }

    /// Claims up to `limit` jobs for this worker.
    fn claim(&self, limit: usize) -> ClaimFuture {
        claim_jobs(
            self.worker.pool.clone(),
            self.queues.clone(),
            self.worker_id.load(Ordering::Relaxed),
            limit,
        )
    }

    /// Queues claimed jobs for the next free slots, in the order given.
    fn hold(&mut self, jobs: Vec<Job>) {
        let claimed = Instant::now();
        self.held
            .extend(jobs.into_iter().map(|job| Held { job, claimed }));
    }

    /// Starts held jobs while slots are free.
    fn start_held(&mut self) {
        while self.running.len() < self.worker.config.concurrency {
            let Some(Held { job, claimed }) = self.held.pop_front() else {
                break;
            };
            self.pace.job_started();
            self.start(job, claimed.elapsed());
        }
    }

    /// Puts back held jobs that waited longer than the hold limit for a
    /// slot: the jobs running are slower than the pace assumed, and other
    /// workers may have room for them.
    fn release_expired(&mut self) {
        let limit = self.worker.config.hold_limit;
        let now = Instant::now();
        let mut released = 0;
        while self
            .held
            .front()
            .is_some_and(|held| now.duration_since(held.claimed) >= limit)
        {
            let held = self.held.pop_front().expect("checked above");
            self.release(held);
            released += 1;
        }
        if released > 0 {
            self.pace.slow_down(now);
            info!(
                jobs = released,
                hold_limit_s = limit.as_secs_f64(),
                "put back jobs held ready that found no free slot in time"
            );
        }
    }

    /// Hands a held job back to the queue: not an attempt, no error.
    fn release(&mut self, held: Held) {
        let job = &held.job;
        info!(job_id = job.id, task = %printable(&job.task_name), queue = %printable(&job.queue_name),
              attempt = job.attempts + 1,
              held_ms = held.claimed.elapsed().as_secs_f64() * 1000.0,
              "job put back unstarted");
        self.completer.send(held.never_ran(Verdict::Release, false));
    }

    /// Puts back `doing` jobs of this worker that it neither runs, holds nor
    /// has an outcome for: claimed by a statement whose answer was lost.
    async fn put_back_orphans(&mut self) -> Result<(), ()> {
        // Outcomes still buffered belong to jobs that are legitimately doing.
        if tokio::time::timeout(Duration::from_secs(5), self.completer.flush())
            .await
            .is_err()
        {
            return Err(());
        }
        let ours: Vec<i64> = self
            .by_task
            .values()
            .map(|running| running.job.id)
            .chain(self.held.iter().map(|held| held.job.id))
            .collect();
        let orphans = PutBack {
            which: Selection {
                worker_id: Some(self.worker_id.load(Ordering::Relaxed)),
                except: Some(&ours),
                ..Selection::default()
            },
            count_attempt: false,
            note: None,
        };
        let result = state::put_back(&self.worker.pool, &orphans).await;
        match result {
            Ok(done) => {
                self.reconcile = false;
                if !done.is_empty() {
                    warn!(
                        jobs = done.len(),
                        "put back jobs claimed while the connection was lost"
                    );
                }
                Ok(())
            }
            Err(error) => {
                warn!(error = %error, "failed to check for jobs claimed while the connection was lost");
                Err(())
            }
        }
    }

    /// Starts a claimed job that waited `waited` for its slot.
    fn start(&mut self, job: Job, waited: Duration) {
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
        let args = job.args.clone();
        let args_error = job.args_error.clone();
        let task_name = job.task_name.clone();
        let registry = self.worker.registry.clone();
        let handle = self.running.spawn(async move {
            // Stored arguments this process cannot read fail the job alone,
            // at once: no retry would read them differently.
            if let Some(why) = args_error {
                return Err(TaskError::validation(why));
            }
            let Some(task) = registered else {
                let known = registry.names().join(", ");
                return Err(TaskError::new(
                    task_error::UNKNOWN_TASK,
                    format!("no task named {task_name:?} is registered in this worker (it knows: {known})"),
                )
                .no_retry());
            };
            match task.timeout {
                Some(limit) => match tokio::time::timeout(limit, (task.run)(args, context)).await {
                    Ok(result) => result,
                    Err(_) => Err(TaskError::timeout(format!(
                        "the job ran longer than its timeout of {} s and was stopped",
                        limit.as_secs_f64()
                    ))),
                },
                None => (task.run)(args, context).await,
            }
        });
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
            },
        );
    }

    /// Tells a running job its abort was requested, and cancels it if it has
    /// not stopped by itself after the grace period.
    fn request_abort(&mut self, job_id: i64) {
        if let Some(index) = self.held.iter().position(|held| held.job.id == job_id) {
            let held = self.held.remove(index).expect("position is in range");
            info!(job_id, task = %printable(&held.job.task_name), queue = %printable(&held.job.queue_name),
                  attempt = held.job.attempts + 1, duration_ms = 0.0,
                  "job aborted before it started");
            self.report.aborted += 1;
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
    fn finished(
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
            Err(error) => {
                let verdict = self.failure(&job, &error, duration);
                (verdict, Some(error))
            }
        };
        let delete = match (self.worker.config.retention, &verdict) {
            (Retention::KeepAll, _) | (_, Verdict::Retry { .. }) => false,
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
            attempted: true,
            waited,
            delete,
            follow_ups,
        });
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
                let at =
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
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
    async fn drain(&mut self, timeout: Duration) {
        // Held jobs go back first, so that other workers can start them
        // while these finish.
        let held = self.held.len();
        while let Some(job) = self.held.pop_front() {
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
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.running.join_next_with_id()).await {
                Ok(Some(joined)) => self.finished(joined),
                Ok(None) => break,
                Err(_) => break,
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

/// Runs a middleware hook; a panic in it is logged and goes no further, so a
/// hook that trips over one job stops neither that job nor the worker.
fn hook(name: &str, job: &Job, call: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(call)) {
        error!(job_id = job.id, hook = name, reason = %panic_message(panic),
               "a middleware hook panicked; carrying on without it for this call");
    }
}

/// The message a panic carried (bounded: a panic may quote anything).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.as_str()
    } else {
        "no message"
    };
    crate::text::storable(message, task_error::MAX_MESSAGE_BYTES).into_owned()
}

/// How registering ended.
enum Registered {
    Id(i64),
    /// `shutdown` completed first.
    Stopped,
    /// The database failed for longer than allowed.
    GaveUp,
}

/// Registers the worker, retrying with backoff until it works, `shutdown`
/// completes, or (when `give_up_after` is set) the database has failed for
/// that long.
async fn register<S: Future<Output = ()>>(
    pool: &PgPool,
    shutdown: &mut std::pin::Pin<&mut S>,
    give_up_after: Option<Duration>,
) -> Registered {
    let mut backoff = Backoff::new();
    let first_try = Instant::now();
    loop {
        match register_once(pool).await {
            Ok(id) => return Registered::Id(id),
            Err(error) if give_up_after.is_some_and(|limit| first_try.elapsed() >= limit) => {
                error!(error = %error, "failed to register the worker with the jobs database; giving up");
                return Registered::GaveUp;
            }
            Err(error) => {
                let wait = backoff.next_wait();
                warn!(error = %error, retry_in_ms = wait.as_millis() as u64,
                      "failed to register the worker with the jobs database; retrying");
                tokio::select! {
                    _ = shutdown.as_mut() => return Registered::Stopped,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn register_once(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
}

/// The channels to LISTEN on: one per queue, or the any-queue channel.
fn channels(queues: &Option<Vec<String>>) -> Vec<String> {
    match queues {
        None => vec!["procrastinate_any_queue_v1".to_string()],
        Some(queues) => queues
            .iter()
            .map(|queue| format!("procrastinate_queue_v1#{queue}"))
            .collect(),
    }
}

/// Wakes the claiming loop on every notification; reconnects with backoff.
async fn listen(
    pool: PgPool,
    channels: Vec<String>,
    wake: Arc<Notify>,
    abort_requests: mpsc::UnboundedSender<i64>,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            let names: Vec<&str> = channels.iter().map(String::as_str).collect();
            listener.listen_all(names).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                // Anything inserted while we were not listening.
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            debug!(
                                channel = notification.channel(),
                                payload = notification.payload(),
                                "notification"
                            );
                            match abort_request(notification.payload()) {
                                Some(job_id) => {
                                    let _ = abort_requests.send(job_id);
                                }
                                None => wake.notify_one(),
                            }
                        }
                        // The connection dropped; the next call reconnects.
                        Ok(None) => {
                            warn!("lost the LISTEN connection to the jobs database; reconnecting");
                            wake.notify_one();
                        }
                        Err(error) => {
                            warn!(error = %error, "LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => warn!(error = %error, "failed to LISTEN for new jobs; polling meanwhile"),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// The job id of an `abort_job_requested` notification.
fn abort_request(payload: &str) -> Option<i64> {
    let payload: serde_json::Value = serde_json::from_str(payload).ok()?;
    if payload["type"] != "abort_job_requested" {
        return None;
    }
    payload["job_id"].as_i64()
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

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
