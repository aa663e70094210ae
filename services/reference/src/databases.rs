//! The service's two databases, as the runbook lays them out: the main
//! database (users, orders, the outbox) at `DATABASE_URL`, and the jobs
//! database at `JOB_QUEUE_DATABASE_URL`. With neither set, both are
//! databases (`app` and `jobs`) of the embedded PostgreSQL under `.dawdle/`.
//!
//! Also the main database's migrations: a handful of SQL files compiled into
//! the binary, applied in one transaction under an advisory lock so that
//! several replicas starting together apply them once.

use std::time::Duration;

use dawdle::database::InvalidConnectionString;
use dawdle::local_pg::{LocalCluster, LocalClusterConfig, LocalPgError};
use dawdle::{ConnectError, JobsDatabase};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tracing::{info, warn};

use crate::config::Settings;
use crate::shutdown;

/// Name of the main database on the embedded cluster.
pub(crate) const EMBEDDED_MAIN_DATABASE: &str = "app";
/// How the service names itself to PostgreSQL (`pg_stat_activity`).
const APPLICATION_NAME: &str = "reference-service";
/// How long to wait between attempts while a database is down at startup
/// (docker-compose starts the app and its databases together).
const RECONNECT_WAIT: Duration = Duration::from_secs(2);

/// Failures to reach or prepare a database, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatabaseError {
    #[error(transparent)]
    Jobs(#[from] ConnectError),
    #[error("read DATABASE_URL: {0}")]
    BadMainUrl(#[source] InvalidConnectionString),
    #[error("connect to the main database at {url}: {source}")]
    MainUnreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Embedded(#[from] LocalPgError),
    #[error("migrate the main database: {0}")]
    Migrate(#[from] MigrateError),
    #[error("apply the jobs schema: {0}")]
    JobsSchema(#[from] dawdle::schema::SchemaError),
    #[error("get a connection to apply migrations: {0}")]
    Acquire(#[source] sqlx::Error),
}

impl DatabaseError {
    /// Whether waiting may help: the server is down or still starting.
    fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DatabaseError::MainUnreachable { .. }
                | DatabaseError::Jobs(ConnectError::Unreachable { .. })
        )
    }
}

/// Both pools, and how to name each database to a person.
#[derive(Debug, Clone)]
pub(crate) struct Databases {
    pub(crate) main: PgPool,
    pub(crate) jobs: PgPool,
    pub(crate) main_url: String,
    pub(crate) jobs_url: String,
}

impl Databases {
    /// Connects to both. With `wait_until`, waits while either is
    /// unreachable, and answers `None` if that signal fires meanwhile;
    /// without, fails at once.
    pub(crate) async fn connect(
        settings: &Settings,
        jobs_connections: u32,
        wait_until: Option<shutdown::Signal>,
    ) -> Result<Option<Self>, DatabaseError> {
        // An empty value (compose's `${VAR:-}`) means unset, as for libpq.
        let jobs_url = settings
            .jobs_database_url
            .as_deref()
            .filter(|url| !url.is_empty());
        let jobs_database = JobsDatabase::resolve(jobs_url).await?;
        let main_target = MainTarget::resolve(settings, &jobs_database).await?;
        loop {
            match Self::connect_once(&jobs_database, &main_target, jobs_connections).await {
                Ok(databases) => return Ok(Some(databases)),
                Err(error) => {
                    let Some(stop) = wait_until.as_ref().filter(|_| error.is_unreachable()) else {
                        return Err(error);
                    };
                    warn!(error = %error, retry_in_s = RECONNECT_WAIT.as_secs(),
                          "database unreachable; retrying");
                    tokio::select! {
                        _ = stop.clone().fired() => return Ok(None),
                        _ = tokio::time::sleep(RECONNECT_WAIT) => {}
                    }
                }
            }
        }
    }

    async fn connect_once(
        jobs_database: &JobsDatabase,
        main_target: &MainTarget,
        jobs_connections: u32,
    ) -> Result<Self, DatabaseError> {
        let jobs = jobs_database.connect(jobs_connections).await?;
        let main = main_target.connect().await?;
        Ok(Self {
            main,
            jobs,
            main_url: main_target.display_url.clone(),
            jobs_url: jobs_database.display_url().to_string(),
        })
    }

    /// Applies the main database's migrations and the jobs schema; both are
    /// idempotent and safe when several processes start at once.
    pub(crate) async fn migrate(&self) -> Result<(), DatabaseError> {
        let mut main = self.main.acquire().await.map_err(DatabaseError::Acquire)?;
        let applied = apply_migrations(&mut main).await?;
        drop(main);
        info!(database = %self.main_url, applied = ?applied, version = latest_version(),
              "main_database_migrated");
        let mut jobs = self.jobs.acquire().await.map_err(DatabaseError::Acquire)?;
        let report = dawdle::schema::apply(&mut jobs).await?;
        let applied: Vec<&str> = report.applied.iter().map(|(_, name)| *name).collect();
        info!(database = %self.jobs_url, applied = ?applied, version = report.version,
              "jobs_schema_applied");
        Ok(())
    }
}

/// Where the main database is.
struct MainTarget {
    options: PgConnectOptions,
    display_url: String,
}

// By hand: the connect options hold the password.
impl std::fmt::Debug for MainTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainTarget")
            .field("display_url", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl MainTarget {
    async fn resolve(
        settings: &Settings,
        jobs_database: &JobsDatabase,
    ) -> Result<Self, DatabaseError> {
        if let Some(url) = settings
            .database_url
            .as_deref()
            .filter(|url| !url.is_empty())
        {
            let options = dawdle::database::parse_connection_string(url)
                .map_err(DatabaseError::BadMainUrl)?;
            return Ok(Self {
                options: options.application_name(APPLICATION_NAME),
                display_url: dawdle::database::redact_password(url),
            });
        }
        // The same cluster as the jobs database when that one is embedded
        // too; otherwise the embedded cluster on its own.
        let cluster = match jobs_database.embedded_cluster() {
            Some(cluster) => cluster.clone(),
            None => {
                let cluster = LocalCluster::new(LocalClusterConfig::persistent(
                    dawdle::database::default_home(),
                ))?;
                let starting = cluster.clone();
                tokio::task::spawn_blocking(move || starting.ensure_running())
                    .await
                    .expect("starting the local PostgreSQL panicked")?;
                cluster
            }
        };
        let display_url = cluster.url(EMBEDDED_MAIN_DATABASE);
        cluster
            .ensure_database(EMBEDDED_MAIN_DATABASE)
            .await
            .map_err(|source| DatabaseError::MainUnreachable {
                url: display_url.clone(),
                source,
            })?;
        Ok(Self {
            options: cluster
                .connect_options(EMBEDDED_MAIN_DATABASE)
                .application_name(APPLICATION_NAME),
            display_url,
        })
    }

    async fn connect(&self) -> Result<PgPool, DatabaseError> {
        // One real connection first, so that a wrong URL fails now with the
        // URL in the message rather than at the first request.
        let probe = PgConnection::connect_with(&self.options)
            .await
            .map_err(|source| DatabaseError::MainUnreachable {
                url: self.display_url.clone(),
                source,
            })?;
        let _ = probe.close().await;
        Ok(PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(self.options.clone()))
    }
}

/// One migration of the main database.
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users_orders_outbox",
        sql: include_str!("../migrations/0001_users_orders_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "outbox_trace_context",
        sql: include_str!("../migrations/0002_outbox_trace_context.sql"),
    },
];

/// Key of the advisory lock that serialises migrations (any constant that no
/// other code of this database uses).
const MIGRATION_LOCK: i64 = 0x7265_6673_6572_7631;

fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Why the main database cannot be migrated, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "migration {version} ({name}) was applied with different contents; \
         migrations are never edited once released, add a new one instead"
    )]
    Changed { version: i32, name: String },
    #[error(
        "the database is at version {found}, newer than this build knows ({known}); \
         run a newer build"
    )]
    Newer { found: i32, known: i32 },
}

