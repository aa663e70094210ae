//! The worker's metrics, recorded through the `metrics` facade: free when
//! no recorder is installed, exported in Prometheus' text format by
//! whatever recorder the application installs (`dawdle worker
//! --metrics-addr` installs one).
//!
//! Label values are bounded whatever the rows hold: a task name is one the
//! registry knows, else `unknown`; a queue name is one the worker was
//! configured with, else one of the first [`MAX_QUEUE_LABELS`] seen, else
//! `other`. A hostile row cannot explode the number of series.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Label, SharedString, Unit,
};

use super::registry::Registry;
use crate::state::Verdict;

/// Most distinct queue names used as label values by one worker that
/// claims from every queue.
pub const MAX_QUEUE_LABELS: usize = 64;

/// Names of the metrics, for dashboards, alert rules and tests.
pub mod names {
    /// Counter: attempts started.
    pub const JOBS_STARTED: &str = "dawdle_jobs_started_total";
    /// Counter: how attempts (and held jobs that never ran) ended, by
    /// `outcome`: `succeeded`, `failed`, `retried`, `snoozed`, `cancelled`,
    /// `aborted`, `put_back`.
    pub const JOB_OUTCOMES: &str = "dawdle_job_outcomes_total";
    /// Histogram: how long attempts ran, in seconds.
    pub const ATTEMPT_DURATION: &str = "dawdle_attempt_duration_seconds";
    /// Histogram: from when a job could run (its schedule, or its creation)
    /// to the start of its attempt, in seconds.
    pub const QUEUE_WAIT: &str = "dawdle_queue_wait_seconds";
    /// Histogram: jobs per claim statement.
    pub const CLAIM_SIZE: &str = "dawdle_claim_jobs";
    /// Histogram: round trip of a claim statement, in seconds, by
    /// `read_from`: `head` (a full pass over the claim order) or `floor`
    /// (from where the worker's last claim ended).
    pub const CLAIM_DURATION: &str = "dawdle_claim_duration_seconds";
    /// Histogram: outcomes per completion statement.
    pub const COMPLETION_SIZE: &str = "dawdle_completion_jobs";
    /// Histogram: round trip of a completion statement, in seconds.
    pub const COMPLETION_DURATION: &str = "dawdle_completion_duration_seconds";
    /// Gauge: jobs claimed ahead and waiting for a free slot.
    pub const JOBS_HELD: &str = "dawdle_jobs_held";
    /// Gauge: attempts running.
    pub const JOBS_RUNNING: &str = "dawdle_jobs_running";
    /// Counter: jobs of stopped workers put back by this worker's upkeep.
    pub const JOBS_RESCUED: &str = "dawdle_jobs_rescued_total";
    /// Counter: failed statements, by `operation`: `claim`, `record`,
    /// `look_ahead` (the look for jobs scheduled for later), `upkeep`.
    pub const DATABASE_ERRORS: &str = "dawdle_worker_database_errors_total";
}

/// Registers the help text and unit of every worker metric with the
/// installed recorder (Prometheus shows them as `# HELP`). Call it once,
/// after installing the recorder.
pub fn describe() {
    describe_counter!(names::JOBS_STARTED, "Attempts started, by task and queue");
    describe_counter!(
        names::JOB_OUTCOMES,
        "How attempts and held jobs ended, by task, queue and outcome"
    );
    describe_histogram!(
        names::ATTEMPT_DURATION,
        Unit::Seconds,
        "How long attempts ran"
    );
    describe_histogram!(
        names::QUEUE_WAIT,
        Unit::Seconds,
        "From when a job could run to the start of its attempt"
    );
    describe_histogram!(names::CLAIM_SIZE, Unit::Count, "Jobs per claim statement");
    describe_histogram!(
        names::CLAIM_DURATION,
        Unit::Seconds,
        "Round trip of a claim statement, by where it read the claim order from (head, floor)"
    );
    describe_histogram!(
        names::COMPLETION_SIZE,
        Unit::Count,
        "Outcomes per completion statement"
    );
    describe_histogram!(
        names::COMPLETION_DURATION,
        Unit::Seconds,
        "Round trip of a completion statement"
    );
    describe_gauge!(
        names::JOBS_HELD,
        "Jobs claimed ahead, waiting for a free slot"
    );
    describe_gauge!(names::JOBS_RUNNING, "Attempts running");
    describe_counter!(
        names::JOBS_RESCUED,
        "Jobs of stopped workers put back by this worker"
    );
    describe_counter!(
        names::DATABASE_ERRORS,
        "Failed worker statements, by operation (claim, record, look_ahead, upkeep)"
    );
}

