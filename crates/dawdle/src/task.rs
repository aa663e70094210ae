//! Tasks: the Rust types whose values are job arguments.
//!
//! A task's arguments are its serde representation, which must be a JSON
//! object: the same `args` a Python task receives as keyword arguments, so a
//! job can be deferred from one language and run by the other.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::JobContext;
use crate::retry::RetryStrategy;
use crate::task_error::TaskError;

/// A kind of job. Implement it on the struct of the job's arguments:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendWelcomeEmail {
///     user_id: i64,
/// }
///
/// impl dawdle::Task for SendWelcomeEmail {
///     const NAME: &'static str = "email.send_welcome";
///     const QUEUE: &'static str = "email";
///
///     fn retry_strategy() -> dawdle::RetryStrategy {
///         dawdle::RetryStrategy::exponential(5, 2.0)
///     }
///
///     fn queueing_lock(&self) -> Option<String> {
///         Some(format!("welcome-{}", self.user_id))
///     }
///
///     async fn run(self, ctx: dawdle::JobContext) -> Result<(), dawdle::TaskError> {
///         // Send the email; `?` turns any error into a TaskError with its
///         // cause chain, and a kind such as ConnectionError where known.
///         let _ = (self.user_id, ctx.attempts);
///         Ok(())
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The task name stored in `task_name`; at most 128 characters.
    const NAME: &'static str;
    /// Queue jobs go to unless the caller picks another.
    const QUEUE: &'static str = crate::job::DEFAULT_QUEUE;
    /// Higher runs first.
    const PRIORITY: i32 = 0;

    /// Longest an attempt may run; a longer one is stopped and fails with
    /// kind `TimeoutError`, retried per the strategy. `None`: no limit.
    fn timeout() -> Option<std::time::Duration> {
        None
    }

    /// How failed attempts are retried. The default never retries.
    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::never()
    }

    /// Jobs of this value that must not run at the same time share a lock.
    fn lock(&self) -> Option<String> {
        None
    }

    /// At most one waiting job per queueing lock.
    fn queueing_lock(&self) -> Option<String> {
        None
    }

    /// Runs one attempt. An `Err` is recorded as an `error` event and retried
    /// per [`retry_strategy`](Self::retry_strategy); a panic fails the attempt
    /// with kind `Panic` and never takes the worker down. Besides failing, a
    /// task can return:
    ///
    /// - [`TaskError::snooze`]: run again later, no attempt counted;
    /// - [`TaskError::cancel`]: end the job `cancelled`, with its reason;
    /// - an error with [`no_retry`](TaskError::no_retry): fail for good now.
    ///
    /// A task that sees its abort requested (`ctx.abort_requested()`) and
    /// returns `Ok` is recorded `succeeded`: it finished its work. Return an
    /// `Err` to have it recorded `aborted`.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<(), TaskError>> + Send;
}