/// Applies pending migrations; returns the names of those it applied.
pub(crate) async fn apply_migrations(
    conn: &mut PgConnection,
) -> Result<Vec<&'static str>, MigrateError> {
    let mut tx = conn.begin().await?;
    // Transaction-scoped: released by the commit, or by the rollback of a
    // failed migration, whatever happens to this process.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS app_schema_migrations (
             version    int PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await?;
    let done: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT version, name, checksum FROM app_schema_migrations ORDER BY version",
    )
    .fetch_all(&mut *tx)
    .await?;
    if let Some((found, _, _)) = done
        .last()
        .filter(|(found, _, _)| *found > latest_version())
    {
        return Err(MigrateError::Newer {
            found: *found,
            known: latest_version(),
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let checksum = checksum(migration.sql);
        match done
            .iter()
            .find(|(version, _, _)| *version == migration.version)
        {
            Some((_, name, stored)) if *stored != checksum => {
                return Err(MigrateError::Changed {
                    version: migration.version,
                    name: name.clone(),
                })
            }
            Some(_) => {}
            None => {
                sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO app_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                )
                .bind(migration.version)
                .bind(migration.name)
                .bind(&checksum)
                .execute(&mut *tx)
                .await?;
                applied.push(migration.name);
            }
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// FNV-1a over the SQL text, in hex: stable across Rust releases, which a
/// stored checksum must be (std's hashers promise no such thing).
fn checksum(sql: &str) -> String {
    let hash = sql.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dawdle::testing::TestDatabase;

    #[tokio::test]
    async fn migrations_apply_once_even_when_two_processes_race() {
        let db = TestDatabase::empty().await;
        let mut first = db.pool().acquire().await.unwrap();
        let mut second = db.pool().acquire().await.unwrap();
        let (a, b) = tokio::join!(apply_migrations(&mut first), apply_migrations(&mut second));
        let mut applied = [a.unwrap(), b.unwrap()];
        applied.sort();
        assert_eq!(
            applied,
            [vec![], vec!["users_orders_outbox", "outbox_trace_context"]]
        );
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE tablename IN
                 ('users', 'orders', 'order_items', 'outbox_events', 'email_deliveries')",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(tables, 5);
    }

    #[tokio::test]
    async fn an_edited_migration_is_refused() {
        let db = TestDatabase::empty().await;
        let mut conn = db.pool().acquire().await.unwrap();
        apply_migrations(&mut conn).await.unwrap();
        sqlx::query("UPDATE app_schema_migrations SET checksum = 'edited' WHERE version = 1")
            .execute(&mut *conn)
            .await
            .unwrap();
        let error = apply_migrations(&mut conn).await.unwrap_err();
        assert!(
            matches!(error, MigrateError::Changed { version: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn checksums_are_stable() {
        // A stored checksum must never change with the toolchain.
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
    }
}
