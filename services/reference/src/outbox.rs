//! The transactional outbox: domain events stored by the transaction that
//! caused them, then relayed to the jobs database.
//!
//! The relay takes pending rows with `FOR UPDATE SKIP LOCKED` (so several
//! replicas share the work without handing out a row twice), defers their
//! jobs into the jobs database (which commits there), then marks the rows
//! relayed and commits in the main database. Two databases cannot commit
//! together, so a crash between those two commits leaves rows unmarked whose
//! jobs exist: the next pass defers them again. Delivery is therefore at
//! least once, and duplicates are absorbed downstream:
//!
//! - every job carries a queueing lock named after its event, so a twin of a
//!   job still waiting in `todo` is refused and skipped;
//! - a twin of a job that already ran does run, and the tasks are idempotent:
//!   an email is recorded by Message-ID in `email_deliveries` and not sent
//!   twice, and CRM calls carry the event key as `Idempotency-Key`.
//!
//! The relay wakes on a notification from the committing transaction and
//! also polls, since a notification is lost when nobody listens.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tracing::{error, info, warn};

use crate::domain::DomainEvent;
use crate::events::EventBus;
use crate::shutdown;

/// Channel the committing transaction notifies and the relay listens on.
const CHANNEL: &str = "reference_outbox";
/// Rows taken per pass: one defer statement and one update each.
const BATCH_SIZE: i64 = 100;
/// How long the final pass at shutdown may take.
const FINAL_PASS_TIMEOUT: Duration = Duration::from_secs(5);

