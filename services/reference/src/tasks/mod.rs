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
//! Tasks reach the mailer, the HTTP client and the main database through
//! the registry's shared state (`ctx.state::<Environment>()`), and take
//! their retry strategy from the service's settings at registration, so two
//! workers in one process (the tests start many) can run with different
//! environments.

mod crm;
mod email;

use dawdle::task_error::{CONNECTION_ERROR, DATABASE_ERROR, TIMEOUT_ERROR};
use dawdle::{JobContext, Registry, RetryStrategy, TaskError, TaskOptions};
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

/// The registry of every task, sharing `environment` with them and
/// retrying per its settings.
pub(crate) fn install(environment: Environment) -> Registry {
    let retry = environment.retry;
    let email = TaskOptions::new().retry(email_backoff(retry));
    let mut registry = Registry::new();
    registry
        .register_with::<SendWelcomeEmail>(email.clone())
        .register_with::<SendOrderConfirmation>(email)
        .register_with::<NotifyCrm>(TaskOptions::new().retry(crm_backoff(retry)))
        .with_state(environment);
    registry
}

fn environment(ctx: &JobContext) -> Result<&Environment, TaskError> {
    ctx.state::<Environment>().ok_or_else(|| {
        TaskError::new(
            "ConfigurationError",
            "the task environment is not installed; the worker was started without it",
        )
        .no_retry()
    })
}

/// Exponential backoff per the settings, for errors that a later attempt
/// may not meet (the other kinds fail the job at once).
fn backoff(settings: RetrySettings, retry_on: &[&str]) -> RetryStrategy {
    RetryStrategy::exponential(settings.max_retries, settings.base_seconds)
        .with_max_wait(settings.max_wait)
        // Spreads the retries of many jobs that failed together (an outage)
        // so that they do not all hit the recovering service at once.
        .with_jitter(0.1)
        .retry_on(retry_on.iter().copied())
}

/// Emails are retried while the mail server or the main database is down.
fn email_backoff(settings: RetrySettings) -> RetryStrategy {
    backoff(settings, &[CONNECTION_ERROR, TIMEOUT_ERROR, DATABASE_ERROR])
}

/// CRM calls are retried while the CRM is down or slow.
fn crm_backoff(settings: RetrySettings) -> RetryStrategy {
    backoff(settings, &[CONNECTION_ERROR, TIMEOUT_ERROR])
}

/// A failure of the main database inside a task, with its cause chain.
fn database_error(error: sqlx::Error) -> TaskError {
    TaskError::from_error(DATABASE_ERROR, &error)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The service's registry as a worker runs it, through dawdle's test kit.

    use std::time::Duration;

    use dawdle::testing::{assert_deferred, drain, TestDatabase};
    use dawdle::JobOutcome;

    use super::*;
    use crate::config::EmailDelivery;
    use crate::domain::DomainEvent;

    /// What tasks need, for tests: `main` migrated as the main database,
    /// emails written as files into `dir`, and a CRM that refuses every
    /// call (nothing listens on port 9).
    pub(super) async fn environment(
        main: &TestDatabase,
        dir: &std::path::Path,
        retry: RetrySettings,
    ) -> Environment {
        let mut conn = main.pool().acquire().await.unwrap();
        crate::databases::apply_migrations(&mut conn).await.unwrap();
        Environment {
            mailer: Mailer::new(
                &EmailDelivery::Files {
                    dir: dir.to_path_buf(),
                },
                "Shop <shop@example.com>",
            )
            .unwrap(),
            crm: CrmClient::new("http://127.0.0.1:9/", Duration::from_secs(1)).unwrap(),
            main: main.pool().clone(),
            retry,
        }
    }

    #[tokio::test]
    async fn the_installed_registry_sends_emails_and_gives_up_on_a_dead_crm_per_its_settings() {
        let jobs = TestDatabase::with_schema().await;
        let main = TestDatabase::empty().await;
        let dir = std::env::temp_dir().join(format!("reference-registry-{}", std::process::id()));
        // No retries: the CRM's ConnectionError fails its job at once.
        let retry = RetrySettings {
            max_retries: 0,
            ..RetrySettings::default()
        };
        let environment = environment(&main, &dir, retry).await;
        let event = DomainEvent::UserRegistered {
            user_id: 7,
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let welcome = SendWelcomeEmail {
            event_key: event.key(),
            user_id: 7,
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let crm = NotifyCrm {
            event_key: event.key(),
            event,
        };
        let email_job = dawdle::defer_task(jobs.pool(), &welcome).await.unwrap();
        let crm_job = dawdle::defer_task(jobs.pool(), &crm).await.unwrap();
        assert_deferred(
            jobs.pool(),
            "email.send_welcome",
            serde_json::json!({"user_id": 7}),
        )
        .await;

        let outcomes = drain(jobs.pool(), install(environment)).await;
        let files = std::fs::read_dir(&dir).map_or(0, |entries| entries.count());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        let of = |id: i64| {
            outcomes
                .iter()
                .find(|event| event.job_id == id)
                .map(|event| event.outcome.clone())
        };
        assert_eq!(of(email_job), Some(JobOutcome::Succeeded));
        match of(crm_job) {
            Some(JobOutcome::Failed { kind, .. }) => {
                assert_eq!(kind.as_str(), CONNECTION_ERROR)
            }
            other => panic!("the CRM job ended {other:?}"),
        }
        assert_eq!(files, 1, "one .eml file written");
    }
}
