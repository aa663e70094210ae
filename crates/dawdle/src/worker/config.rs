//! How a worker runs, what it reports when it stops, and why it may not.

use std::time::Duration;

/// `WorkerConfig::prefetch` unless set otherwise.
pub const DEFAULT_PREFETCH: usize = 1000;

/// How a worker runs. The defaults are [`WorkerConfig::default`]'s, the one
/// place they are written; change a field with its setter of the same name:
/// `WorkerConfig::default().concurrency(20).one_shot(true)`.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The pool reaches the jobs database through PgBouncer in transaction
    /// pooling (see `JobsDatabase::behind_pgbouncer`): no LISTEN unless
    /// given a direct pool for it (`WorkerBuilder::listen_through`; without
    /// one, new jobs are found by the poll, abort requests by the
    /// heartbeat's check), and each of the worker's statements runs in a
    /// transaction of its own.
    pub pgbouncer: bool,
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
            pgbouncer: false,
            stalled_after: Duration::from_secs(30),
            abort_grace: Duration::from_secs(10),
            retention: Retention::KeepAll,
        }
    }
}

impl WorkerConfig {
    /// Sets [`WorkerConfig::queues`].
    pub fn queues(mut self, queues: Option<Vec<String>>) -> Self {
        self.queues = queues;
        self
    }

    /// Sets [`WorkerConfig::concurrency`].
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`WorkerConfig::prefetch`].
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets [`WorkerConfig::hold_limit`].
    pub fn hold_limit(mut self, hold_limit: Duration) -> Self {
        self.hold_limit = hold_limit;
        self
    }

    /// Sets [`WorkerConfig::poll_interval`].
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets [`WorkerConfig::heartbeat_interval`].
    pub fn heartbeat_interval(mut self, heartbeat_interval: Duration) -> Self {
        self.heartbeat_interval = heartbeat_interval;
        self
    }

    /// Sets [`WorkerConfig::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Sets [`WorkerConfig::one_shot`].
    pub fn one_shot(mut self, one_shot: bool) -> Self {
        self.one_shot = one_shot;
        self
    }

    /// Sets [`WorkerConfig::listen`].
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Sets [`WorkerConfig::pgbouncer`].
    pub fn pgbouncer(mut self, pgbouncer: bool) -> Self {
        self.pgbouncer = pgbouncer;
        self
    }

    /// Sets [`WorkerConfig::stalled_after`].
    pub fn stalled_after(mut self, stalled_after: Duration) -> Self {
        self.stalled_after = stalled_after;
        self
    }

    /// Sets [`WorkerConfig::abort_grace`].
    pub fn abort_grace(mut self, abort_grace: Duration) -> Self {
        self.abort_grace = abort_grace;
        self
    }

    /// Sets [`WorkerConfig::retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Checks the settings against each other; `Worker::builder` calls it
    /// when building, `Worker::run` before starting.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.concurrency == 0 {
            return Err(WorkerError::NoConcurrency);
        }
        if self.queues.as_ref().is_some_and(Vec::is_empty) {
            return Err(WorkerError::NoQueues);
        }
        let invalid = |why: String| Err(WorkerError::InvalidConfig(why));
        if self.poll_interval.is_zero() {
            return invalid("the poll interval must be longer than zero".into());
        }
        if self.heartbeat_interval.is_zero() {
            return invalid("the heartbeat interval must be longer than zero".into());
        }
        if self.heartbeat_interval >= self.stalled_after {
            return invalid(format!(
                "the heartbeat interval ({} s) must be shorter than stalled_after ({} s), or \
                 live workers are taken for stalled ones",
                self.heartbeat_interval.as_secs_f64(),
                self.stalled_after.as_secs_f64()
            ));
        }
        Ok(())
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
    /// Attempts that asked to run again later (not counted as attempts).
    pub snoozed: u64,
    /// Jobs their task cancelled.
    pub cancelled: u64,
    /// Outcomes the database refused even alone (a retry beside a waiting
    /// job of the same queueing lock, say): their jobs were failed instead,
    /// with an event saying why. Each is also counted above by how its
    /// attempt ended.
    pub refused: u64,
}

/// Failures that stop a worker before it starts, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("start the worker: concurrency must be at least 1")]
    NoConcurrency,
    #[error("start the worker: the queue list is empty (leave it unset to work on every queue)")]
    NoQueues,
    /// Settings that contradict each other.
    #[error("start the worker: {0}")]
    InvalidConfig(String),
    /// The worker's own loop (not a task) panicked. Every job it held was
    /// finished or put back before this was returned.
    #[error("run the worker: it stopped on an internal error ({reason}); the jobs it held were put back")]
    Crashed { reason: String },
    /// One-shot mode only: the jobs database did not answer for
    /// `stalled_after`, so the run cannot finish its work.
    #[error("run the worker in one-shot mode: the jobs database did not answer for {} s", waited.as_secs_f64())]
    Unreachable { waited: Duration },
}
