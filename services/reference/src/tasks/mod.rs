//! The jobs this service runs: emails (SMTP, or `.eml` files in development)
//! and calls to the external CRM API.
//!
//! Every failure maps to one of the runbook's error kinds, so its table of
//! failure patterns holds: `ConnectionError` (the mail server or CRM is down
//! or answers 5xx), `TimeoutError` (it is too slow, or asks us to slow
//! down), `ValidationError` (bad arguments or a request the other side
//! rejects: never retried), `DatabaseError` (the main database, which the
//! tasks use to stay idempotent). The cause chain is kept as the traceback.
//!
//! Tasks reach the mailer, the HTTP client and the main database through an
//! environment installed once at startup: `dawdle::Task::run` receives only
//! the job's context, and `Task::retry_strategy` takes no `self`, so
//! settings that come from the environment have to be process-wide.

mod crm;
mod email;

use std::sync::OnceLock;

use dawdle::task_error::{CONNECTION_ERROR, DATABASE_ERROR, TIMEOUT_ERROR};
use dawdle::{Registry, RetryStrategy, TaskError};
use sqlx::PgPool;

use crate::config::RetrySettings;

pub(crate) use crm::{CrmClient, NotifyCrm};
pub(crate) use email::{Mailer, MailerError, SendOrderConfirmation, SendWelcomeEmail};

/// What tasks need from the outside world.
#[derive(Debug)]
pub(crate) struct Environment {
    pub(crate) mailer: Mailer,
    pub(crate) crm: CrmClient,
    /// The main database (not the jobs database): where deliveries are
    /// recorded so that a job run twice sends once.
    pub(crate) main: PgPool,
    pub(crate) retry: RetrySettings,
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Makes `environment` the tasks' for the life of the process and returns
/// the registry of every task. Call once, before starting a worker: the
/// registry reads the retry settings now.
pub(crate) fn install(environment: Environment) -> Registry {
    if ENVIRONMENT.set(environment).is_err() {
        tracing::warn!("the task environment was installed twice; keeping the first");
    }
    let mut registry = Registry::new();
    registry
        .register::<SendWelcomeEmail>()
        .register::<SendOrderConfirmation>()
        .register::<NotifyCrm>();
    registry
}

fn environment() -> Result<&'static Environment, TaskError> {
    ENVIRONMENT.get().ok_or_else(|| {
        TaskError::new(
            "ConfigurationError",
            "the task environment is not installed; the worker was started without it",
        )
    })
}

/// Exponential backoff per the settings, for errors that a later attempt
/// may not meet (the other kinds fail the job at once).
fn backoff(retry_on: &[&str]) -> RetryStrategy {
    let settings = ENVIRONMENT
        .get()
        .map(|environment| environment.retry)
        .unwrap_or_default();
    RetryStrategy::exponential(settings.max_retries, settings.base_seconds)
        .with_max_wait(settings.max_wait)
        // Spreads the retries of many jobs that failed together (an outage)
        // so that they do not all hit the recovering service at once.
        .with_jitter(0.1)
        .retry_on(retry_on.iter().copied())
}

/// Emails are retried while the mail server or the main database is down.
fn email_backoff() -> RetryStrategy {
    backoff(&[CONNECTION_ERROR, TIMEOUT_ERROR, DATABASE_ERROR])
}

/// CRM calls are retried while the CRM is down or slow.
fn crm_backoff() -> RetryStrategy {
    backoff(&[CONNECTION_ERROR, TIMEOUT_ERROR])
}

/// A failure of the main database inside a task, with its cause chain.
fn database_error(error: sqlx::Error) -> TaskError {
    TaskError::from_error(DATABASE_ERROR, &error)
}
