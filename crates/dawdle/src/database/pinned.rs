//! How the worker's statements reach the jobs database: straight through the
//! pool, or, behind PgBouncer in transaction pooling, each in a transaction
//! of its own.
//!
//! PgBouncer in transaction pooling gives a client a server connection for
//! one transaction, and takes it back as soon as the server says it is idle.
//! sqlx runs a statement with parameters in two round trips (Parse and
//! Describe, then Bind and Execute), each ending in a Sync that leaves an
//! autocommit session idle, so PgBouncer may hand the second half to another
//! server connection: a named statement is then missing there, or is another
//! client's of the same name, and the unnamed one is whatever another client
//! parsed last (the tests behind a real PgBouncer saw both: errors, and
//! statements run with another client's SQL). Inside an explicit
//! transaction the server connection stays this client's until COMMIT, so in
//! PgBouncer mode every unit of work is one: `BEGIN`, the statements, then
//! the statements this connection prepared are closed (sqlx names and caches
//! them; left behind, the next client of that server connection would find
//! them under the names its own use), then `COMMIT`. A connection whose unit
//! of work was interrupted before that is closed instead of reused.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{Connection, PgConnection, PgPool, Postgres, TransactionManager};

/// The jobs database as the worker uses it.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: PgPool,
    pgbouncer: bool,
}

impl Db {
    /// With `pgbouncer`, `pool` reaches the database through PgBouncer in
    /// transaction pooling: each unit of work is a transaction of its own.
    pub(crate) fn new(pool: PgPool, pgbouncer: bool) -> Self {
        Self { pool, pgbouncer }
    }

    /// A connection for one unit of work; end it with [`Work::finish`].
    pub(crate) async fn begin(&self) -> Result<Work, sqlx::Error> {
        let conn = self.pool.acquire().await?;
        if self.pgbouncer {
            // A transaction sqlx knows of: a `begin()` inside it is a savepoint.
            let mut work = Work {
                conn,
                open: true,
                pgbouncer: true,
            };
            PgTransactionManager::begin(&mut work.conn, None).await?;
            return Ok(work);
        }
        Ok(Work {
            conn,
            open: false,
            pgbouncer: false,
        })
    }

    /// Runs `work` as one unit of work (see [`Db::begin`]).
    pub(crate) async fn run<T>(
        &self,
        work: impl for<'c> FnOnce(
            &'c mut PgConnection,
        )
            -> futures_util::future::BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let mut conn = self.begin().await?;
        let result = work(&mut conn).await;
        conn.finish(result).await
    }
}

/// One unit of work's connection: a pooled connection, inside its own
/// transaction in PgBouncer mode.
pub(crate) struct Work {
    conn: PoolConnection<Postgres>,
    /// A transaction is open that [`Work::finish`] has not ended.
    open: bool,
    pgbouncer: bool,
}

impl Work {
    /// Ends the unit of work: in PgBouncer mode, closes the statements it
    /// prepared and commits when `result` is `Ok`, rolls back otherwise.
    /// The first failure wins.
    pub(crate) async fn finish<T>(
        mut self,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        if !self.pgbouncer {
            return result;
        }
        let ended = async {
            self.conn.clear_cached_statements().await?;
            match &result {
                Ok(_) => PgTransactionManager::commit(&mut self.conn).await,
                Err(_) => PgTransactionManager::rollback(&mut self.conn).await,
            }
        }
        .await;
        match ended {
            Ok(()) => {
                self.open = false;
                result
            }
            Err(error) => Err(result.err().unwrap_or(error)),
        }
    }
}

impl Deref for Work {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Work {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // Dropped mid-transaction (an error before `finish`, a cancelled
        // future): its statements may still be prepared on the server
        // connection. Closing the client connection makes PgBouncer close
        // that server connection too (it is not idle), so no other client
        // inherits them.
        if self.open {
            self.conn.close_on_drop();
        }
    }
}
