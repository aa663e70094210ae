//! Where the jobs database is: `JOB_QUEUE_DATABASE_URL`, or the embedded local
//! PostgreSQL under `.dawdle/` when it is unset.
//!
//! Connection strings, which often carry a password, are read by
//! [`parse_connection_string`] and shown only through [`redact_password`].

mod connection_string;
pub(crate) mod pinned;
mod redact;
mod syntax;

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::local_pg::{LocalCluster, LocalClusterConfig, LocalPgError};

pub use connection_string::{parse_connection_string, InvalidConnectionString};
pub use redact::{redact_password, NOT_SHOWN};

/// The environment variable the runbook's scripts and services read.
pub const DATABASE_URL_ENV: &str = "JOB_QUEUE_DATABASE_URL";
/// Overrides where the embedded cluster lives (default `.dawdle` in the
/// working directory).
pub const HOME_ENV: &str = "DAWDLE_HOME";
/// Name of the jobs database on the embedded cluster, as in the runbook's URL.
pub const EMBEDDED_JOBS_DATABASE: &str = "jobs";

/// Failures to reach the jobs database, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("read the database URL: {0}")]
    BadUrl(#[from] InvalidConnectionString),
    #[error("connect to the jobs database at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Embedded(#[from] LocalPgError),
}

/// A resolved jobs database: how to connect and how to name it to a person.
#[derive(Clone)]
pub struct JobsDatabase {
    options: PgConnectOptions,
    /// The URL with any password hidden, for messages.
    display_url: String,
    /// A URL other programs (psql, Python) can use; for the embedded
    /// cluster, the socket URL.
    url: String,
    embedded: Option<LocalCluster>,
    /// Reached through PgBouncer in transaction pooling.
    pgbouncer: bool,
}

// By hand: the connect options and the URL hold the password.
impl std::fmt::Debug for JobsDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsDatabase")
            .field("display_url", &self.display_url)
            .field("embedded", &self.embedded)
            .field("pgbouncer", &self.pgbouncer)
            .finish_non_exhaustive()
    }
}

