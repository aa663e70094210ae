//! PostgreSQL restarts under two `dawdle worker` processes draining a queue:
//! once with a fast shutdown (sessions ended politely) and once with an
//! immediate one (the server killed, crash recovery at start). Afterwards
//! every job has succeeded exactly once, no two jobs of one lock overlapped,
//! and both workers are still running: they reconnect, they do not exit.
//!
//! The cluster is one of the test's own, in a temporary directory: the
//! shared test cluster serves every other test and must not be restarted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dawdle::local_pg::{LocalCluster, LocalClusterConfig, PgBinaries};
use dawdle::testing::eventually;
use dawdle::{defer_batch, NewJob};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

const TOTAL: i64 = 4000;
const LOCKS: usize = 25;

/// One run of a job: (started_at, finished_at).
type Run = (DateTime<Utc>, DateTime<Utc>);

/// The test's own cluster and the workers' logs, all deleted when dropped,
/// whether the test passed or not.
struct Sandbox {
    cluster: LocalCluster,
    logs: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let base = std::env::temp_dir().join(format!("dawdle-faults-{}", std::process::id()));
        let cluster = LocalCluster::new(LocalClusterConfig::throwaway(base.join("pg")))
            .expect("find the PostgreSQL binaries");
        let logs = base.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        Self { cluster, logs }
    }

    fn base(&self) -> PathBuf {
        self.logs.parent().unwrap().to_path_buf()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The workers' own account of what went wrong.
            for entry in std::fs::read_dir(&self.logs)
                .into_iter()
                .flatten()
                .flatten()
            {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of {}:", entry.path().display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        if let Err(error) = self.cluster.destroy() {
            eprintln!("failed to remove the test's PostgreSQL cluster: {error}");
        }
        let _ = std::fs::remove_dir_all(self.base());
    }
}

/// A `dawdle worker` process, stopped with SIGTERM when dropped.
struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    fn start(url: &str, log: PathBuf) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args([
                "worker",
                "--concurrency",
                "10",
                "--poll-interval",
                "0.5",
                "--heartbeat-interval",
                "0.5",
            ])
            .env("JOB_QUEUE_DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a worker");
        Self { child }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit status once it has shut down.
    fn stop(&mut self) -> std::process::ExitStatus {
        if self.alive() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        self.child.wait().unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}

/// How the server goes down.
#[derive(Debug, Clone, Copy)]
enum Shutdown {
    /// `pg_ctl -m fast`: sessions are ended, then a clean shutdown.
    Fast,
    /// `pg_ctl -m immediate`: every process killed; recovery at start.
    Immediate,
}

/// Stops the server, starts it again, and returns how long it was away.
async fn restart(cluster: &LocalCluster, how: Shutdown) -> Duration {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let down = Instant::now();
        match how {
            Shutdown::Fast => cluster.stop().expect("stop PostgreSQL"),
            Shutdown::Immediate => stop_immediately(&cluster),
        }
        cluster.ensure_running().expect("start PostgreSQL again");
        down.elapsed()
    })
    .await
    .unwrap()
}

/// `pg_ctl stop -m immediate`, as the server's own user when we are root
/// (the cluster's files belong to it).
fn stop_immediately(cluster: &LocalCluster) {
    let pg_ctl = PgBinaries::find().unwrap().bindir().join("pg_ctl");
    let uid = Command::new("id").arg("-u").output().unwrap();
    let mut command = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        command
    } else {
        Command::new(&pg_ctl)
    };
    let output = command
        .args(["stop", "-m", "immediate", "-w", "-D"])
        .arg(cluster.data_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_ctl stop -m immediate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn succeeded(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
        .fetch_one(pool)
        .await
        .ok()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until `fraction` of the jobs succeeded; panics if they all did,
/// since the restart must land mid-drain.
async fn wait_for_progress(pool: &PgPool, fraction: f64) -> i64 {
    let target = (TOTAL as f64 * fraction) as i64;
    eventually(
        Duration::from_secs(60),
        &format!("{target} jobs to succeed"),
        || async { succeeded(pool).await.is_some_and(|done| done >= target) },
    )
    .await;
    let done = succeeded(pool).await.unwrap();
    assert!(done < TOTAL, "the drain finished before the restart");
    done
}

/// Restarts the server and waits for the workers to claim again; returns
/// (outage, time from the server's return to the first claim).
async fn restart_and_resume(
    cluster: &LocalCluster,
    pool: &PgPool,
    how: Shutdown,
) -> (Duration, Duration) {
    let outage = restart(cluster, how).await;
    let back = Instant::now();
    let back_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "a job claimed after the restart",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM procrastinate_events
                                WHERE type = 'started' AND at > $1)",
            )
            .bind(back_at)
            .fetch_one(pool)
            .await
            .unwrap_or(false)
        },
    )
    .await;
    (outage, back.elapsed())
}

