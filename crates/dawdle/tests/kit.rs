//! The test kit users test their own tasks with: a task run directly, what
//! code deferred, and the queue drained with follow-ups and retries.

use std::time::Duration;

use dawdle::testing::{assert_deferred, deferred_jobs, drain, perform, TaskRunner, TestDatabase};
use dawdle::{
    defer_task, ErrorKind, JobContext, JobOutcome, NewJob, Registry, RetryStrategy, Task, TaskError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Greets, using the greeting from shared state, and defers a follow-up.
#[derive(Debug, Serialize, Deserialize)]
struct Greet {
    name: String,
}

struct Greeting(&'static str);

impl Task for Greet {
    const NAME: &'static str = "kit.greet";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let greeting = ctx
            .state::<Greeting>()
            .ok_or_else(|| TaskError::new("Config", "no greeting configured"))?;
        if self.name.is_empty() {
            return Err(TaskError::validation("a name is needed"));
        }
        ctx.defer_after_success(NewJob::for_task(&Log {
            line: format!(
                "{} {} (attempt {})",
                greeting.0,
                self.name,
                ctx.attempts + 1
            ),
        })?)?;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Log {
    line: String,
}

impl Task for Log {
    const NAME: &'static str = "kit.log";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Fails once, then succeeds.
#[derive(Debug, Serialize, Deserialize)]
struct FlakyOnce {}

impl Task for FlakyOnce {
    const NAME: &'static str = "kit.flaky_once";

    fn retry_strategy() -> RetryStrategy {
        RetryStrategy::constant(3, Duration::ZERO)
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        if ctx.attempts == 0 {
            return Err(TaskError::connection("first try fails"));
        }
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<Greet>()
        .register::<Log>()
        .register::<FlakyOnce>()
        .with_state(Greeting("hello"));
    registry
}

#[tokio::test]
async fn perform_runs_one_task_with_its_context() {
    let db = TestDatabase::with_schema().await;
    let greet = || Greet { name: "Ada".into() };
    let missing = perform(db.pool(), greet()).await;
    assert_eq!(missing.result.unwrap_err().kind(), "Config");

    let run = TaskRunner::new(db.pool())
        .state(Greeting("hi"))
        .attempts(2)
        .run(greet())
        .await;
    run.result.unwrap();
    assert_eq!(run.follow_ups.len(), 1);
    assert_eq!(run.follow_ups[0].args["line"], "hi Ada (attempt 3)");
    // Nothing was written: perform needs no job row and inserts nothing.
    assert!(deferred_jobs(db.pool()).await.is_empty());

    let invalid = TaskRunner::new(db.pool())
        .state(Greeting("hi"))
        .run(Greet {
            name: String::new(),
        })
        .await;
    assert_eq!(
        invalid.result.unwrap_err().error_kind(),
        ErrorKind::Validation
    );
}

#[tokio::test]
async fn assert_deferred_sees_jobs_deferred_in_a_transaction() {
    let db = TestDatabase::with_schema().await;
    let mut tx = db.pool().begin().await.unwrap();
    defer_task(&mut *tx, &Greet { name: "Ada".into() })
        .await
        .unwrap();
    let job = assert_deferred(&mut *tx, "kit.greet", json!({"name": "Ada"})).await;
    assert_eq!(job.queue_name, "default");
    assert_deferred(&mut *tx, "kit.greet", json!({})).await;
    drop(tx); // rolled back
    assert!(deferred_jobs(db.pool()).await.is_empty());
}

#[tokio::test]
#[should_panic(
    expected = "no waiting job of \"kit.greet\" with arguments including {\"name\":\"Bob\"}"
)]
async fn assert_deferred_lists_what_was_deferred_when_nothing_matches() {
    let db = TestDatabase::with_schema().await;
    defer_task(db.pool(), &Greet { name: "Ada".into() })
        .await
        .unwrap();
    assert_deferred(db.pool(), "kit.greet", json!({"name": "Bob"})).await;
}

#[tokio::test]
async fn drain_runs_follow_ups_and_retries_to_the_end() {
    let db = TestDatabase::with_schema().await;
    let greet = defer_task(db.pool(), &Greet { name: "Ada".into() })
        .await
        .unwrap();
    let flaky = defer_task(db.pool(), &FlakyOnce {}).await.unwrap();
    let outcomes = drain(db.pool(), registry()).await;

    let of = |id: i64| -> Vec<&JobOutcome> {
        outcomes
            .iter()
            .filter(|event| event.job_id == id)
            .map(|event| &event.outcome)
            .collect()
    };
    assert_eq!(of(greet), [&JobOutcome::Succeeded]);
    let flaky_outcomes = of(flaky);
    assert!(
        matches!(
            flaky_outcomes.as_slice(),
            [
                JobOutcome::Retrying {
                    kind: ErrorKind::Connection,
                    ..
                },
                JobOutcome::Succeeded
            ]
        ),
        "{flaky_outcomes:?}"
    );
    // The follow-up the greeting deferred ran too.
    let logged = outcomes
        .iter()
        .filter(|event| ![greet, flaky].contains(&event.job_id))
        .count();
    assert_eq!(logged, 1, "{outcomes:?}");
    assert!(deferred_jobs(db.pool()).await.is_empty());
}
