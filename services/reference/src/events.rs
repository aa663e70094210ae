//! The event bus: which jobs each domain event causes, and deferring them
//! into the jobs database.
//!
//! Handlers are plain functions from an event to the jobs it causes. Keeping
//! them free of I/O lets the two delivery paths share them: after a unit of
//! work commits, the bus defers the jobs at once (in-process, synchronously,
//! as the runbook describes); with the outbox enabled, the relay defers them
//! later from the outbox rows. Either way every job of a dispatch goes in
//! with one statement.

use dawdle::{DeferError, InvalidJob, NewJob, Task};
use sqlx::PgPool;
use tracing::{error, info};

use crate::domain::DomainEvent;
use crate::tasks::{NotifyCrm, SendOrderConfirmation, SendWelcomeEmail};

/// Names the jobs one event causes (none if it does not concern the handler).
type Handler = fn(&DomainEvent) -> Result<Option<NewJob>, InvalidJob>;

/// The handlers of this service, by name (for logs).
const HANDLERS: &[(&str, Handler)] = &[
    ("send_welcome_email", send_welcome_email),
    ("send_order_confirmation", send_order_confirmation),
    ("notify_crm", notify_crm),
];

fn send_welcome_email(event: &DomainEvent) -> Result<Option<NewJob>, InvalidJob> {
    let DomainEvent::UserRegistered {
        user_id,
        email,
        name,
    } = event
    else {
        return Ok(None);
    };
    job(&SendWelcomeEmail {
        event_key: event.key(),
        user_id: *user_id,
        email: email.clone(),
        name: name.clone(),
    })
}

fn send_order_confirmation(event: &DomainEvent) -> Result<Option<NewJob>, InvalidJob> {
    let DomainEvent::OrderPlaced {
        order_id,
        email,
        total_cents,
        item_count,
        ..
    } = event
    else {
        return Ok(None);
    };
    job(&SendOrderConfirmation {
        event_key: event.key(),
        order_id: *order_id,
        email: email.clone(),
        total_cents: *total_cents,
        item_count: *item_count,
    })
}

fn notify_crm(event: &DomainEvent) -> Result<Option<NewJob>, InvalidJob> {
    job(&NotifyCrm {
        event_key: event.key(),
        event: event.clone(),
    })
}

fn job<T: Task>(task: &T) -> Result<Option<NewJob>, InvalidJob> {
    NewJob::for_task(task).map(Some)
}

/// What a dispatch deferred.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Deferred {
    pub(crate) job_ids: Vec<i64>,
    /// Jobs skipped because the same job (same queueing lock) was already
    /// waiting: a second delivery of an event that was delivered before.
    pub(crate) already_waiting: usize,
}

/// Failures of a dispatch, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("turn domain events into jobs: {0}")]
    Invalid(#[from] InvalidJob),
    #[error("{0}")]
    Defer(#[from] DeferError),
}

/// Turns domain events into jobs in the jobs database.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    jobs: PgPool,
}

impl EventBus {
    pub(crate) fn new(jobs: PgPool) -> Self {
        Self { jobs }
    }

    /// The jobs the handlers want for `events`, in event order.
    pub(crate) fn jobs_for(&self, events: &[DomainEvent]) -> Result<Vec<NewJob>, InvalidJob> {
        let mut jobs = Vec::new();
        for event in events {
            for (_, handler) in HANDLERS {
                jobs.extend(handler(event)?);
            }
        }
        Ok(jobs)
    }

    /// Defers the jobs of `events` now.
    pub(crate) async fn dispatch(&self, events: &[DomainEvent]) -> Result<Deferred, DispatchError> {
        let jobs = self.jobs_for(events)?;
        Ok(self.defer(&jobs).await?)
    }

