//! Compatibility with the real Python library (procrastinate 3.10.0, from the
//! virtual environment the test command creates), against databases whose
//! schema only `dawdle::schema::apply` created.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dawdle::cron::Schedule;
use dawdle::testing::{eventually, TestDatabase};
use dawdle::{
    defer, defer_batch, DeferError, JobContext, NewJob, Periodic, Registry, Task, TaskError,
    Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::AsyncReadExt;

/// Job specs in the JSON form defer.py reads, and the same jobs as NewJob.
fn specs() -> (Value, Vec<NewJob>) {
    let at = "2031-05-06T07:08:09+00:00";
    let specs = json!([
        {"task_name": "compat.echo", "args": {"a": 1, "nested": {"b": [1, 2]}}},
        {"task_name": "compat.echo", "args": {}, "queue": "email", "priority": 7},
        {"task_name": "compat.echo", "args": {"x": "y"}, "lock": "user-1"},
        {"task_name": "compat.echo", "args": {}, "queueing_lock": "only-one"},
        {"task_name": "compat.echo", "args": {}, "schedule_at": at, "queue": "later"},
    ]);
    let at: DateTime<Utc> = at.parse().unwrap();
    let jobs = vec![
        NewJob::new("compat.echo", json!({"a": 1, "nested": {"b": [1, 2]}})).unwrap(),
        NewJob::new("compat.echo", json!({}))
            .unwrap()
            .queue("email")
            .priority(7),
        NewJob::new("compat.echo", json!({"x": "y"}))
            .unwrap()
            .lock("user-1"),
        NewJob::new("compat.echo", json!({}))
            .unwrap()
            .queueing_lock("only-one"),
        NewJob::new("compat.echo", json!({}))
            .unwrap()
            .scheduled_at(at)
            .queue("later"),
    ];
    (specs, jobs)
}

type Row = (
    String,
    String,
    i32,
    Option<String>,
    Option<String>,
    Value,
    String,
    Option<DateTime<Utc>>,
    i32,
);

/// Everything about the jobs and their history that does not depend on ids or
/// on when the test ran.
async fn snapshot(pool: &PgPool) -> (Vec<Row>, Vec<Vec<(String, bool)>>) {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT queue_name, task_name, priority, lock, queueing_lock, args, status::text,
                scheduled_at, attempts
         FROM procrastinate_jobs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM procrastinate_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut histories = Vec::new();
    for id in ids {
        // (type, whether `at` equals the job's scheduled_at)
        let history: Vec<(String, bool)> = sqlx::query_as(
            "SELECT e.type::text, e.at IS NOT DISTINCT FROM j.scheduled_at
             FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
             WHERE e.job_id = $1 ORDER BY e.id",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap();
        histories.push(history);
    }
    (rows, histories)
}

#[tokio::test]
async fn python_defer_and_batch_defer_store_what_rust_defer_stores() {
    let (specs, jobs) = specs();
    for mode in ["single", "batch"] {
        let python_db = TestDatabase::with_schema().await;
        let rust_db = TestDatabase::with_schema().await;

        let request = json!({"mode": mode, "jobs": specs}).to_string();
        let out = common::run_script(&python_db.url(), "defer.py", &[], &request)
            .await
            .expect_success()
            .json();
        assert_eq!(out["ids"].as_array().map(Vec::len), Some(5), "{out}");

        if mode == "single" {
            for job in &jobs {
                defer(rust_db.pool(), job).await.unwrap();
            }
        } else {
            defer_batch(rust_db.pool(), &jobs).await.unwrap();
        }

        let python = snapshot(python_db.pool()).await;
        let rust = snapshot(rust_db.pool()).await;
        assert_eq!(python, rust, "mode {mode}");
        // And what both stored is what was asked for.
        assert_eq!(python.0[1].0, "email");
        assert_eq!(python.0[1].2, 7);
        assert_eq!(
            python.1[4],
            [
                ("scheduled".to_string(), true),
                ("deferred".to_string(), false)
            ]
        );
    }
}

#[tokio::test]
async fn already_enqueued_works_both_ways_on_our_index() {
    let db = TestDatabase::with_schema().await;
    defer(
        db.pool(),
        &NewJob::new("compat.echo", json!({}))
            .unwrap()
            .queueing_lock("k1"),
    )
    .await
    .unwrap();
    let request =
        json!([{"task_name": "compat.echo", "args": {}, "queueing_lock": "k1"}]).to_string();
    let out = common::run_script(&db.url(), "defer.py", &[], &request)
        .await
        .expect_success()
        .json();
    assert_eq!(out["error"], "AlreadyEnqueued", "{out}");
    assert!(out["message"].as_str().unwrap().contains("k1"), "{out}");

    let request =
        json!([{"task_name": "compat.echo", "args": {}, "queueing_lock": "k2"}]).to_string();
    common::run_script(&db.url(), "defer.py", &[], &request)
        .await
        .expect_success();
    let error = defer(
        db.pool(),
        &NewJob::new("compat.echo", json!({}))
            .unwrap()
            .queueing_lock("k2"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, DeferError::AlreadyEnqueued { queueing_lock } if queueing_lock == "k2"),
        "{error}"
    );
}

#[derive(Debug, sqlx::FromRow)]
struct Outcome {
    status: String,
    attempts: i32,
    worker_id: Option<i64>,
    timestamps_in_order: Option<bool>,
}

async fn outcome(pool: &PgPool, id: i64) -> Outcome {
    sqlx::query_as(
        "SELECT status::text AS status, attempts, worker_id,
                created_at <= started_at AND started_at <= finished_at AS timestamps_in_order
         FROM procrastinate_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_python_worker_runs_jobs_rust_deferred() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let ok = defer(
        pool,
        &NewJob::new("compat.succeed", json!({"user_id": 1})).unwrap(),
    )
    .await
    .unwrap();
    let locked_a = defer(
        pool,
        &NewJob::new("compat.echo", json!({"n": 1}))
            .unwrap()
            .lock("L"),
    )
    .await
    .unwrap();
    let locked_b = defer(
        pool,
        &NewJob::new("compat.echo", json!({"n": 2}))
            .unwrap()
            .lock("L"),
    )
    .await
    .unwrap();
    let failing = defer(
        pool,
        &NewJob::new("compat.fail", json!({"message": "smtp refused"}))
            .unwrap()
            .queue("email"),
    )
    .await
    .unwrap();
    let unknown = defer(
        pool,
        &NewJob::new("compat.no_such_task", json!({})).unwrap(),
    )
    .await
    .unwrap();

    let out = common::run_script(&db.url(), "work.py", &["--deadline", "90"], "")
        .await
        .expect_success()
        .json();
    assert_eq!(out["ok"], true, "{out}");

    for id in [ok, locked_a, locked_b] {
        let outcome = outcome(pool, id).await;
        assert_eq!(outcome.status, "succeeded", "job {id}");
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.timestamps_in_order, Some(true), "job {id}");
        // The worker unregistered on exit, which unlinks its jobs.
        assert_eq!(outcome.worker_id, None);
        assert_eq!(
            common::event_types(pool, id).await,
            ["deferred", "started", "succeeded"]
        );
    }
    // Jobs of one lock ran one after the other, in id order.
    let (a_finished, b_started): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT finished_at FROM procrastinate_jobs WHERE id = $1),
                (SELECT started_at FROM procrastinate_jobs WHERE id = $2)",
    )
    .bind(locked_a)
    .bind(locked_b)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(a_finished <= b_started);

    // max_attempts=2, wait=0: three runs, then failed.
    let failed = outcome(pool, failing).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 3));
    assert_eq!(failed.timestamps_in_order, Some(true));
    assert_eq!(
        common::event_types(pool, failing).await,
        [
            "deferred",
            "started",
            "scheduled",
            "deferred_for_retry",
            "started",
            "scheduled",
            "deferred_for_retry",
            "started",
            "failed"
        ]
    );
    let unknown_outcome = outcome(pool, unknown).await;
    assert_eq!(
        (unknown_outcome.status.as_str(), unknown_outcome.attempts),
        ("failed", 1)
    );

    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "the worker unregistered");
}

