//! Outcomes beyond success and failure: a task snoozes (runs again later,
//! no attempt counted), cancels its own job, or fails without retry, and
//! each is recorded with its history.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dawdle::testing::{drain, TestDatabase};
use dawdle::{
    defer_task, ErrorKind, JobContext, JobOutcome, Registry, RetryStrategy, Task, TaskError,
    TaskOptions,
};
use serde::{Deserialize, Serialize};

/// How many times each task ran, shared with the tasks as registry state.
#[derive(Default)]
struct Runs(AtomicU32);

/// Snoozes `times` times (for `wait_ms`), then succeeds.
#[derive(Debug, Serialize, Deserialize)]
struct Snoozer {
    times: u32,
    wait_ms: u64,
}

impl Task for Snoozer {
    const NAME: &'static str = "outcomes.snoozer";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::never()
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let runs = ctx
            .state::<Runs>()
            .expect("runs state")
            .0
            .fetch_add(1, Ordering::SeqCst);
        if runs < self.times {
            return Err(TaskError::snooze(Duration::from_millis(self.wait_ms)));
        }
        Ok(())
    }
}

/// Cancels its own job; would be retried were it a failure.
#[derive(Debug, Serialize, Deserialize)]
struct Canceller {}

impl Task for Canceller {
    const NAME: &'static str = "outcomes.canceller";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::exponential(5, 0.0)
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::cancel("the account it was for is closed"))
    }
}

/// Fails with a retryable kind but asks for no retry.
#[derive(Debug, Serialize, Deserialize)]
struct GivesUp {}

impl Task for GivesUp {
    const NAME: &'static str = "outcomes.gives_up";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::exponential(5, 0.0)
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::connection("the partner API said never again").no_retry())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<Snoozer>()
        .register::<Canceller>()
        .register::<GivesUp>()
        .with_state(Runs::default());
    registry
}

async fn row(db: &TestDatabase, id: i64) -> (String, i32, Vec<String>) {
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status::text, attempts FROM procrastinate_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT type::text FROM procrastinate_events WHERE job_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    (status, attempts, events)
}

#[tokio::test]
async fn a_snooze_runs_the_job_again_without_counting_an_attempt() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(
        db.pool(),
        &Snoozer {
            times: 2,
            wait_ms: 0,
        },
    )
    .await
    .unwrap();
    let outcomes = drain(db.pool(), registry()).await;
    let mine: Vec<&JobOutcome> = outcomes
        .iter()
        .filter(|event| event.job_id == id)
        .map(|event| &event.outcome)
        .collect();
    assert!(
        matches!(
            mine.as_slice(),
            [
                JobOutcome::Snoozed { .. },
                JobOutcome::Snoozed { .. },
                JobOutcome::Succeeded
            ]
        ),
        "{mine:?}"
    );
    let (status, attempts, events) = row(&db, id).await;
    assert_eq!(status, "succeeded");
    // Only the attempt that did the work counts; a snooze is no error.
    assert_eq!(attempts, 1);
    assert!(!events.contains(&"error".to_string()), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| *e == "deferred_for_retry").count(),
        2,
        "{events:?}"
    );
}

#[tokio::test]
async fn a_snoozed_job_waits_until_its_time() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(
        db.pool(),
        &Snoozer {
            times: 1,
            wait_ms: 3_600_000,
        },
    )
    .await
    .unwrap();
    let outcomes = drain(db.pool(), registry()).await;
    let [event] = outcomes.as_slice() else {
        panic!("one outcome expected: {outcomes:?}")
    };
    let JobOutcome::Snoozed { at } = event.outcome else {
        panic!("a snooze expected: {event:?}")
    };
    let (status, attempts, _) = row(&db, id).await;
    assert_eq!((status.as_str(), attempts), ("todo", 0));
    let (scheduled_at, waits): (chrono::DateTime<chrono::Utc>, bool) = sqlx::query_as(
        "SELECT scheduled_at, scheduled_at > now() + interval '59 minutes'
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(waits, "scheduled at {scheduled_at}");
    // The event reports the time stored (to PostgreSQL's microseconds).
    assert!(
        (scheduled_at - at).num_microseconds().unwrap().abs() <= 1,
        "{scheduled_at} vs {at}"
    );
}

