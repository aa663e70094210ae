//! The tasks a worker can run, by name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::context::JobContext;
use crate::cron::Schedule;
use crate::retry::RetryStrategy;
use crate::task::Task;
use crate::task_error::TaskError;

type BoxedRun = Arc<
    dyn Fn(Value, JobContext) -> Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>
        + Send
        + Sync,
>;

/// One registered task.
#[derive(Clone)]
pub(crate) struct RegisteredTask {
    pub(crate) run: BoxedRun,
    pub(crate) retry: RetryStrategy,
    pub(crate) timeout: Option<std::time::Duration>,
}

/// A job deferred on a cron schedule, once per tick across every worker
/// (`procrastinate_defer_periodic_job_v2`), with the tick's unix time added
/// to its arguments as `timestamp`, as Procrastinate does.
#[derive(Debug, Clone)]
pub struct Periodic {
    pub task_name: String,
    pub schedule: Schedule,
    /// Tells apart several schedules of one task (default empty).
    pub periodic_id: String,
    pub args: Map<String, Value>,
    pub queue: String,
    pub priority: i32,
    pub lock: Option<String>,
    pub queueing_lock: Option<String>,
}

impl Periodic {
    /// `task_name` on `schedule`, with empty arguments on the default queue.
    pub fn new(task_name: impl Into<String>, schedule: Schedule) -> Self {
        Self {
            task_name: task_name.into(),
            schedule,
            periodic_id: String::new(),
            args: Map::new(),
            queue: crate::job::DEFAULT_QUEUE.to_string(),
            priority: 0,
            lock: None,
            queueing_lock: None,
        }
    }
}

/// Settings of one registration that replace the task's own
/// ([`Task::retry_strategy`], [`Task::timeout`], [`Task::QUEUE`]): for
/// settings that come from configuration at startup, or a task registered
/// twice over in different workers.
///
/// ```
/// # use std::time::Duration;
/// # use dawdle::{Registry, RetryStrategy, TaskOptions};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Sync {}
/// # impl dawdle::Task for Sync {
/// #     const NAME: &'static str = "sync";
/// #     async fn run(self, _: dawdle::JobContext) -> Result<(), dawdle::TaskError> { Ok(()) }
/// # }
/// let max_retries = 8; // from the environment, say
/// let mut registry = Registry::new();
/// registry.register_with::<Sync>(
///     TaskOptions::new()
///         .retry(RetryStrategy::exponential(max_retries, 2.0))
///         .timeout(Duration::from_secs(30)),
/// );
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TaskOptions {
    retry: Option<RetryStrategy>,
    timeout: Option<Option<std::time::Duration>>,
    queue: Option<String>,
}

impl TaskOptions {
    /// Nothing replaced: the task's own settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retry failed attempts with `strategy`.
    pub fn retry(mut self, strategy: RetryStrategy) -> Self {
        self.retry = Some(strategy);
        self
    }

    /// Stop attempts longer than `limit` (they fail as `TimeoutError`).
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.timeout = Some(Some(limit));
        self
    }

    /// No time limit, whatever the task says.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// The queue this registration's periodic jobs are deferred to
    /// ([`Registry::register_periodic_with`]).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

impl std::fmt::Debug for RegisteredTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredTask")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Task names mapped to the code that runs them.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: HashMap<String, RegisteredTask>,
    periodic: Vec<Periodic>,
    state: crate::context::State,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` under `T::NAME`. Arguments that do not deserialise into
    /// `T` fail the job as `ValidationError`, without retry.
    pub fn register<T: Task>(&mut self) -> &mut Self {
        self.register_with::<T>(TaskOptions::new())
    }

    /// Registers `T` with `options` in place of its own settings.
    pub fn register_with<T: Task>(&mut self, options: TaskOptions) -> &mut Self {
        let run: BoxedRun = Arc::new(|args: Value, ctx: JobContext| {
            Box::pin(async move {
                let task: T = serde_json::from_value(args).map_err(|error| {
                    TaskError::validation(format!(
                        "arguments do not match task {}: {error}",
                        T::NAME
                    ))
                })?;
                task.run(ctx).await
            })
        });
        self.tasks.insert(
            T::NAME.to_string(),
            RegisteredTask {
                run,
                retry: options.retry.unwrap_or_else(T::retry_strategy),
                timeout: options.timeout.unwrap_or_else(T::timeout),
            },
        );
        self
    }

    /// Registers `T` and defers it on `schedule` (with `T`'s queue and
    /// priority, and empty arguments besides `timestamp`).
    pub fn register_periodic<T: Task>(&mut self, schedule: Schedule) -> &mut Self {
        self.register_periodic_with::<T>(schedule, TaskOptions::new())
    }

    /// [`register_periodic`](Self::register_periodic) with `options` in
    /// place of the task's own settings (its queue among them).
    pub fn register_periodic_with<T: Task>(
        &mut self,
        schedule: Schedule,
        options: TaskOptions,
    ) -> &mut Self {
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| T::QUEUE.to_string());
        self.register_with::<T>(options);
        let mut periodic = Periodic::new(T::NAME, schedule);
        periodic.queue = queue;
        periodic.priority = T::PRIORITY;
        self.periodic.push(periodic);
        self
    }

    /// Defers a job on a schedule; its task may be run by any worker,
    /// Python ones included.
    pub fn add_periodic(&mut self, periodic: Periodic) -> &mut Self {
        self.periodic.push(periodic);
        self
    }

    /// Shares `state` with every task: `ctx.state::<S>()` returns it. One
    /// value per type; use it for clients, pools and configuration that
    /// tasks need but their arguments should not carry.
    pub fn with_state<S: Send + Sync + 'static>(&mut self, state: S) -> &mut Self {
        self.state.insert(state);
        self
    }

    pub(crate) fn state(&self) -> crate::context::State {
        self.state.clone()
    }

    pub(crate) fn periodic(&self) -> &[Periodic] {
        &self.periodic
    }

    pub fn contains(&self, task_name: &str) -> bool {
        self.tasks.contains_key(task_name)
    }

    /// Registered task names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn get(&self, task_name: &str) -> Option<&RegisteredTask> {
        self.tasks.get(task_name)
    }
}