#[tokio::test]
async fn the_python_shell_lists_retries_and_cancels_on_our_database() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let waiting = defer(
        pool,
        &NewJob::new("compat.echo", json!({"k": "v"}))
            .unwrap()
            .queue("email"),
    )
    .await
    .unwrap();
    let failed = defer(
        pool,
        &NewJob::new("compat.fail", json!({})).unwrap().lock("L9"),
    )
    .await
    .unwrap();
    sqlx::query("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = $1")
        .bind(failed)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("SELECT procrastinate_finish_job_v1($1, 'failed', false)")
        .bind(failed)
        .execute(pool)
        .await
        .unwrap();

    let shell = |args: Vec<String>| {
        let url = db.url();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = common::run_script(&url, "shell.py", &args, "")
                .await
                .expect_success()
                .json();
            assert_eq!(out["ok"], true, "{out}");
            out["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };

    let jobs = shell(vec!["list_jobs".into(), "details".into()]).await;
    assert!(
        jobs.contains(&format!("#{waiting} compat.echo on email - [todo]")),
        "{jobs}"
    );
    assert!(
        jobs.contains(&format!("#{failed} compat.fail on default - [failed]")),
        "{jobs}"
    );

    let queues = shell(vec!["list_queues".into()]).await;
    assert!(queues.contains("email: 1 jobs (todo: 1"), "{queues}");
    assert!(queues.contains("default: 1 jobs"), "{queues}");
    let tasks = shell(vec!["list_tasks".into()]).await;
    assert!(tasks.contains("compat.fail: 1 jobs"), "{tasks}");
    let locks = shell(vec!["list_locks".into()]).await;
    assert!(locks.contains("L9: 1 jobs"), "{locks}");

    let retried = shell(vec!["retry".into(), failed.to_string()]).await;
    assert!(retried.contains("[todo]"), "{retried}");
    assert_eq!(common::status(pool, failed).await, "todo");
    assert_eq!(
        common::event_types(pool, failed).await.last().unwrap(),
        "retried"
    );

    let cancelled = shell(vec!["cancel".into(), waiting.to_string()]).await;
    assert!(cancelled.contains("[cancelled]"), "{cancelled}");
    assert_eq!(common::status(pool, waiting).await, "cancelled");
    let finished: bool =
        sqlx::query_scalar("SELECT finished_at IS NOT NULL FROM procrastinate_jobs WHERE id = $1")
            .bind(waiting)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(finished);
}

/// The Rust side of periodic.py's `compat.tick`.
#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    timestamp: i64,
    by: String,
}

