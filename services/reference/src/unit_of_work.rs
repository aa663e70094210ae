//! The unit of work: one request's writes in one main-database transaction,
//! collecting the domain events they cause, published only if it commits.
//!
//! Two ways to publish, chosen by `OUTBOX_ENABLED`:
//!
//! - **After commit** (the default, as the runbook describes): commit, then
//!   hand the events to the event bus, which defers their jobs into the jobs
//!   database right away. Between the commit and the defer there is a
//!   window: if the process dies there, or the jobs database is down, the
//!   write is kept and its jobs are lost (the failure is logged as
//!   `domain_event_dispatch_failed` with the events).
//! - **Outbox**: the events are inserted into `outbox_events` inside the
//!   same transaction, so they exist exactly when the write does; the relay
//!   (see `outbox`) defers them afterwards, at least once.
//!
//! A unit of work dropped without commit rolls back, and its events vanish
//! with it.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::domain::DomainEvent;
use crate::events::EventBus;
use crate::outbox;

/// How committed events reach the jobs database.
#[derive(Debug, Clone)]
pub(crate) enum Publisher {
    AfterCommit(EventBus),
    Outbox,
}

#[derive(Debug)]
pub(crate) struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
    events: Vec<DomainEvent>,
}

impl UnitOfWork {
    pub(crate) async fn begin(main: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: main.begin().await?,
            events: Vec::new(),
        })
    }

    /// The transaction's connection, for the domain's reads and writes.
    pub(crate) fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub(crate) fn record(&mut self, event: DomainEvent) {
        self.events.push(event);
    }

    /// Commits the writes and publishes their events. An `Err` means
    /// nothing was committed.
    pub(crate) async fn commit(mut self, publisher: &Publisher) -> Result<(), sqlx::Error> {
        match publisher {
            Publisher::Outbox => {
                outbox::append(&mut self.tx, &self.events).await?;
                self.tx.commit().await
            }
            Publisher::AfterCommit(bus) => {
                self.tx.commit().await?;
                // The failure window: the write is durable, the jobs are not
                // yet. A crash before this call returns loses them.
                bus.publish_after_commit(&self.events).await;
                Ok(())
            }
        }
    }
}