/// Inserts `events` in the caller's transaction and notifies the relay,
/// which PostgreSQL delivers only if that transaction commits.
pub(crate) async fn append(
    conn: &mut PgConnection,
    events: &[DomainEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<Json<&DomainEvent>> = events.iter().map(Json).collect();
    // The request's trace context, when spans are exported: the relay
    // hands it to the jobs, whose attempts link back to the request.
    let trace = dawdle::telemetry::is_enabled()
        .then(dawdle::TraceContext::current)
        .flatten();
    sqlx::query(
        "INSERT INTO outbox_events (event, traceparent, tracestate)
         SELECT unnest($1::jsonb[]), $2, $3",
    )
    .bind(&rows)
    .bind(trace.as_ref().map(dawdle::TraceContext::traceparent))
    .bind(trace.as_ref().and_then(dawdle::TraceContext::tracestate))
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Rows not yet relayed (for /health).
pub(crate) async fn pending(main: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL AND relay_error IS NULL",
    )
    .fetch_one(main)
    .await
}

/// Failures of a relay pass, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("read or mark outbox events: {0}")]
    Main(#[from] sqlx::Error),
    #[error("defer outbox events: {0}")]
    Defer(#[from] dawdle::DeferError),
}

/// An outbox row: id, event, and the writing request's trace context.
type OutboxRow = (i64, Json<serde_json::Value>, Option<String>, Option<String>);

/// Moves outbox rows to the jobs database.
#[derive(Debug)]
pub(crate) struct Relay {
    main: PgPool,
    bus: EventBus,
    poll_interval: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) rows: usize,
    pub(crate) jobs: usize,
    pub(crate) undecodable: usize,
}

impl Relay {
    pub(crate) fn new(main: PgPool, bus: EventBus, poll_interval: Duration) -> Self {
        Self {
            main,
            bus,
            poll_interval,
        }
    }

    /// Relays until `stop` fires, then makes a last pass so that events
    /// committed by the last requests are not left for the next start.
    pub(crate) async fn run(self, stop: shutdown::Signal) {
        info!(
            poll_interval_s = self.poll_interval.as_secs_f64(),
            "outbox_relay_started"
        );
        let mut listener = self.listen().await;
        let mut failures: u32 = 0;
        loop {
            let wait = match self.relay_all().await {
                Ok(()) => {
                    failures = 0;
                    self.poll_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // Back off while a database is down: 1 s, 2 s, 4 s, … 30 s.
                    let wait = Duration::from_secs(1 << (failures - 1).min(5))
                        .min(Duration::from_secs(30));
                    warn!(error = %error, retry_in_s = wait.as_secs(), "outbox relay pass failed");
                    wait
                }
            };
            if listener.is_none() {
                listener = self.listen().await;
            }
            tokio::select! {
                _ = stop.clone().fired() => break,
                _ = notified(&mut listener) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match tokio::time::timeout(FINAL_PASS_TIMEOUT, self.relay_all()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(error = %error, "final outbox pass failed; the next start relays the rest")
            }
            Err(_) => warn!("final outbox pass timed out; the next start relays the rest"),
        }
        info!("outbox_relay_stopped");
    }

    /// Passes until the outbox is empty.
    pub(crate) async fn relay_all(&self) -> Result<(), RelayError> {
        loop {
            let pass = self.relay_batch().await?;
            if pass.rows < BATCH_SIZE as usize {
                return Ok(());
            }
        }
    }

    /// One batch: take rows, defer their jobs, mark them.
    pub(crate) async fn relay_batch(&self) -> Result<Pass, RelayError> {
        let mut tx = self.main.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event, traceparent, tracestate FROM outbox_events
             WHERE relayed_at IS NULL AND relay_error IS NULL
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH_SIZE)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        let mut relayed = Vec::with_capacity(rows.len());
        let mut broken_ids = Vec::new();
        let mut broken_errors = Vec::new();
        let mut jobs = Vec::new();
        for (id, Json(event), traceparent, tracestate) in &rows {
            // A trace context written by hand that does not parse is
            // dropped: the jobs run, unlinked.
            let trace = traceparent.as_deref().and_then(|traceparent| {
                dawdle::TraceContext::new(traceparent, tracestate.as_deref()).ok()
            });
            let turned = serde_json::from_value::<DomainEvent>(event.clone())
                .map_err(|error| format!("the event does not decode: {error}"))
                .and_then(|event| {
                    self.bus
                        .jobs_for(std::slice::from_ref(&event))
                        .map_err(|error| format!("the event's jobs are invalid: {error}"))
                });
            match turned {
                Ok(event_jobs) => {
                    jobs.extend(event_jobs.into_iter().map(|job| match &trace {
                        Some(trace) => job.trace_context(trace.clone()),
                        None => job,
                    }));
                    relayed.push(*id);
                }
                Err(problem) => {
                    error!(outbox_id = id, event = %event, problem = %problem,
                           "outbox event cannot be relayed; set aside");
                    broken_ids.push(*id);
                    broken_errors.push(problem);
                }
            }
        }
        // Commits in the jobs database. A crash from here until the commit
        // below defers these jobs again on the next pass (at least once).
        let deferred = self.bus.defer(&jobs).await?;
        sqlx::query("UPDATE outbox_events SET relayed_at = now() WHERE id = ANY($1)")
            .bind(&relayed)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE outbox_events AS o SET relay_error = b.problem
             FROM unnest($1::int8[], $2::text[]) AS b (id, problem)
             WHERE o.id = b.id",
        )
        .bind(&broken_ids)
        .bind(&broken_errors)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        info!(
            events = relayed.len(),
            jobs = deferred.job_ids.len(),
            already_waiting = deferred.already_waiting,
            set_aside = broken_ids.len(),
            "outbox_relayed"
        );
        Ok(Pass {
            rows: rows.len(),
            jobs: deferred.job_ids.len(),
            undecodable: broken_ids.len(),
        })
    }

    async fn listen(&self) -> Option<PgListener> {
        let connected = async {
            let mut listener = PgListener::connect_with(&self.main).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match connected {
            Ok(listener) => Some(listener),
            Err(error) => {
                warn!(error = %error, "cannot LISTEN for outbox events; polling meanwhile");
                None
            }
        }
    }
}

/// Completes on a notification; never, without a listener (polling covers).
async fn notified(listener: &mut Option<PgListener>) {
    let Some(active) = listener else {
        return std::future::pending().await;
    };
    match active.try_recv().await {
        Ok(Some(_)) => {}
        // The connection dropped; the listener reconnects on its next call,
        // and whatever was committed meanwhile is found by the next pass.
        Ok(None) => {}
        Err(error) => {
            warn!(error = %error, "lost the outbox LISTEN connection; polling meanwhile");
            *listener = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dawdle::testing::TestDatabase;

    async fn main_database() -> TestDatabase {
        let db = TestDatabase::empty().await;
        let mut conn = db.pool().acquire().await.unwrap();
        crate::databases::apply_migrations(&mut conn).await.unwrap();
        db
    }

    fn registered(user_id: i64) -> DomainEvent {
        DomainEvent::UserRegistered {
            user_id,
            email: format!("user{user_id}@example.com"),
            name: "Ada".into(),
        }
    }

    #[tokio::test]
    async fn events_are_relayed_once_and_marked() {
        let main = main_database().await;
        let jobs = TestDatabase::with_schema().await;
        let mut tx = main.pool().begin().await.unwrap();
        append(&mut tx, &[registered(1), registered(2)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(pending(main.pool()).await.unwrap(), 2);

        let relay = Relay::new(
            main.pool().clone(),
            EventBus::new(jobs.pool().clone()),
            Duration::from_secs(1),
        );
        let pass = relay.relay_batch().await.unwrap();
        assert_eq!(
            pass,
            Pass {
                rows: 2,
                jobs: 4,
                undecodable: 0
            }
        );
        assert_eq!(pending(main.pool()).await.unwrap(), 0);
        assert_eq!(relay.relay_batch().await.unwrap(), Pass::default());
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_no_event() {
        let main = main_database().await;
        let mut tx = main.pool().begin().await.unwrap();
        append(&mut tx, &[registered(1)]).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(pending(main.pool()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_undecodable_event_is_set_aside_without_blocking_the_others() {
        let main = main_database().await;
        let jobs = TestDatabase::with_schema().await;
        sqlx::query("INSERT INTO outbox_events (event) VALUES ('{\"type\": \"user_vanished\"}')")
            .execute(main.pool())
            .await
            .unwrap();
        let mut tx = main.pool().begin().await.unwrap();
        append(&mut tx, &[registered(1)]).await.unwrap();
        tx.commit().await.unwrap();

        let relay = Relay::new(
            main.pool().clone(),
            EventBus::new(jobs.pool().clone()),
            Duration::from_secs(1),
        );
        let pass = relay.relay_batch().await.unwrap();
        assert_eq!((pass.jobs, pass.undecodable), (2, 1));
        let problem: String = sqlx::query_scalar(
            "SELECT relay_error FROM outbox_events WHERE relay_error IS NOT NULL",
        )
        .fetch_one(main.pool())
        .await
        .unwrap();
        assert!(problem.contains("user_vanished"), "{problem}");
        assert_eq!(pending(main.pool()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn jobs_database_down_leaves_the_rows_for_the_next_pass() {
        let main = main_database().await;
        let jobs = TestDatabase::with_schema().await;
        let mut tx = main.pool().begin().await.unwrap();
        append(&mut tx, &[registered(1)]).await.unwrap();
        tx.commit().await.unwrap();
        let relay = Relay::new(
            main.pool().clone(),
            EventBus::new(jobs.pool().clone()),
            Duration::from_secs(1),
        );
        // The jobs schema gone is a jobs database that refuses the defer.
        sqlx::raw_sql("DROP TABLE procrastinate_jobs CASCADE")
            .execute(jobs.pool())
            .await
            .unwrap();
        assert!(matches!(
            relay.relay_batch().await,
            Err(RelayError::Defer(_))
        ));
        assert_eq!(pending(main.pool()).await.unwrap(), 1);
    }
}
