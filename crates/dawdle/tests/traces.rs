//! Every log line a task writes carries its job: the attempt runs in the
//! `job` span of the built-in job logs, which task code's own events
//! inherit.

use std::io::Write;
use std::sync::{Arc, Mutex};

use dawdle::testing::{drain, TestDatabase};
use dawdle::{defer_task, JobContext, JobOutcome, Registry, Task, TaskError};
use serde::{Deserialize, Serialize};

/// Log output, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Task for Greet {
    const NAME: &'static str = "test.greet";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        tracing::info!(name = %self.name, "the task says hello");
        Ok(())
    }
}

#[tokio::test]
async fn a_tasks_own_log_lines_carry_its_job_id_task_and_attempt() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // The test's runtime has one thread: the worker's tasks log through it.
    let _default = tracing::subscriber::set_default(subscriber);
    let db = TestDatabase::with_schema().await;
    let id = defer_task(db.pool(), &Greet { name: "Ada".into() })
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register::<Greet>();
    let outcomes = drain(db.pool(), registry).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, JobOutcome::Succeeded);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("the task says hello"))
        .unwrap_or_else(|| panic!("the task's line is missing from:\n{logs}"));
    for field in [
        format!("job_id={id}"),
        "task=test.greet".to_string(),
        "attempt=1".to_string(),
        "name=Ada".to_string(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line:?}");
    }
}