#[tokio::test]
async fn a_snooze_too_long_to_represent_waits_until_the_end_of_year_9999() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(
        db.pool(),
        &Snoozer {
            times: 1,
            wait_ms: u64::MAX,
        },
    )
    .await
    .unwrap();
    drain(db.pool(), registry()).await;
    let year: f64 = sqlx::query_scalar(
        "SELECT extract(year FROM scheduled_at AT TIME ZONE 'UTC')::float8
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(year, 9999.0);
}

#[tokio::test]
async fn a_task_can_cancel_its_own_job_with_a_reason() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(db.pool(), &Canceller {}).await.unwrap();
    let outcomes = drain(db.pool(), registry()).await;
    assert_eq!(outcomes.len(), 1, "never retried: {outcomes:?}");
    assert_eq!(
        outcomes[0].outcome,
        JobOutcome::Cancelled {
            reason: "the account it was for is closed".into()
        }
    );
    let (status, attempts, events) = row(&db, id).await;
    assert_eq!((status.as_str(), attempts), ("cancelled", 1));
    assert_eq!(events, ["deferred", "started", "error", "cancelled"]);
    let (kind, message): (String, String) = sqlx::query_as(
        "SELECT error, error_message FROM procrastinate_events
         WHERE job_id = $1 AND type = 'error'",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(kind, "Cancelled");
    assert_eq!(message, "the account it was for is closed");
    let finished: bool = sqlx::query_scalar(
        "SELECT finished_at IS NOT NULL AND worker_id IS NULL FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(finished);
}

#[tokio::test]
async fn no_retry_fails_at_once_whatever_the_strategy() {
    let db = TestDatabase::with_schema().await;
    let id = defer_task(db.pool(), &GivesUp {}).await.unwrap();
    let outcomes = drain(db.pool(), registry()).await;
    assert!(
        matches!(
            outcomes.as_slice(),
            [dawdle::JobEvent {
                outcome: JobOutcome::Failed {
                    kind: ErrorKind::Connection,
                    ..
                },
                ..
            }]
        ),
        "{outcomes:?}"
    );
    let (status, attempts, _) = row(&db, id).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
}

/// Fails with a retryable kind; never retried by its own strategy, and
/// sleeps past any timeout shorter than a minute.
#[derive(Debug, Serialize, Deserialize)]
struct Stubborn {
    sleep: bool,
}

impl Task for Stubborn {
    const NAME: &'static str = "outcomes.stubborn";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        if self.sleep {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Err(TaskError::connection("still down"))
    }
}

#[tokio::test]
async fn a_registration_replaces_the_tasks_retry_strategy_and_timeout() {
    let db = TestDatabase::with_schema().await;
    let failing = defer_task(db.pool(), &Stubborn { sleep: false })
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register_with::<Stubborn>(
        TaskOptions::new()
            .retry(RetryStrategy::exponential(2, 0.0))
            .timeout(Duration::from_millis(100)),
    );
    drain(db.pool(), registry.clone()).await;
    // Two retries where the task itself asks for none.
    let (status, attempts, _) = row(&db, failing).await;
    assert_eq!((status.as_str(), attempts), ("failed", 3));

    let slow = defer_task(db.pool(), &Stubborn { sleep: true })
        .await
        .unwrap();
    let outcomes = drain(db.pool(), registry).await;
    assert!(
        outcomes.iter().all(|event| matches!(
            &event.outcome,
            JobOutcome::Retrying {
                kind: ErrorKind::Timeout,
                ..
            } | JobOutcome::Failed {
                kind: ErrorKind::Timeout,
                ..
            }
        )),
        "stopped by the registration's timeout: {outcomes:?}"
    );
    let (status, attempts, _) = row(&db, slow).await;
    assert_eq!((status.as_str(), attempts), ("failed", 3));
}
