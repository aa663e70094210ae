//! Paused queues: no worker claims their jobs until they are resumed, the
//! other queues run on, and resuming wakes the workers at once.
//!
//! The workers here poll once a minute: a job that runs within the tests'
//! deadlines was started by a notification.

use std::time::Duration;

use dawdle::admin::{pause_queue, paused_queues, resume_queue};
use dawdle::testing::{eventually, TestDatabase};
use dawdle::{defer_batch, NewJob, Registry, Worker, WorkerConfig};
use serde_json::json;
use sqlx::PgPool;

const POLL: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(20);

fn noops(queue: &str, count: usize) -> Vec<NewJob> {
    (0..count)
        .map(|_| NewJob::new("dawdle.noop", json!({})).unwrap().queue(queue))
        .collect()
}

async fn statuses(pool: &PgPool, ids: &[i64]) -> Vec<(String, Option<i64>, i32)> {
    sqlx::query_as(
        "SELECT status::text, worker_id, attempts FROM procrastinate_jobs
         WHERE id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn all_succeeded(pool: &PgPool, ids: &[i64]) -> bool {
    statuses(pool, ids)
        .await
        .iter()
        .all(|(status, _, _)| status == "succeeded")
}

fn start_worker(pool: &PgPool) -> dawdle::WorkerHandle {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    Worker::builder(pool.clone(), registry)
        .config(WorkerConfig::default().poll_interval(POLL))
        .build()
        .unwrap()
        .start()
}

#[tokio::test]
async fn a_paused_queue_waits_while_the_others_run_and_runs_once_resumed() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    assert!(
        pause_queue(pool, "mail", Some("ops@example"), Some("provider outage"))
            .await
            .unwrap()
    );
    assert!(
        !pause_queue(pool, "mail", None, None).await.unwrap(),
        "pausing twice changes nothing"
    );
    let worker = start_worker(pool);
    worker.ready().await.unwrap();

    let mail = defer_batch(pool, &noops("mail", 3)).await.unwrap();
    let first = defer_batch(pool, &noops("default", 3)).await.unwrap();
    eventually(DEADLINE, "the default queue's jobs", async || {
        all_succeeded(pool, &first).await
    })
    .await;
    // A claim made after the mail jobs were deferred.
    let second = defer_batch(pool, &noops("default", 1)).await.unwrap();
    eventually(DEADLINE, "a later default job", async || {
        all_succeeded(pool, &second).await
    })
    .await;
    for (status, worker_id, attempts) in statuses(pool, &mail).await {
        assert_eq!((status.as_str(), worker_id, attempts), ("todo", None, 0));
    }
    let paused = paused_queues(pool).await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].queue, "mail");
    assert_eq!(paused[0].waiting, 3);
    assert_eq!(paused[0].paused_by.as_deref(), Some("ops@example"));
    assert_eq!(paused[0].reason.as_deref(), Some("provider outage"));

    assert!(resume_queue(pool, "mail").await.unwrap());
    assert!(
        !resume_queue(pool, "mail").await.unwrap(),
        "resumed already"
    );
    eventually(DEADLINE, "the mail jobs, once resumed", async || {
        all_succeeded(pool, &mail).await
    })
    .await;
    assert!(paused_queues(pool).await.unwrap().is_empty());
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_python_librarys_fetch_skips_a_paused_queue_too() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker_id: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap();
    let mail = defer_batch(pool, &noops("mail", 1)).await.unwrap();
    pause_queue(pool, "mail", None, None).await.unwrap();
    let fetch = |queues: Option<Vec<String>>| async move {
        sqlx::query_scalar::<_, Option<i64>>("SELECT id FROM procrastinate_fetch_job_v2($1, $2)")
            .bind(queues)
            .bind(worker_id)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(fetch(None).await, None);
    assert_eq!(fetch(Some(vec!["mail".into()])).await, None);
    resume_queue(pool, "mail").await.unwrap();
    assert_eq!(fetch(Some(vec!["mail".into()])).await, Some(mail[0]));
}

/// The Python library's fetch of every queue, in a transaction rolled back
/// afterwards: the job it would claim, and how many index entries led to
/// heap rows on the way (the server's own counter for this transaction).
async fn fetch_every_queue(pool: &PgPool) -> (Option<i64>, i64) {
    const FETCHED: &str = "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables
                           WHERE relname = 'procrastinate_jobs'";
    let mut tx = pool.begin().await.unwrap();
    let before: i64 = sqlx::query_scalar(FETCHED)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v2(NULL, NULL)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let after: i64 = sqlx::query_scalar(FETCHED)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    (id, after - before)
}