impl Task for Tick {
    const NAME: &'static str = "compat.tick";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// (latest tick deferred, ticks deferred by Python, ticks deferred by Rust)
async fn ticks(pool: &PgPool) -> (Option<i64>, i64, i64) {
    sqlx::query_as(
        "SELECT max((args->>'timestamp')::bigint),
                count(*) FILTER (WHERE args->>'by' = 'python'),
                count(*) FILTER (WHERE args->>'by' = 'rust')
         FROM procrastinate_jobs WHERE task_name = 'compat.tick'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn python_and_rust_workers_defer_each_periodic_tick_once_between_them() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();

    // Python's worker alone first: its periodic deferrer runs on our schema.
    let mut python = common::python_command(&db.url())
        .arg(common::python_script("periodic.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start periodic.py");
    eventually(
        Duration::from_secs(30),
        "Python to defer a tick",
        || async { ticks(&pool).await.1 > 0 },
    )
    .await;

    // A Rust worker with the same task on the same schedule joins.
    let mut registry = Registry::new();
    registry.register::<Tick>();
    let mut every_second = Periodic::new("compat.tick", Schedule::parse("* * * * * *").unwrap());
    every_second
        .args
        .insert("by".to_string(), Value::from("rust"));
    registry.add_periodic(every_second);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(pool.clone(), registry, WorkerConfig::default());
    let rust = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let joined = ticks(&pool).await.0.unwrap();
    eventually(
        Duration::from_secs(30),
        "three ticks with both deferring",
        || async { ticks(&pool).await.0.unwrap() >= joined + 3 },
    )
    .await;

    // Python leaves; Rust carries on alone.
    drop(python.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), python.wait())
        .await
        .expect("periodic.py stopped within 30 s")
        .unwrap();
    let mut stderr = String::new();
    python
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "periodic.py failed:\n{stderr}");
    let left = ticks(&pool).await.0.unwrap();
    eventually(Duration::from_secs(30), "Rust to defer alone", || async {
        ticks(&pool).await.0.unwrap() >= left + 2
    })
    .await;
    eventually(Duration::from_secs(30), "every tick to run", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    stop.send(()).unwrap();
    rust.await.unwrap().unwrap();

    // One job per tick, no tick missed, whoever deferred it; both did some.
    let per_tick: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT (args->>'timestamp')::bigint, count(*) FROM procrastinate_jobs
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        per_tick.iter().all(|(_, jobs)| *jobs == 1),
        "a tick was deferred twice: {per_tick:?}"
    );
    for pair in per_tick.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1, "a tick was missed: {per_tick:?}");
    }
    let (_, by_python, by_rust) = ticks(&pool).await;
    assert!(
        by_python > 0 && by_rust > 0,
        "{by_python} by Python, {by_rust} by Rust"
    );
    // Both sides keyed the schedule the same way (task, default periodic id).
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT task_name, periodic_id FROM procrastinate_periodic_defers")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(keys, [("compat.tick".to_string(), String::new())]);
}

