//! Where the jobs database is: `JOB_QUEUE_DATABASE_URL`, or the embedded local
//! PostgreSQL under `.dawdle/` when it is unset.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::local_pg::{LocalCluster, LocalClusterConfig, LocalPgError};

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
    #[error("parse the database URL {url}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
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
#[derive(Debug, Clone)]
pub struct JobsDatabase {
    options: PgConnectOptions,
    /// The URL with any password hidden, for messages.
    display_url: String,
    /// A URL other programs (psql, Python) can use; for the embedded
    /// cluster, the socket URL.
    url: String,
    embedded: Option<LocalCluster>,
}

impl JobsDatabase {
    /// From an explicit URL.
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| ConnectError::BadUrl {
            url: redact_password(url),
            source,
        })?;
        Ok(Self {
            options: options.application_name("dawdle"),
            display_url: redact_password(url),
            url: url.to_string(),
            embedded: None,
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

    /// The URL with its password replaced by `***`.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// A URL for other programs (psql, the Python library).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A pool of up to `max_connections`, with the first connection opened
    /// now so that a wrong URL fails here, with the URL in the message.
    pub async fn connect(&self, max_connections: u32) -> Result<PgPool, ConnectError> {
        // One direct connection first: a pool retries a refused connection
        // until its acquire timeout, and a typo in a URL should fail at once.
        let unreachable = |source| ConnectError::Unreachable {
            url: self.display_url.clone(),
            source,
        };
        let probe = sqlx::PgConnection::connect_with(&self.options)
            .await
            .map_err(unreachable)?;
        let _ = probe.close().await;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(self.options.clone()))
    }
}

/// `$DAWDLE_HOME`, else `.dawdle` in the working directory.
pub fn default_home() -> PathBuf {
    std::env::var_os(HOME_ENV)
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".dawdle"))
        .join("postgres")
}

/// Replaces the password of a `postgres://user:password@host/db` URL by `***`.
pub fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_password("postgresql://postgres:postgres@localhost:5433/jobs"),
            "postgresql://postgres:***@localhost:5433/jobs"
        );
        assert_eq!(
            redact_password("postgres://u:p%40ss@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_password("not a url"), "not a url");
    }
}