#[tokio::test]
async fn the_python_librarys_fetch_of_every_queue_does_not_read_a_paused_backlog() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    // A paused backlog first in claim order, then, in other queues: a job
    // scheduled for later, a job of higher priority behind an older one, and
    // a job whose lock a running job holds.
    defer_batch(pool, &noops("mail", 20_000)).await.unwrap();
    pause_queue(pool, "mail", None, None).await.unwrap();
    let later = NewJob::new("dawdle.noop", json!({}))
        .unwrap()
        .queue("reports")
        .scheduled_in(Duration::from_secs(3600))
        .unwrap();
    let first = NewJob::new("dawdle.noop", json!({}))
        .unwrap()
        .queue("billing");
    let urgent = NewJob::new("dawdle.noop", json!({}))
        .unwrap()
        .queue("sms")
        .priority(5);
    let locked = NewJob::new("dawdle.noop", json!({}))
        .unwrap()
        .queue("audit")
        .priority(9)
        .lock("ledger");
    let ids = defer_batch(pool, &[later, first, urgent, locked])
        .await
        .unwrap();
    let (first, urgent, locked) = (ids[1], ids[2], ids[3]);
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, status)
         VALUES ('audit', 'dawdle.noop', 'ledger', 'doing')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE procrastinate_jobs")
        .execute(pool)
        .await
        .unwrap();

    // Each fetch claims what the claim order gives, one after the other.
    let fetch = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT id FROM procrastinate_fetch_job_v2(NULL, NULL)",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(fetch_every_queue(pool).await.0, Some(urgent));
    assert_eq!(fetch().await, Some(urgent));
    // The next job in claim order comes after the whole paused backlog.
    let (claimed, read) = fetch_every_queue(pool).await;
    assert_eq!(claimed, Some(first));
    assert!(
        read < 100,
        "read {read} index entries past a paused backlog"
    );
    assert_eq!(fetch().await, Some(first));
    assert_eq!(
        fetch().await,
        None,
        "only the locked and the later job wait"
    );

    // With every waiting queue paused, nothing; once the lock is free, its job.
    pause_queue(pool, "reports", None, None).await.unwrap();
    pause_queue(pool, "audit", None, None).await.unwrap();
    assert_eq!(fetch_every_queue(pool).await.0, None);
    resume_queue(pool, "audit").await.unwrap();
    sqlx::query("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'doing' AND lock = 'ledger'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(fetch().await, Some(locked));

    // Without a pause, the claim order index from its head, as before.
    resume_queue(pool, "mail").await.unwrap();
    resume_queue(pool, "reports").await.unwrap();
    let (claimed, _) = fetch_every_queue(pool).await;
    assert!(
        claimed.is_some_and(|id| id < first),
        "a mail job: {claimed:?}"
    );
}

#[tokio::test]
async fn pausing_and_resuming_tell_the_queues_listeners() {
    let db = TestDatabase::with_schema().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pool())
        .await
        .unwrap();
    listener
        .listen_all(["procrastinate_queue_v1#mail", "procrastinate_any_queue_v1"])
        .await
        .unwrap();
    pause_queue(db.pool(), "mail", None, None).await.unwrap();
    resume_queue(db.pool(), "mail").await.unwrap();
    let mut received = Vec::new();
    while received.len() < 6 {
        let notification = tokio::time::timeout(DEADLINE, listener.recv())
            .await
            .expect("a notification")
            .unwrap();
        let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
        received.push((notification.channel().to_string(), payload["type"].clone()));
    }
    for channel in ["procrastinate_queue_v1#mail", "procrastinate_any_queue_v1"] {
        for kind in ["queue_paused", "queue_resumed", "job_inserted"] {
            assert!(
                received.contains(&(channel.to_string(), json!(kind))),
                "{kind} on {channel}: {received:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_queue_name_is_refused_with_what_was_wrong() {
    let db = TestDatabase::with_schema().await;
    let long = "q".repeat(5_000);
    for bad in ["", long.as_str()] {
        let error = pause_queue(db.pool(), bad, None, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("pause queue: queue name"), "{error}");
        assert!(error.len() < 300, "bounded: {error}");
    }
}

#[tokio::test]
async fn a_long_reason_or_name_of_who_paused_is_cut_not_refused() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let reason = format!("{}\u{1b}[31m", "r".repeat(5_000));
    let by = "\u{1b}".repeat(300);
    assert!(pause_queue(pool, "mail", Some(&by), Some(&reason))
        .await
        .unwrap());
    let paused = paused_queues(pool).await.unwrap();
    let reason = paused[0].reason.as_deref().unwrap();
    assert!(
        reason.chars().count() <= 1024 && reason.ends_with('…'),
        "{reason:.80}"
    );
    let by = paused[0].paused_by.as_deref().unwrap();
    assert!(
        by.chars().count() <= 256 && !by.contains('\u{1b}'),
        "{by:.80}"
    );
}