/// Histogram buckets: seconds for durations, counts for batch sizes.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// See [`DURATION_BUCKETS`].
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// The `outcome` label values, in the order of [`JobMetrics`]' counters.
const OUTCOMES: [&str; 7] = [
    "succeeded",
    "failed",
    "retried",
    "snoozed",
    "cancelled",
    "aborted",
    "put_back",
];

/// The metric handles of one bounded (`task`, `queue`) pair, registered
/// with the recorder once: a job then only touches atomics. (Install the
/// recorder before starting the worker: handles registered earlier stay
/// no-ops.)
#[derive(Debug)]
pub(crate) struct JobMetrics {
    /// The label values, for the tests.
    #[cfg(test)]
    task: SharedString,
    #[cfg(test)]
    queue: SharedString,
    started: Counter,
    queue_wait: Histogram,
    duration: Histogram,
    /// Registered on first use: an outcome a pair never had is no series.
    outcomes: [OnceLock<Counter>; OUTCOMES.len()],
    labels: [Label; 2],
}

/// What a job's metrics are recorded through.
pub(crate) type JobLabels = Arc<JobMetrics>;

impl JobMetrics {
    fn new(task: &str, queue: &str) -> Self {
        let task = SharedString::from(task.to_string());
        let queue = SharedString::from(queue.to_string());
        let labels = [
            Label::new("task", task.clone()),
            Label::new("queue", queue.clone()),
        ];
        Self {
            started: counter!(names::JOBS_STARTED, labels.to_vec()),
            queue_wait: histogram!(names::QUEUE_WAIT, labels.to_vec()),
            duration: histogram!(names::ATTEMPT_DURATION, labels.to_vec()),
            outcomes: Default::default(),
            labels,
            #[cfg(test)]
            task,
            #[cfg(test)]
            queue,
        }
    }

    pub(crate) fn started(&self, queue_wait: Duration) {
        self.started.increment(1);
        self.queue_wait.record(queue_wait.as_secs_f64());
    }

    /// An attempt that ran `ran` ended with `outcome`.
    pub(crate) fn attempt_ended(&self, outcome: &'static str, ran: Duration) {
        self.duration.record(ran.as_secs_f64());
        self.ended(outcome);
    }

    /// The job ended with `outcome` (for held jobs, without running).
    pub(crate) fn ended(&self, outcome: &'static str) {
        if let Some(index) = OUTCOMES.iter().position(|known| *known == outcome) {
            self.outcomes[index]
                .get_or_init(|| {
                    let mut labels = self.labels.to_vec();
                    labels.push(Label::new("outcome", OUTCOMES[index]));
                    counter!(names::JOB_OUTCOMES, labels)
                })
                .increment(1);
        }
    }
}

type Cache = HashMap<String, HashMap<String, JobLabels>>;

/// Turns row values into bounded label values for one worker, and keeps
/// the metric handles of each pair and of the worker's own gauges.
#[derive(Debug, Clone)]
pub(crate) struct Labeller {
    registry: Arc<Registry>,
    /// The worker's queues, when it was given some: the only ones it sees.
    configured: Option<Arc<HashSet<String>>>,
    /// Queue names seen so far by a worker of every queue.
    seen: Arc<RwLock<HashSet<String>>>,
    /// Handles by task label, then queue label: bounded as the labels are.
    cache: Arc<RwLock<Cache>>,
    /// [`names::JOBS_HELD`] and [`names::JOBS_RUNNING`], set on every turn
    /// of the claiming loop: registered once.
    held: Gauge,
    running: Gauge,
}

impl Labeller {
    pub(crate) fn new(registry: Arc<Registry>, queues: Option<&[String]>) -> Self {
        Self {
            registry,
            configured: queues.map(|queues| Arc::new(queues.iter().cloned().collect())),
            seen: Arc::default(),
            cache: Arc::default(),
            held: gauge!(names::JOBS_HELD),
            running: gauge!(names::JOBS_RUNNING),
        }
    }

