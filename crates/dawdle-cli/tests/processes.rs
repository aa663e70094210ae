//! Three worker processes share a queue with locked and periodic jobs; one
//! is killed with SIGKILL in the middle of a job. Afterwards every job has
//! succeeded, no two jobs of one lock ran at the same time, and each
//! periodic tick produced exactly one job.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dawdle::testing::{eventually, TestDatabase};
use dawdle::{defer_batch, NewJob};
use serde_json::json;
use sqlx::PgPool;

/// A worker process, stopped with SIGTERM when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(url: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args([
                "worker",
                "--concurrency",
                "4",
                "--poll-interval",
                "0.2",
                "--heartbeat-interval",
                "0.2",
                "--stalled-after",
                "1.5",
                "--periodic",
                "dawdle.noop=* * * * * *",
            ])
            .env("JOB_QUEUE_DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker");
        Self(child)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.signal("-TERM");
            let _ = self.0.wait();
        }
    }
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing_and_locks_and_ticks_hold() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let url = db.url();
    let jobs: Vec<NewJob> = (0..30)
        .map(|i| {
            NewJob::new("dawdle.sleep", json!({"seconds": 0.3}))
                .unwrap()
                .lock(format!("lock-{}", i % 3))
        })
        .collect();

    // The first worker alone, so we know its id; then the jobs; then the others.
    let victim = WorkerProcess::start(&url);
    eventually(
        Duration::from_secs(20),
        "the first worker to register",
        async || scalar(pool, "SELECT count(*) FROM procrastinate_workers").await == 1,
    )
    .await;
    let victim_id = scalar(pool, "SELECT id FROM procrastinate_workers").await;
    defer_batch(pool, &jobs).await.unwrap();
    let others = [WorkerProcess::start(&url), WorkerProcess::start(&url)];
    let kill_sql = format!(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' AND task_name = 'dawdle.sleep' AND worker_id = {victim_id}"
    );
    eventually(
        Duration::from_secs(20),
        "the first worker to be running a job",
        async || scalar(pool, &kill_sql).await > 0,
    )
    .await;
    victim.signal("-KILL");

    eventually(Duration::from_secs(60), "every job to succeed", async || {
        scalar(pool, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'dawdle.sleep' AND status = 'succeeded'").await == 30
    })
    .await;
    drop(others);
    drop(victim);

    // The killed worker's job was put back once and ran again.
    let rescued = scalar(
        pool,
        "SELECT count(*) FROM procrastinate_events WHERE error = 'Stalled'",
    )
    .await;
    assert!(rescued >= 1, "the killed worker's job was rescued");

    // No two jobs of one lock overlapped.
    let spans: Vec<(String, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT lock, id, started_at, finished_at FROM procrastinate_jobs
         WHERE task_name = 'dawdle.sleep' ORDER BY lock, started_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut previous: HashMap<String, (i64, DateTime<Utc>)> = HashMap::new();
    for (lock, id, started, finished) in spans {
        if let Some((other, end)) = previous.get(&lock) {
            assert!(
                started >= *end,
                "lock {lock}: job {id} started before job {other} finished"
            );
        }
        previous.insert(lock, (id, finished));
    }

    // One job per periodic tick, no tick skipped while workers ran.
    let ticks: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT (args->>'timestamp')::bigint, count(*) FROM procrastinate_jobs
         WHERE task_name = 'dawdle.noop' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert!(
        ticks.iter().all(|(_, n)| *n == 1),
        "a tick deferred twice: {ticks:?}"
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1, "a tick was skipped: {ticks:?}");
    }
}
