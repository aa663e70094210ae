//! The worker process `dawdle bench drain` times: the URL it is given for
//! the scratch database, and running it to the end of its one-shot drain.

use std::process::Stdio;
use std::time::{Duration, Instant};

use dawdle::database::DATABASE_URL_ENV;
use dawdle::JobsDatabase;
use serde::Deserialize;

use super::drain::DATABASE;
use super::BenchError;

/// What `dawdle worker --json` prints when it exits.
#[derive(Debug, Default, Deserialize)]
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
    scratch_url_for(database, DATABASE)
}

/// The URL of the scratch database `name` on the jobs database's server.
pub(super) fn scratch_url_for(database: &JobsDatabase, name: &str) -> Result<String, BenchError> {
    let url = match database.embedded_cluster() {
        Some(cluster) => cluster.url(name),
        None => with_database(database.url(), name),
    };
    // A `dbname` query parameter would win over the path and send the worker
    // to the real jobs database, to drain whatever it finds on queue `bench`.
    if !leads_to(&url, name) {
        return Err(BenchError::Check(format!(
            "point the worker at {name}: the jobs database URL {} names its database in \
             a way the benchmark cannot swap (a dbname parameter?); pass a plain \
             postgresql://user@host:port/database URL",
            database.display_url()
        )));
    }
    Ok(url)
}

/// The URL of the scratch database through PgBouncer, whose `url` names
/// some database behind it (PgBouncer must route the scratch database's
/// name too, e.g. with a `* = host=...` fallback entry).
pub(super) fn through_pgbouncer(url: &str) -> Result<String, BenchError> {
    through_pgbouncer_to(url, DATABASE)
}

/// [`through_pgbouncer`] for the scratch database `name`.
pub(super) fn through_pgbouncer_to(url: &str, name: &str) -> Result<String, BenchError> {
    let url = with_database(url, name);
    if !leads_to(&url, name) {
        return Err(BenchError::Check(format!(
            "point the workers at {name} through PgBouncer: --pgbouncer needs a plain \
             postgresql://user@host:port/database URL, got {}",
            dawdle::database::redact_password(&url)
        )));
    }
    Ok(url)
}

/// Whether `url`, read as the worker will read it, names the database
/// `name`: a `dbname` parameter would win over the path the benchmark
/// swapped, so the check is of what the worker does.
fn leads_to(url: &str, name: &str) -> bool {
    dawdle::database::parse_connection_string(url)
        .ok()
        .is_some_and(|options| options.get_database() == Some(name))
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

/// One `dawdle worker --one-shot` run: which queue, how wide, how many
/// processes side by side.
pub(super) struct WorkerRun<'a> {
    pub(super) url: &'a str,
    pub(super) queue: &'a str,
    pub(super) concurrency: u32,
    pub(super) prefetch: u32,
    pub(super) metrics: bool,
    /// Worker processes started together on the same queue.
    pub(super) processes: u32,
    /// Jobs waiting for them, to bound how long they may take.
    pub(super) jobs: i32,
    /// `url` leads to PgBouncer in transaction pooling: the workers run
    /// with `--pgbouncer`.
    pub(super) pgbouncer: bool,
}

/// Spawns `processes` × `dawdle worker --one-shot` on the scratch database
/// at once and waits for all of them to exit; returns their summaries added
/// up (peak memory: the largest) and the time from the first spawn to the
/// last exit.
pub(super) async fn run_workers(
    run: &WorkerRun<'_>,
) -> Result<(WorkerSummary, Duration), BenchError> {
    let executable = std::env::current_exe().map_err(|source| BenchError::Io {
        action: "find the dawdle executable to run the worker".to_string(),
        source,
    })?;
    let concurrency = run.concurrency;
    let concurrency_arg = concurrency.to_string();
    let prefetch_arg = run.prefetch.to_string();
    // The workers retry database errors forever, so a broken run would
    // otherwise hang the benchmark. Anything slower than a few hundred jobs
    // per second is a failure whatever the machine.
    let limit = Duration::from_secs(120) + Duration::from_millis(5) * run.jobs.unsigned_abs();
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..run.processes.max(1) {
        let mut command = tokio::process::Command::new(&executable);
        command
            .args(["worker", "--one-shot", "--queues", run.queue, "--json"])
            .args(["--concurrency", &concurrency_arg])
            .args(["--prefetch", &prefetch_arg])
            .args(run.pgbouncer.then_some("--pgbouncer"))
            .args(
                run.metrics
                    .then_some(["--metrics-addr", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .env(DATABASE_URL_ENV, run.url)
            // One info line per job start and finish would make the benchmark
            // measure the terminal; warnings still come through on stderr.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Should the wait below give up, dropping the child kills it
            // rather than leaving a worker behind on the scratch database.
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| BenchError::Io {
            action: format!("start the worker {}", executable.display()),
            source,
        })?;
        children.push(child.wait_with_output());
    }
    // Waiting for them in turn costs nothing: they run side by side, and
    // each prints its summary only as it exits.
    let outputs = tokio::time::timeout(limit, async {
        let mut outputs = Vec::new();
        for child in children {
            outputs.push(child.await);
        }
        outputs
    })
    .await
    .map_err(|_| {
        BenchError::Check(format!(
            "drain {DATABASE} at concurrency {concurrency}: a worker had not exited \
                 after {} s; every worker was killed",
            limit.as_secs()
        ))
    })?;
    let wall = started.elapsed();
    let mut total = WorkerSummary::default();
    for output in outputs {
        let output = output.map_err(|source| BenchError::Io {
            action: format!("wait for the worker at concurrency {concurrency}"),
            source,
        })?;
        if !output.status.success() {
            return Err(BenchError::Check(format!(
                "drain {DATABASE} at concurrency {concurrency}: a worker exited with {} (its \
                 messages are above)",
                output.status
            )));
        }
        let summary: WorkerSummary = serde_json::from_slice(&output.stdout).map_err(|error| {
            BenchError::Check(format!(
                "read the worker's summary at concurrency {concurrency}: {error}; it printed {:?}",
                String::from_utf8_lossy(&output.stdout)
            ))
        })?;
        total.succeeded += summary.succeeded;
        total.retried += summary.retried;
        total.failed += summary.failed;
        total.interrupted += summary.interrupted;
        total.peak_rss_kb = total.peak_rss_kb.max(summary.peak_rss_kb);
    }
    Ok((total, wall))
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
