//! The tasks a worker can run, by name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::context::JobContext;
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
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` under `T::NAME`. Arguments that do not deserialise into
    /// `T` fail the job as `ValidationError`, without retry.
    pub fn register<T: Task>(&mut self) -> &mut Self {
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
                retry: T::retry_strategy(),
            },
        );
        self
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
