//! Throwaway databases for tests: one local PostgreSQL cluster per test run,
//! a fresh database per test.
//!
//! The cluster lives in `$DAWDLE_TEST_PG_DIR` (the test command sets it and
//! deletes the cluster afterwards), else in a directory under the system
//! temporary directory named after this checkout. It is started on first use
//! by whichever test process gets there first; the others wait on its lock
//! file. Databases are created with unique names and dropped when the
//! [`TestDatabase`](crate::testing::TestDatabase) is dropped.
//!
//! Applications can use this for their own tests too, with the `testing`
//! feature (`dawdle = { version = "…", features = ["testing"] }` under
//! `[dev-dependencies]`): see [`kit`](crate::testing::kit) for running tasks, checking what was
//! deferred and draining the queue.

pub mod kit;
pub mod otlp_sink;
pub mod pgbouncer;

pub use kit::{assert_deferred, deferred_jobs, drain, drain_with, perform, Performed, TaskRunner};
pub use otlp_sink::OtlpSink;
pub use pgbouncer::PgBouncer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::local_pg::{quote_identifier, LocalCluster, LocalClusterConfig};

/// Environment variable naming the test cluster's directory.
pub const TEST_PG_DIR_ENV: &str = "DAWDLE_TEST_PG_DIR";

/// The directory of this checkout's test cluster.
pub fn test_cluster_dir() -> PathBuf {
    std::env::var_os(TEST_PG_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let checkout = env!("CARGO_MANIFEST_DIR");
            std::env::temp_dir().join(format!(
                "dawdle-test-pg-{:08x}",
                crate::local_pg::fnv1a(checkout.as_bytes()) as u32
            ))
        })
}

/// The shared test cluster, running.
pub async fn test_cluster() -> LocalCluster {
    tokio::task::spawn_blocking(|| {
        let cluster = LocalCluster::new(LocalClusterConfig::throwaway(test_cluster_dir()))
            .unwrap_or_else(|error| panic!("failed to set up the test PostgreSQL: {error}"));
        cluster
            .ensure_running()
            .unwrap_or_else(|error| panic!("failed to {error}"));
        cluster
    })
    .await
    .expect("starting the test PostgreSQL panicked")
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    cluster: LocalCluster,
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    /// A new, empty database.
    pub async fn empty() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let cluster = test_cluster().await;
        let name = format!(
            "test_{}_{}_{:04x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let mut admin = PgConnection::connect_with(&cluster.connect_options("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        admin.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(cluster.connect_options(&name))
            .await
            .expect("connect to the test database");
        Self {
            cluster,
            name,
            pool,
        }
    }

    /// A new database with the dawdle schema applied.
    pub async fn with_schema() -> Self {
        let db = Self::empty().await;
        let mut conn = db.pool.acquire().await.expect("acquire a connection");
        crate::schema::apply(&mut conn)
            .await
            .expect("apply the schema to a test database");
        drop(conn);
        db
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        self.cluster.connect_options(&self.name)
    }

    /// A libpq URL (for psql, the Python library, child processes).
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    pub fn cluster(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropping needs async I/O, and Drop may run inside a runtime, so do it
        // on a thread of its own and wait: a leaked database would survive
        // until the cluster is deleted at the end of the run.
        let options = self.cluster.connect_options("postgres");
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        );
        // The pool is not closed first: closing waits for borrowed
        // connections, which a current-thread test runtime blocked in this
        // very Drop could never return. FORCE ends those sessions instead.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect_with(&options).await.ok()?;
                sqlx::query(&statement).execute(&mut admin).await.ok()?;
                admin.close().await.ok()
            })
        });
        let _ = handle.join();
    }
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` once
/// `deadline` has passed. Tests wait for what they can observe with this
/// instead of sleeping a fixed time and hoping.
pub async fn eventually(
    deadline: std::time::Duration,
    what: &str,
    condition: impl AsyncFnMut() -> bool,
) {
    assert!(
        holds_within(deadline, condition).await,
        "timed out after {deadline:?} waiting for {what}"
    );
}

/// Polls `condition` every 20 ms until it holds (`true`) or `deadline` has
/// passed (`false`): [`eventually`] for a test with more to report than a
/// message when the condition never holds.
pub async fn holds_within(
    deadline: std::time::Duration,
    mut condition: impl AsyncFnMut() -> bool,
) -> bool {
    let start = tokio::time::Instant::now();
    while !condition().await {
        if start.elapsed() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}