    /// The jobs held ahead and running now.
    pub(crate) fn occupancy(&self, held: usize, running: usize) {
        self.held.set(held as f64);
        self.running.set(running as f64);
    }

    /// The metrics of a job of `task` in `queue`.
    pub(crate) fn job(&self, task: &str, queue: &str) -> JobLabels {
        let task = if self.registry.get(task).is_some() {
            task
        } else {
            "unknown"
        };
        let queue = self.queue(queue);
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(task)
            .and_then(|queues| queues.get(queue))
            .cloned();
        if let Some(metrics) = cached {
            return metrics;
        }
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache
            .entry(task.to_string())
            .or_default()
            .entry(queue.to_string())
            .or_insert_with(|| Arc::new(JobMetrics::new(task, queue)))
            .clone()
    }

    /// `queue` when it may be a label value, else `other`.
    fn queue<'q>(&self, queue: &'q str) -> &'q str {
        if let Some(configured) = &self.configured {
            return if configured.contains(queue) {
                queue
            } else {
                "other"
            };
        }
        if self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(queue)
        {
            return queue;
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(queue) || seen.len() < MAX_QUEUE_LABELS {
            seen.insert(queue.to_string());
            queue
        } else {
            "other"
        }
    }
}

/// The `outcome` label of a verdict.
pub(crate) fn outcome(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Succeeded => "succeeded",
        Verdict::Retry { .. } => "retried",
        Verdict::Failed => "failed",
        Verdict::Snooze { .. } => "snoozed",
        Verdict::Cancelled => "cancelled",
        Verdict::Aborted => "aborted",
        Verdict::Release => "put_back",
    }
}

/// A claim statement answered `jobs` jobs after `took`; it read the claim
/// order from its head (a full pass) or from the worker's floor.
pub(crate) fn claimed(jobs: usize, took: Duration, from_head: bool) {
    histogram!(names::CLAIM_SIZE).record(jobs as f64);
    let read_from = if from_head { "head" } else { "floor" };
    histogram!(names::CLAIM_DURATION, "read_from" => read_from).record(took.as_secs_f64());
}

/// A completion statement wrote `jobs` outcomes in `took`.
pub(crate) fn recorded(jobs: usize, took: Duration) {
    histogram!(names::COMPLETION_SIZE).record(jobs as f64);
    histogram!(names::COMPLETION_DURATION).record(took.as_secs_f64());
}

pub(crate) fn rescued(jobs: usize) {
    counter!(names::JOBS_RESCUED).increment(jobs as u64);
}

/// A statement of `operation` failed.
pub(crate) fn database_error(operation: &'static str) {
    counter!(names::DATABASE_ERRORS, "operation" => operation).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tasks_and_queues_past_the_bound_share_one_label() {
        let mut registry = Registry::new();
        registry.register::<crate::diagnostics::Noop>();
        let labeller = Labeller::new(Arc::new(registry), None);
        let known = labeller.job("dawdle.noop", "default");
        assert_eq!(&*known.task, "dawdle.noop");
        assert_eq!(&*known.queue, "default");
        assert_eq!(&*labeller.job("evil.\u{1b}[2J", "q").task, "unknown");
        for n in 0..1000 {
            labeller.job("dawdle.noop", &format!("queue-{n}"));
        }
        let distinct: HashSet<String> = (0..1000)
            .map(|n| {
                labeller
                    .job("dawdle.noop", &format!("queue-{n}"))
                    .queue
                    .to_string()
            })
            .collect();
        // `default` and `q` took two of the places; the rest share `other`.
        assert_eq!(distinct.len(), MAX_QUEUE_LABELS - 2 + 1);
        assert!(distinct.contains("other"));
        assert_eq!(&*labeller.job("x", "default").queue, "default");
    }

    #[test]
    fn a_worker_of_given_queues_labels_only_those() {
        let labeller = Labeller::new(
            Arc::new(Registry::new()),
            Some(&["email".to_string(), "crm".to_string()]),
        );
        assert_eq!(&*labeller.job("t", "email").queue, "email");
        assert_eq!(&*labeller.job("t", "elsewhere").queue, "other");
    }
}