    /// Defers `jobs` with one statement. A job whose twin is already waiting
    /// (a redelivered event) is skipped rather than failing the others.
    pub(crate) async fn defer(&self, jobs: &[NewJob]) -> Result<Deferred, DeferError> {
        match dawdle::defer_batch(&self.jobs, jobs).await {
            Ok(job_ids) => Ok(Deferred {
                job_ids,
                already_waiting: 0,
            }),
            // The batch is all or nothing: go again one by one, which only
            // happens on redelivery, so its cost does not matter.
            Err(DeferError::AlreadyEnqueued { .. }) => {
                let mut deferred = Deferred::default();
                for job in jobs {
                    match dawdle::defer(&self.jobs, job).await {
                        Ok(id) => deferred.job_ids.push(id),
                        Err(DeferError::AlreadyEnqueued { queueing_lock }) => {
                            info!(task = %job.task_name, queueing_lock = %queueing_lock,
                                  "job already waiting; not deferred twice");
                            deferred.already_waiting += 1;
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ok(deferred)
            }
            Err(error) => Err(error),
        }
    }

    /// Dispatches after a commit: the write is done and cannot be taken
    /// back, so a failure is logged with the events (for replay by hand)
    /// instead of failing the request. This is the failure window the
    /// outbox closes.
    pub(crate) async fn publish_after_commit(&self, events: &[DomainEvent]) {
        if events.is_empty() {
            return;
        }
        match self.dispatch(events).await {
            Ok(deferred) => info!(
                events = events.len(),
                jobs = deferred.job_ids.len(),
                job_ids = ?deferred.job_ids,
                "domain_events_dispatched"
            ),
            Err(failure) => {
                let lost: Vec<String> = events
                    .iter()
                    .map(|event| serde_json::to_string(event).unwrap_or_default())
                    .collect();
                error!(error = %failure, events = ?lost,
                       "domain_event_dispatch_failed: the write committed but its jobs were not deferred");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dawdle::testing::TestDatabase;

    fn registered(user_id: i64) -> DomainEvent {
        DomainEvent::UserRegistered {
            user_id,
            email: format!("user{user_id}@example.com"),
            name: "Ada".into(),
        }
    }

    #[tokio::test]
    async fn each_event_becomes_its_jobs_in_one_go() {
        let db = TestDatabase::with_schema().await;
        let bus = EventBus::new(db.pool().clone());
        let order = DomainEvent::OrderPlaced {
            order_id: 3,
            user_id: 1,
            email: "user1@example.com".into(),
            total_cents: 1200,
            item_count: 2,
        };
        let deferred = bus.dispatch(&[registered(1), order]).await.unwrap();
        assert_eq!(deferred.job_ids.len(), 4);
        let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT task_name, queue_name, queueing_lock FROM procrastinate_jobs ORDER BY id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let expected = [
            (
                "email.send_welcome",
                "email",
                "email.send_welcome:user-1-registered",
            ),
            (
                "crm.notify_event",
                "crm",
                "crm.notify_event:user-1-registered",
            ),
            (
                "email.send_order_confirmation",
                "email",
                "email.send_order_confirmation:order-3-placed",
            ),
            ("crm.notify_event", "crm", "crm.notify_event:order-3-placed"),
        ];
        let jobs: Vec<(&str, &str, Option<&str>)> = jobs
            .iter()
            .map(|(task, queue, lock)| (task.as_str(), queue.as_str(), lock.as_deref()))
            .collect();
        let expected: Vec<(&str, &str, Option<&str>)> = expected
            .iter()
            .map(|(task, queue, lock)| (*task, *queue, Some(*lock)))
            .collect();
        assert_eq!(jobs, expected);
    }

    #[tokio::test]
    async fn a_redelivered_event_does_not_defer_its_waiting_jobs_twice() {
        let db = TestDatabase::with_schema().await;
        let bus = EventBus::new(db.pool().clone());
        bus.dispatch(&[registered(1)]).await.unwrap();
        // The same event again, with a new one: only the new one's jobs go in.
        let again = bus.dispatch(&[registered(1), registered(2)]).await.unwrap();
        assert_eq!(again.already_waiting, 2);
        assert_eq!(again.job_ids.len(), 2);
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(total, 4);
    }
}