/// Where the Python library keeps its own schema (`procrastinate schema
/// --apply` runs this file).
fn python_schema_sql() -> String {
    let output = std::process::Command::new(common::python())
        .args([
            "-c",
            "import os, procrastinate; \
             print(os.path.join(os.path.dirname(procrastinate.__file__), 'sql', 'schema.sql'))",
        ])
        .output()
        .expect("run python");
    assert!(output.status.success(), "{output:?}");
    let path = String::from_utf8(output.stdout).unwrap();
    std::fs::read_to_string(path.trim()).expect("read the library's schema.sql")
}

/// The SQLSTATE and message of what `sql` raised, or `None` if it did not.
async fn raised(pool: &PgPool, sql: &str) -> Option<(String, String)> {
    let error = sqlx::raw_sql(sql).execute(pool).await.err()?;
    let database = error.as_database_error().expect("a database error");
    Some((
        database
            .code()
            .map(|code| code.into_owned())
            .unwrap_or_default(),
        database.message().to_string(),
    ))
}

#[tokio::test]
async fn the_functions_raise_what_the_python_librarys_schema_raises() {
    let ours = TestDatabase::with_schema().await;
    let theirs = TestDatabase::empty().await;
    sqlx::raw_sql(&python_schema_sql())
        .execute(theirs.pool())
        .await
        .expect("the library's schema applies");
    // The same rows in both: 1 todo, 2 succeeded, 3 doing (no worker).
    for db in [&ours, &theirs] {
        sqlx::raw_sql(
            "INSERT INTO procrastinate_jobs (id, queue_name, task_name, args, status)
             VALUES (1, 'q', 't', '{}', 'todo'), (2, 'q', 't', '{}', 'succeeded'),
                    (3, 'q', 't', '{}', 'doing')",
        )
        .execute(db.pool())
        .await
        .unwrap();
    }
    let misuse = [
        "SELECT procrastinate_finish_job_v1(1, 'todo', false)",
        "SELECT procrastinate_finish_job_v1(1, 'cancelled', true)",
        "SELECT procrastinate_finish_job_v1(999999, 'succeeded', false)",
        "SELECT procrastinate_finish_job_v1(2, 'failed', false)",
        "SELECT procrastinate_finish_job_v1(2, 'succeeded', true)",
        "SELECT procrastinate_retry_job_v1(1, now(), NULL, NULL, NULL)",
        "SELECT procrastinate_retry_job_v1(999999, now(), NULL, NULL, NULL)",
        "SELECT procrastinate_retry_job_v2(1, now(), NULL, NULL, NULL)",
        "SELECT procrastinate_retry_job_v2(2, now(), NULL, NULL, NULL)",
        "SELECT procrastinate_retry_job_v2(999999, now(), NULL, NULL, NULL)",
        "SELECT procrastinate_cancel_job_v1(999999, true, false)",
        "SELECT procrastinate_cancel_job_v1(2, true, true)",
    ];
    for sql in misuse {
        let expected = raised(theirs.pool(), sql).await;
        let got = raised(ours.pool(), sql).await;
        assert_eq!(got, expected, "{sql}");
    }
    // And they do raise, so the comparison means something.
    assert_eq!(
        raised(ours.pool(), misuse[2]).await,
        Some((
            "P0001".to_string(),
            r#"Job was not found or not in "doing" or "todo" status (job id: 999999)"#.to_string()
        ))
    );
}

