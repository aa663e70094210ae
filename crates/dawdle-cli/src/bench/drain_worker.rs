//! The worker process `dawdle bench drain` times: the URL it is given for
//! the scratch database, and running it to the end of its one-shot drain.

use std::process::Stdio;
use std::time::{Duration, Instant};

use dawdle::database::DATABASE_URL_ENV;
use dawdle::JobsDatabase;
use serde::Deserialize;

use super::drain::{DATABASE, QUEUE};
use super::BenchError;

/// What `dawdle worker --json` prints when it exits.
#[derive(Debug, Deserialize)]
pub(super) struct WorkerSummary {
    pub(super) succeeded: u64,
    pub(super) retried: u64,
    pub(super) failed: u64,
    pub(super) interrupted: u64,
    pub(super) peak_rss_kb: Option<u64>,
}

/// The URL the worker process gets for the scratch database: the jobs
/// database's URL with the database name swapped.
pub(super) fn scratch_url(database: &JobsDatabase) -> Result<String, BenchError> {
    let url = match database.embedded_cluster() {
        Some(cluster) => cluster.url(DATABASE),
        None => with_database(database.url(), DATABASE),
    };
    // A `dbname` query parameter would win over the path and send the worker
    // to the real jobs database, to drain whatever it finds on queue `bench`.
    // Read as the worker will read it, so that the check is of what it does.
    let names = dawdle::database::parse_connection_string(&url)
        .ok()
        .and_then(|options| options.get_database().map(str::to_string));
    if names.as_deref() != Some(DATABASE) {
        return Err(BenchError::Check(format!(
            "point the worker at {DATABASE}: the jobs database URL {} names its database in \
             a way the benchmark cannot swap (a dbname parameter?); pass a plain \
             postgresql://user@host:port/database URL",
            database.display_url()
        )));
    }
    Ok(url)
}

/// `url` with its path (the database name) replaced by `name`, keeping the
/// scheme, credentials, host and query parameters.
fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let after_authority = &rest[authority_end..];
    let query_start = after_authority
        .find(['?', '#'])
        .unwrap_or(after_authority.len());
    format!(
        "{}{}/{name}{}",
        &url[..scheme_end],
        &rest[..authority_end],
        &after_authority[query_start..]
    )
}

/// Spawns `dawdle worker --one-shot` on the scratch database and waits for
/// it to exit; returns its summary and the time from spawn to exit.
pub(super) async fn run_worker(
    worker_url: &str,
    concurrency: u32,
    prefetch: u32,
    metrics: bool,
    jobs: i32,
) -> Result<(WorkerSummary, Duration), BenchError> {
    let executable = std::env::current_exe().map_err(|source| BenchError::Io {
        action: "find the dawdle executable to run the worker".to_string(),
        source,
    })?;
    let concurrency_arg = concurrency.to_string();
    let prefetch_arg = prefetch.to_string();
    let mut command = tokio::process::Command::new(&executable);
    command
        .args(["worker", "--one-shot", "--queues", QUEUE, "--json"])
        .args(["--concurrency", &concurrency_arg])
        .args(["--prefetch", &prefetch_arg])
        .args(
            metrics
                .then_some(["--metrics-addr", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
        )
        .env(DATABASE_URL_ENV, worker_url)
        // One info line per job start and finish would make the benchmark
        // measure the terminal; warnings still come through on stderr.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Should the wait below give up, dropping the child kills it rather
        // than leaving a worker behind on the scratch database.
        .kill_on_drop(true);
    // The worker retries database errors forever, so a broken run would
    // otherwise hang the benchmark. Anything slower than a few hundred jobs
    // per second is a failure whatever the machine.
    let limit = Duration::from_secs(120) + Duration::from_millis(5) * jobs.unsigned_abs();
    let started = Instant::now();
    let child = command.spawn().map_err(|source| BenchError::Io {
        action: format!("start the worker {}", executable.display()),
        source,
    })?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            BenchError::Check(format!(
                "drain {DATABASE} at concurrency {concurrency}: the worker had not exited \
                 after {} s; it was killed",
                limit.as_secs()
            ))
        })?
        .map_err(|source| BenchError::Io {
            action: format!("wait for the worker at concurrency {concurrency}"),
            source,
        })?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(BenchError::Check(format!(
            "drain {DATABASE} at concurrency {concurrency}: the worker exited with {} (its \
             messages are above)",
            output.status
        )));
    }
    let summary = serde_json::from_slice(&output.stdout).map_err(|error| {
        BenchError::Check(format!(
            "read the worker's summary at concurrency {concurrency}: {error}; it printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        ))
    })?;
    Ok((summary, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_swapped_and_everything_else_kept() {
        assert_eq!(
            with_database(
                "postgresql://u:p%2Fw@db.example:5433/jobs?sslmode=require",
                "x"
            ),
            "postgresql://u:p%2Fw@db.example:5433/x?sslmode=require"
        );
        assert_eq!(
            with_database(
                "postgresql://postgres@localhost:5432/jobs?host=/tmp/run",
                "x"
            ),
            "postgresql://postgres@localhost:5432/x?host=/tmp/run"
        );
        assert_eq!(
            with_database("postgres://localhost", "x"),
            "postgres://localhost/x"
        );
        assert_eq!(
            with_database("postgres://localhost?sslmode=disable", "x"),
            "postgres://localhost/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql:///jobs?host=/tmp", "x"),
            "postgresql:///x?host=/tmp"
        );
    }

    #[test]
    fn the_scratch_database_is_checked_as_the_worker_reads_the_url() {
        let scratch = |url: &str| scratch_url(&JobsDatabase::from_url(url).unwrap());
        assert_eq!(
            scratch("postgresql://app:pw@db:5432/jobs?sslmode=disable").unwrap(),
            format!("postgresql://app:pw@db:5432/{DATABASE}?sslmode=disable")
        );
        // Where the worker would still find the real jobs database.
        for url in [
            "postgresql://app:Sx8pQw3z@db/jobs?dbname=jobs",
            "host=db dbname=jobs user=app password=Sx8pQw3z",
        ] {
            let error = scratch(url).unwrap_err().to_string();
            assert!(error.contains("cannot swap"), "{error}");
            assert!(!error.contains("Sx8pQw3z"), "{error}");
        }
    }

    #[test]
    fn a_url_that_is_not_one_is_left_alone() {
        assert_eq!(
            with_database("host=/tmp dbname=jobs", "x"),
            "host=/tmp dbname=jobs"
        );
    }
}
