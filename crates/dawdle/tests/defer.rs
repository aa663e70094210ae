//! Deferring jobs: single, batch, inside a transaction, scheduled, queueing
//! locks, and bad input rejected before any SQL.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use dawdle::testing::TestDatabase;
use dawdle::{defer, defer_batch, defer_task, DeferError, JobStatus, NewJob, Task};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct SendWelcomeEmail {
    user_id: i64,
}

impl Task for SendWelcomeEmail {
    const NAME: &'static str = "email.send_welcome";
    const QUEUE: &'static str = "email";
    const PRIORITY: i32 = 3;

    fn lock(&self) -> Option<String> {
        Some(format!("user-{}", self.user_id))
    }

    fn queueing_lock(&self) -> Option<String> {
        Some(format!("welcome-{}", self.user_id))
    }

    async fn run(self, _ctx: dawdle::JobContext) -> Result<(), dawdle::TaskError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_typed_task_is_stored_with_its_defaults() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(db.pool(), &SendWelcomeEmail { user_id: 42 })
        .await
        .unwrap();
    let job = dawdle::admin::get_job(db.pool(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.task_name, "email.send_welcome");
    assert_eq!(job.queue_name, "email");
    assert_eq!(job.priority, 3);
    assert_eq!(job.lock.as_deref(), Some("user-42"));
    assert_eq!(job.queueing_lock.as_deref(), Some("welcome-42"));
    assert_eq!(job.args, json!({"user_id": 42}));
    assert_eq!(job.status, JobStatus::Todo);
    assert_eq!(job.attempts, 0);
    assert!(job.started_at.is_none() && job.finished_at.is_none());
    assert_eq!(common::event_types(db.pool(), id).await, ["deferred"]);
}

#[tokio::test]
async fn a_batch_is_one_statement_and_keeps_the_callers_order() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..500)
        .map(|i| {
            NewJob::new("batch.task", json!({ "i": i }))
                .unwrap()
                .queue(if i % 2 == 0 { "even" } else { "odd" })
        })
        .collect();
    let ids = defer_batch(db.pool(), &jobs).await.unwrap();
    assert_eq!(ids.len(), 500);
    let stored: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT id, args FROM procrastinate_jobs ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    for (i, (id, args)) in stored.iter().enumerate() {
        assert_eq!(*id, ids[i]);
        assert_eq!(args["i"], i);
    }
    assert_eq!(common::events(db.pool()).await.len(), 500);
    assert!(defer_batch(db.pool(), &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_deferred_in_a_transaction_exists_only_if_it_commits() {
    let db = TestDatabase::with_schema().await;
    let job = NewJob::new("tx.task", json!({})).unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    let rolled_back = defer(&mut *tx, &job).await.unwrap();
    tx.rollback().await.unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    let committed = defer(&mut *tx, &job).await.unwrap();
    // Not visible to others before the commit.
    assert!(dawdle::admin::get_job(db.pool(), committed)
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();

    assert!(dawdle::admin::get_job(db.pool(), rolled_back)
        .await
        .unwrap()
        .is_none());
    assert!(dawdle::admin::get_job(db.pool(), committed)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        common::events(db.pool()).await,
        [(committed, "deferred".to_string())]
    );
}

#[tokio::test]
async fn scheduled_jobs_record_a_scheduled_event_at_their_time() {
    let db = TestDatabase::with_schema().await;
    let at = Utc.with_ymd_and_hms(2031, 1, 2, 3, 4, 5).unwrap();
    let fixed = defer(
        db.pool(),
        &NewJob::new("t", json!({})).unwrap().scheduled_at(at),
    )
    .await
    .unwrap();
    let before = Utc::now();
    let delayed = defer(
        db.pool(),
        &NewJob::new("t", json!({}))
            .unwrap()
            .scheduled_in(Duration::from_secs(3600))
            .unwrap(),
    )
    .await
    .unwrap();

    let job = dawdle::admin::get_job(db.pool(), fixed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.scheduled_at, Some(at));
    let events = dawdle::admin::job_events(db.pool(), fixed).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event_type.unwrap()).collect();
    assert_eq!(
        kinds,
        [dawdle::EventType::Scheduled, dawdle::EventType::Deferred]
    );
    assert_eq!(events[0].at, Some(at));

    let job = dawdle::admin::get_job(db.pool(), delayed)
        .await
        .unwrap()
        .unwrap();
    let offset = job.scheduled_at.unwrap() - before;
    assert!(offset >= chrono::Duration::seconds(3599) && offset <= chrono::Duration::seconds(3700));
}

#[tokio::test]
async fn a_second_waiting_job_with_a_queueing_lock_is_already_enqueued() {
    let db = TestDatabase::with_schema().await;
    let first = defer_task(db.pool(), &SendWelcomeEmail { user_id: 7 })
        .await
        .unwrap();
    let error = defer_task(db.pool(), &SendWelcomeEmail { user_id: 7 })
        .await
        .unwrap_err();
    match error {
        DeferError::AlreadyEnqueued { queueing_lock } => assert_eq!(queueing_lock, "welcome-7"),
        other => panic!("expected AlreadyEnqueued, got {other}"),
    }
    // A batch with a conflict inserts nothing at all.
    let batch = [
        NewJob::new("x", json!({})).unwrap(),
        NewJob::new("x", json!({}))
            .unwrap()
            .queueing_lock("welcome-7"),
    ];
    assert!(matches!(
        defer_batch(db.pool(), &batch).await,
        Err(DeferError::AlreadyEnqueued { .. })
    ));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    // Once the waiting job has left `todo`, the key is free again.
    sqlx::query("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = $1")
        .bind(first)
        .execute(db.pool())
        .await
        .unwrap();
    defer_task(db.pool(), &SendWelcomeEmail { user_id: 7 })
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_is_rejected_before_any_sql() {
    // A pool that cannot connect: any SQL would fail with a connection error,
    // so getting `Invalid` proves validation ran first.
    let options = sqlx::postgres::PgConnectOptions::new()
        .socket("/nonexistent-dawdle-socket-dir")
        .database("nothing");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options);

    let long_name = NewJob::new("t".repeat(129), json!({})).unwrap();
    let error = defer(&pool, &long_name).await.unwrap_err();
    assert!(matches!(error, DeferError::Invalid(_)), "{error}");
    assert!(error.to_string().contains("129 characters"), "{error}");

    let long_queue = NewJob::new("t", json!({})).unwrap().queue("q".repeat(200));
    assert!(matches!(
        defer(&pool, &long_queue).await,
        Err(DeferError::Invalid(_))
    ));

    let error = NewJob::new("t", json!("not an object")).unwrap_err();
    assert!(
        error.to_string().contains("must be a JSON object"),
        "{error}"
    );

    // One bad job in a batch rejects the batch before any SQL.
    let batch = [NewJob::new("ok", json!({})).unwrap(), long_name];
    assert!(matches!(
        defer_batch(&pool, &batch).await,
        Err(DeferError::Invalid(_))
    ));
}

#[tokio::test]
async fn the_database_rejects_non_object_args_written_by_hand() {
    let db = TestDatabase::with_schema().await;
    let error = sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES ('q', 't', '[1]')",
    )
    .execute(db.pool())
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("procrastinate_jobs_args_is_object"),
        "{error}"
    );
}

#[tokio::test]
async fn long_queue_names_still_notify_listeners() {
    // LISTEN truncates channel names to 63 bytes; pg_notify would reject the
    // full name. A listener on the long name must still be woken.
    let db = TestDatabase::with_schema().await;
    let queue = "q".repeat(100);
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pool())
        .await
        .unwrap();
    listener
        .listen(&format!("procrastinate_queue_v1#{queue}"))
        .await
        .unwrap();
    let id = defer(
        db.pool(),
        &NewJob::new("t", json!({})).unwrap().queue(queue),
    )
    .await
    .unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
    assert_eq!(payload, json!({"type": "job_inserted", "job_id": id}));
}
