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