impl JobsDatabase {
    /// From an explicit connection string: a `postgres://` URL or libpq's
    /// `key=value` form (see [`parse_connection_string`]).
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let options = parse_connection_string(url)?;
        Ok(Self {
            options: options.application_name("dawdle"),
            display_url: redact_password(url),
            url: url.to_string(),
            embedded: None,
            pgbouncer: false,
        })
    }

    /// The embedded cluster under `base_dir`, started (and created) if needed,
    /// with its `jobs` database created if needed. Blocking: it may run initdb.
    pub async fn embedded(base_dir: PathBuf) -> Result<Self, ConnectError> {
        let cluster = LocalCluster::new(LocalClusterConfig::persistent(base_dir))?;
        let started = cluster.clone();
        tokio::task::spawn_blocking(move || started.ensure_running())
            .await
            .expect("starting the local PostgreSQL panicked")?;
        let url = cluster.url(EMBEDDED_JOBS_DATABASE);
        cluster
            .ensure_database(EMBEDDED_JOBS_DATABASE)
            .await
            .map_err(|source| ConnectError::Unreachable {
                url: url.clone(),
                source,
            })?;
        Ok(Self {
            options: cluster.connect_options(EMBEDDED_JOBS_DATABASE),
            display_url: url.clone(),
            url,
            embedded: Some(cluster),
            pgbouncer: false,
        })
    }

    /// `JOB_QUEUE_DATABASE_URL` (or `explicit_url`, which wins) when set,
    /// else the embedded default.
    pub async fn resolve(explicit_url: Option<&str>) -> Result<Self, ConnectError> {
        let from_env = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty());
        match explicit_url.map(str::to_string).or(from_env) {
            Some(url) => Self::from_url(&url),
            None => Self::embedded(default_home()).await,
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    pub fn embedded_cluster(&self) -> Option<&LocalCluster> {
        self.embedded.as_ref()
    }

    /// The URL as [`redact_password`] shows it.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// A URL for other programs (psql, the Python library).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sessions on this database commit without waiting for the WAL to
    /// reach disk (`synchronous_commit = off`): no flush wait per commit,
    /// but a crash of the PostgreSQL server (not of a worker) may lose the
    /// last few hundred milliseconds of commits. For a worker that means jobs claimed
    /// or finished just before the crash are claimed or run again: at least
    /// once still holds, a few jobs may run twice. Off by default.
    pub fn with_synchronous_commit_off(mut self) -> Self {
        self.options = self.options.options([("synchronous_commit", "off")]);
        self
    }

    /// The URL leads to PgBouncer in transaction pooling (PgBouncer 1.18
    /// and later; no `ignore_startup_parameters` needed): connections send
    /// no `extra_float_digits` startup parameter, which PgBouncer refuses.
    /// A worker on a pool of this database needs
    /// `WorkerConfig::pgbouncer(true)`, which runs each of its statements in
    /// a transaction of its own and polls instead of LISTENing.
    /// [`with_synchronous_commit_off`](Self::with_synchronous_commit_off)
    /// is not available this way: PgBouncer refuses the startup parameter
    /// that carries it (`options`), and `dawdle worker` refuses the pair.
    pub fn behind_pgbouncer(mut self) -> Self {
        self.options = self.options.extra_float_digits(None);
        self.pgbouncer = true;
        self
    }

    /// Whether [`behind_pgbouncer`](Self::behind_pgbouncer) was called.
    pub fn is_behind_pgbouncer(&self) -> bool {
        self.pgbouncer
    }

    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A pool of up to `max_connections`, with the first connection opened
    /// now so that a wrong URL fails here, with the URL in the message.
    pub async fn connect(&self, max_connections: u32) -> Result<PgPool, ConnectError> {
        self.connect_pool(max_connections, true).await
    }

    /// [`connect`](Self::connect) for a pool only a worker uses: sqlx does
    /// not ping each connection before handing it out (a round trip before
    /// every claim and completion). A connection the server closed then
    /// fails its next statement instead, which the worker retries with
    /// backoff while sqlx replaces the connection. Code that cannot retry
    /// (an API request deferring a job) wants [`connect`](Self::connect).
    pub async fn connect_for_worker(&self, max_connections: u32) -> Result<PgPool, ConnectError> {
        self.connect_pool(max_connections, false).await
    }

    /// A pool of one connection, opened when first used, for a worker
    /// behind PgBouncer to LISTEN on (`WorkerBuilder::listen_through`):
    /// build this `JobsDatabase` from a direct URL of the same database,
    /// not PgBouncer's. An unreachable server is not an error here: the
    /// worker polls and retries the LISTEN with backoff, logging why.
    pub fn listen_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.options.clone())
    }

    async fn connect_pool(
        &self,
        max_connections: u32,
        test_before_acquire: bool,
    ) -> Result<PgPool, ConnectError> {
        // One direct connection first: a pool retries a refused connection
        // until its acquire timeout, and a typo in a URL should fail at once.
        let unreachable = |source| ConnectError::Unreachable {
            url: self.display_url.clone(),
            source,
        };
        // A server that accepts connections and never answers (frozen, or
        // behind a firewall that drops packets) must not hang the caller.
        let probe = tokio::time::timeout(
            CONNECT_TIMEOUT,
            sqlx::PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| {
            unreachable(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} s: is the server up, and reachable from here?",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )))
        })?
        .map_err(unreachable)?;
        let _ = probe.close().await;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(test_before_acquire)
            .connect_lazy_with(self.options.clone()))
    }
}

/// How long connecting may take before it counts as a failure (the pools'
/// acquire timeout too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `$DAWDLE_HOME`, else `.dawdle` in the working directory.
pub fn default_home() -> PathBuf {
    std::env::var_os(HOME_ENV)
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".dawdle"))
        .join("postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_hides_the_password() {
        let database = JobsDatabase::from_url("host=h password=hunter2").unwrap();
        let debug = format!("{database:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("password=***"), "{debug}");
    }

    #[test]
    fn an_unreadable_url_fails_before_connecting() {
        let error = JobsDatabase::from_url("postgres://u:hunter2@h:x/db").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("read the database URL: not a valid"));
    }
}