#[tokio::test]
async fn workers_ride_out_postgresql_restarts_without_losing_a_job() {
    let sandbox = Sandbox::new();
    let cluster = sandbox.cluster.clone();
    let starter = cluster.clone();
    tokio::task::spawn_blocking(move || starter.ensure_running())
        .await
        .unwrap()
        .expect("start the test's own PostgreSQL");
    cluster.ensure_database("jobs").await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(cluster.connect_options("jobs"))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    dawdle::schema::apply(&mut conn).await.unwrap();
    drop(conn);

    // Three quarters sleep 40 ms, a tenth of those on one of 25 locks; the
    // rest are no-ops. Two workers of 10 slots need about 6 s: both
    // restarts land mid-drain.
    let jobs: Vec<NewJob> = (0..TOTAL as usize)
        .map(|i| match i % 4 {
            3 => NewJob::new("dawdle.noop", json!({})).unwrap(),
            _ if i % 10 == 0 => NewJob::new("dawdle.sleep", json!({"seconds": 0.04}))
                .unwrap()
                .lock(format!("lock-{}", (i / 10) % LOCKS)),
            _ => NewJob::new("dawdle.sleep", json!({"seconds": 0.04})).unwrap(),
        })
        .collect();
    defer_batch(&pool, &jobs).await.unwrap();

    let url = cluster.url("jobs");
    let mut workers: Vec<WorkerProcess> = (0..2)
        .map(|n| WorkerProcess::start(&url, sandbox.logs.join(format!("worker-{n}.log"))))
        .collect();

    let mut resumed = Vec::new();
    for (fraction, how) in [(0.1, Shutdown::Fast), (0.5, Shutdown::Immediate)] {
        let done = wait_for_progress(&pool, fraction).await;
        let (outage, resume) = restart_and_resume(&cluster, &pool, how).await;
        eprintln!(
            "{how:?} restart after {done} of {TOTAL} jobs: the server was away {outage:?}; \
             the workers claimed again {resume:?} after it was back"
        );
        for (n, worker) in workers.iter_mut().enumerate() {
            assert!(
                worker.alive(),
                "worker {n} exited after the {how:?} restart"
            );
        }
        resumed.push((how, resume));
    }

    eventually(Duration::from_secs(60), "every job to succeed", || async {
        succeeded(&pool).await == Some(TOTAL)
    })
    .await;

    // Nothing lost, nothing left, nothing failed, nothing recorded twice.
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM procrastinate_events WHERE type = 'succeeded'"
        )
        .await,
        TOTAL
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(DISTINCT job_id) FROM procrastinate_events WHERE type = 'succeeded'"
        )
        .await,
        TOTAL
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM procrastinate_events WHERE type IN ('failed', 'error')"
        )
        .await,
        0
    );
    let put_back = scalar(
        &pool,
        "SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry'",
    )
    .await;
    eprintln!("jobs put back unstarted by the workers' recovery: {put_back}");

    // Jobs of one lock ran one at a time, restarts included.
    let runs: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT lock, started_at, finished_at FROM procrastinate_jobs
         WHERE lock IS NOT NULL ORDER BY lock, started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_lock: HashMap<&str, Vec<Run>> = HashMap::new();
    for (lock, started, finished) in &runs {
        by_lock
            .entry(lock.as_str())
            .or_default()
            .push((*started, *finished));
    }
    assert_eq!(by_lock.len(), LOCKS);
    for (lock, runs) in &by_lock {
        for pair in runs.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "two jobs of {lock} overlapped: {pair:?}"
            );
        }
    }

    // Both workers are still there, registered, and stop cleanly.
    for (n, worker) in workers.iter_mut().enumerate() {
        assert!(worker.alive(), "worker {n} exited during the drain");
    }
    eventually(
        Duration::from_secs(10),
        "both workers registered",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM procrastinate_workers")
                .fetch_one(&pool)
                .await
                .is_ok_and(|count| count == 2)
        },
    )
    .await;
    for (n, worker) in workers.iter_mut().enumerate() {
        let status = worker.stop();
        assert!(status.success(), "worker {n} stopped with {status}");
    }
    pool.close().await;

    for (how, resume) in resumed {
        assert!(
            resume < Duration::from_secs(15),
            "after the {how:?} restart the drain took {resume:?} to resume"
        );
    }
}
