//! Helpers shared by the integration tests: reading rows and events back,
//! following a worker's recorded outcomes, and driving the real Python
//! library.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dawdle::{JobEvent, JobOutcome};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// (job id, event type) of every event, in id order.
pub async fn events(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT job_id, type::text FROM procrastinate_events ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("read events")
}

/// Event types of one job, in id order.
pub async fn event_types(pool: &PgPool, job_id: i64) -> Vec<String> {
    sqlx::query_scalar("SELECT type::text FROM procrastinate_events WHERE job_id = $1 ORDER BY id")
        .bind(job_id)
        .fetch_all(pool)
        .await
        .expect("read events of a job")
}

pub async fn status(pool: &PgPool, job_id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .expect("read a job's status")
}

/// Receives a worker's events (`WorkerHandle::events`) until `done` holds
/// for those received so far, and returns them; panics naming `what`, with
/// what was received, once `deadline` has passed.
pub async fn recorded(
    events: &mut broadcast::Receiver<JobEvent>,
    deadline: Duration,
    what: &str,
    mut done: impl FnMut(&[JobEvent]) -> bool,
) -> Vec<JobEvent> {
    let mut seen = Vec::new();
    let receive = async {
        while !done(&seen) {
            seen.push(events.recv().await.expect("the worker's events"));
        }
    };
    if tokio::time::timeout(deadline, receive).await.is_err() {
        panic!("timed out after {deadline:?} waiting for {what}; recorded: {seen:?}");
    }
    seen
}

/// The outcomes of one job among `events`, in the order recorded.
pub fn outcomes_of(events: &[JobEvent], job_id: i64) -> Vec<JobOutcome> {
    events
        .iter()
        .filter(|event| event.job_id == job_id)
        .map(|event| event.outcome.clone())
        .collect()
}

/// Whether every job of `ids` has an outcome among `events`.
pub fn all_recorded(events: &[JobEvent], ids: &[i64]) -> bool {
    ids.iter()
        .all(|id| events.iter().any(|event| event.job_id == *id))
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's Python, created by the test command
/// (`./scripts/test.sh`) with procrastinate installed.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("DAWDLE_PYTHON") {
        return PathBuf::from(python);
    }
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: run ./scripts/test.sh, which creates the virtual environment \
         with the Python library the compatibility tests use",
        python.display()
    );
    python
}

pub fn python_script(name: &str) -> PathBuf {
    // From the checkout's root, so that other crates' tests can include
    // this module too.
    repo_root().join("crates/dawdle/tests/python").join(name)
}

/// Output of one run of a Python script.
#[derive(Debug)]
pub struct PythonRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PythonRun {
    /// The single JSON document the script printed.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "python printed no JSON ({error}); stdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the script's output unless it exited 0.
    pub fn expect_success(self) -> Self {
        assert!(
            self.success,
            "python failed; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The virtual environment's Python, set up to import the compat app against
/// `database_url`, killed if dropped.
pub fn python_command(database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command
        .env("DAWDLE_COMPAT_DATABASE_URL", database_url)
        .env("PYTHONPATH", python_script(""))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command
}

/// Runs `program args…` with the compat database URL set, feeding `stdin`,
/// bounded by a deadline so a hung interpreter fails the test instead of
/// hanging the suite.
pub async fn run_python(database_url: &str, args: &[&str], stdin: &str) -> PythonRun {
    let mut child = python_command(database_url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut input = child.stdin.take().expect("python stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write to python");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("python did not finish within 120 s")
        .expect("wait for python");
    PythonRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs one of the scripts in tests/python.
pub async fn run_script(database_url: &str, script: &str, args: &[&str], stdin: &str) -> PythonRun {
    let path = python_script(script);
    let mut all = vec![path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run_python(database_url, &all, stdin).await
}

/// An empty database with Procrastinate's own schema, applied by the
/// library's `procrastinate schema --apply`.
pub async fn procrastinate_database() -> dawdle::testing::TestDatabase {
    let db = dawdle::testing::TestDatabase::empty().await;
    run_python(
        &db.url(),
        &[
            "-m",
            "procrastinate",
            "--app=compat_app.app",
            "schema",
            "--apply",
        ],
        "",
    )
    .await
    .expect_success();
    db
}