/// Where dawdle answers misuse differently from Procrastinate's own schema
/// on purpose (ARCHITECTURE.md, "Deliberate differences", says why): case
/// name prefix of tests/python/misuse.py, and the reason.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "cancel/doing_abort/abort_true/",
        "a repeated abort request records no second event",
    ),
    (
        "cancel/doing_abort_twice",
        "a repeated abort request records no second event",
    ),
    (
        "direct/abort_requested_again_on_doing_abort_job",
        "a repeated abort request records no second event",
    ),
    (
        "direct/status_doing_to_cancelled",
        "a job cancelled while doing records its cancelled event",
    ),
    (
        "defer/null_array",
        "a batch defer of nothing returns an empty array",
    ),
    (
        "defer/empty_array",
        "a batch defer of nothing returns an empty array",
    ),
    (
        "defer/null_priority",
        "NULL priority and args default to 0 and {}",
    ),
    (
        "defer/null_args",
        "NULL priority and args default to 0 and {}",
    ),
    (
        "periodic/null_priority",
        "NULL priority and args default to 0 and {}",
    ),
    (
        "periodic/null_args",
        "NULL priority and args default to 0 and {}",
    ),
    ("defer/args_", "args must be a JSON object"),
    ("periodic/args_", "args must be a JSON object"),
    ("direct/args_array", "args must be a JSON object"),
    ("direct/insert_job/args_array", "args must be a JSON object"),
    (
        "defer/queue_name_128_chars",
        "queue names too long for a notification channel are deferred",
    ),
    (
        "defer/queue_name_41_chars",
        "queue names too long for a notification channel are deferred",
    ),
    (
        "defer/queue_name_21_two_byte_chars",
        "queue names too long for a notification channel are deferred",
    ),
    (
        "periodic/queue_name_41_chars",
        "queue names too long for a notification channel are deferred",
    ),
    (
        "worker/direct_truncate_",
        "TRUNCATE of the workers unlinks running jobs instead of failing",
    ),
    (
        "direct/doing_abort_job_back_to_todo",
        "a job put back to todo by hand drops its abort request",
    ),
    (
        "direct/failed_abort_job_back_to_todo",
        "a job put back to todo by hand drops its abort request",
    ),
    (
        "direct/doing_job_to_todo_with_abort_requested",
        "a job put back to todo by hand drops its abort request",
    ),
    (
        "direct/worker_id_missing/",
        "no foreign key from jobs to workers (statement-level checks)",
    ),
    (
        "direct/insert_job/doing_missing_worker",
        "no foreign key from jobs to workers (statement-level checks)",
    ),
    (
        "direct/update_job_id_with_events",
        "no foreign key from events to jobs (statement-level triggers)",
    ),
    (
        "direct/insert_event_missing_job",
        "no foreign key from events to jobs (statement-level triggers)",
    ),
    (
        "direct/update_event_job_id_missing",
        "no foreign key from events to jobs (statement-level triggers)",
    ),
    (
        "direct/insert_event_type_error",
        "the extra event type 'error'",
    ),
];

/// One case's record, with what differs by design in every case evened
/// out: dawdle's jobs hold a worker only while running, and one statement's
/// events of several jobs may come in another order (each job's in its own).
fn normalized(case: &Value) -> Value {
    let mut case = case.clone();
    if let Some(jobs) = case["after"]["jobs"].as_array_mut() {
        for job in jobs {
            if job["status"] != json!("doing") {
                job["worker"] = Value::Null;
            }
        }
    }
    if let Some(events) = case["after"]["events"].as_array_mut() {
        events.sort_by_key(|event| event[0].to_string());
    }
    case
}

#[tokio::test]
async fn misuse_is_answered_as_procrastinate_s_own_schema_answers_it() {
    let procrastinate = common::procrastinate_database().await;
    let ours = TestDatabase::with_schema().await;
    let run = |url: String| async move {
        common::run_script(&url, "misuse.py", &[], "")
            .await
            .expect_success()
            .json()["cases"]
            .as_array()
            .expect("a list of cases")
            .clone()
    };
    let theirs = run(procrastinate.url()).await;
    let mine = run(ours.url()).await;
    assert_eq!(theirs.len(), mine.len());
    assert!(theirs.len() > 300, "only {} cases", theirs.len());

    let mut unexpected = Vec::new();
    let mut deliberate_seen = std::collections::BTreeSet::new();
    for (their, my) in theirs.iter().zip(&mine) {
        let name = their["case"].as_str().expect("a case name");
        assert_eq!(my["case"], their["case"]);
        let deliberate = DELIBERATE
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix));
        let same = normalized(their) == normalized(my);
        match (same, deliberate) {
            (true, None) => {}
            (false, Some((prefix, _))) => {
                deliberate_seen.insert(*prefix);
            }
            (false, None) => unexpected.push(format!(
                "{name}:\n  Procrastinate: {}\n  dawdle:        {}",
                normalized(their),
                normalized(my)
            )),
            (true, Some((_, reason))) => unexpected.push(format!(
                "{name}: now answered alike, though listed as \"{reason}\""
            )),
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} cases differ unexpectedly:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    for (prefix, reason) in DELIBERATE {
        assert!(
            deliberate_seen.contains(prefix),
            "no case matched {prefix} ({reason})"
        );
    }
}
