//! `dawdle schema adopt` on databases that Procrastinate's own tooling
//! created and filled: the real Python library (the pinned release in the
//! test virtual environment) applies its schema and writes the jobs, a
//! Python worker and a dawdle worker run while the database is adopted, and
//! afterwards nothing is lost, the timestamps agree with the history, and
//! the schema is the one `dawdle schema apply` creates.

#[path = "../../dawdle/tests/common/mod.rs"]
mod common;
#[path = "support/runbook_blocks.rs"]
mod runbook_blocks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dawdle::testing::{eventually, holds_within, TestDatabase};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn dawdle(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dawdle"));
    command
        .env("JOB_QUEUE_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// Runs `dawdle ARGS…` to its end: (success, stdout, stderr).
async fn run_dawdle(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        dawdle(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("dawdle {args:?} did not finish within 180 s"))
    .expect("run dawdle");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn adopt(url: &str, args: &[&str]) -> String {
    let mut all = vec!["schema", "adopt"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run_dawdle(url, &all).await;
    assert!(ok, "adopt failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Jobs of `queue` that have not succeeded.
async fn not_succeeded(pool: &PgPool, queue: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = $1 AND status <> 'succeeded'",
    )
    .bind(queue)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// (queue, status) → jobs.
async fn status_counts(pool: &PgPool) -> BTreeMap<(String, String), i64> {
    sqlx::query_as::<_, (String, String, i64)>(
        "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(queue, status, count)| ((queue, status), count))
    .collect()
}

/// event type → events, among events with ids in `ids`.
async fn event_counts(pool: &PgPool, after_id: i64) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT coalesce(type::text, '(none)'), count(*) FROM procrastinate_events
         WHERE id > $1 GROUP BY 1",
    )
    .bind(after_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every job, as the Procrastinate interface sees it, one line each. The
/// worker of a finished job is left out: dawdle's jobs hold a worker only
/// while running, and the adoption unlinks finished ones (Procrastinate
/// keeps the id of a worker that is usually long gone).
/// Before Procrastinate 3.1 jobs had no worker at all.
async fn job_rows(pool: &PgPool) -> BTreeMap<i64, String> {
    let worker = if scalar(
        pool,
        "SELECT count(*) FROM pg_attribute
         WHERE attrelid = 'procrastinate_jobs'::regclass AND attname = 'worker_id'",
    )
    .await
        == 1
    {
        "CASE WHEN status = 'doing' THEN worker_id END"
    } else {
        "NULL"
    };
    lines_by_id(
        pool,
        &format!(
            "SELECT id, concat_ws(' | ', queue_name, task_name, priority, lock, queueing_lock,
                                   args::text, status, scheduled_at, attempts, abort_requested,
                                   {worker})
             FROM procrastinate_jobs"
        ),
    )
    .await
}

/// Every event, one line each.
async fn event_rows(pool: &PgPool) -> BTreeMap<i64, String> {
    lines_by_id(
        pool,
        "SELECT id, concat_ws(' | ', job_id, type, at) FROM procrastinate_events",
    )
    .await
}

/// (id, line) rows of `sql`, by id.
async fn lines_by_id(pool: &PgPool, sql: &str) -> BTreeMap<i64, String> {
    sqlx::query_as::<_, (i64, String)>(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .into_iter()
        .collect()
}

async fn periodic_rows(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ', task_name, defer_timestamp, job_id, periodic_id)
         FROM procrastinate_periodic_defers ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Jobs whose runbook timestamps disagree with their history: created_at is
/// when the job was deferred, started_at when it last started (none while
/// todo), finished_at when it ended (none while todo or doing).
///
/// In the queues `live`, jobs may have been started by dawdle's functions
/// since the adoption, which stamp started_at with the clock at the claim
/// (so that one lock's jobs never seem to overlap) and the event with the
/// transaction's start: there started_at lies between the two.
async fn timestamp_mismatches(pool: &PgPool, live: &[&str]) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ', j.id, j.status, j.created_at, h.deferred_at, j.started_at,
                          h.started_at, j.finished_at, h.finished_at)
         FROM procrastinate_jobs AS j
         CROSS JOIN LATERAL (
             SELECT min(at) FILTER (WHERE type = 'deferred') AS deferred_at,
                    max(at) FILTER (WHERE type = 'started') AS started_at,
                    max(at) FILTER (WHERE type IN ('succeeded', 'failed', 'cancelled', 'aborted'))
                        AS finished_at
             FROM procrastinate_events WHERE job_id = j.id) AS h
         WHERE j.created_at IS DISTINCT FROM h.deferred_at
            OR CASE WHEN j.queue_name = ANY($1) AND j.status <> 'todo'
                    THEN j.started_at IS NULL
                         OR j.started_at NOT BETWEEN h.started_at
                                             AND coalesce(j.finished_at, now())
                    ELSE j.started_at IS DISTINCT FROM
                             CASE WHEN j.status = 'todo' THEN NULL ELSE h.started_at END
               END
            OR j.finished_at IS DISTINCT FROM
                   CASE WHEN j.status IN ('todo', 'doing') THEN NULL ELSE h.finished_at END
         ORDER BY j.id LIMIT 20",
    )
    .bind(live)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The schema as the catalog has it: columns, constraints, indexes,
/// triggers, functions (with a digest of their bodies), types, tables and
/// sequences, and dawdle's migrations when it has any, one line each. The
/// adoption's own bookkeeping table is left out: only an adopted database
/// has it.
async fn catalog(pool: &PgPool) -> BTreeSet<String> {
    let migrations = if scalar(
        pool,
        "SELECT count(*) FROM pg_class WHERE relname = 'dawdle_migrations'",
    )
    .await
        == 1
    {
        "SELECT format('migration %s %s', version, name) FROM dawdle_migrations"
    } else {
        "SELECT NULL::text WHERE false"
    };
    sqlx::query_scalar::<_, String>(&format!(
        "SELECT format('column %s.%s %s not null=%s default=%s options=%s', c.relname, a.attname,
                       format_type(a.atttypid, a.atttypmod), a.attnotnull,
                       pg_get_expr(d.adbin, d.adrelid), a.attoptions)
         FROM pg_attribute AS a
         JOIN pg_class AS c ON c.oid = a.attrelid
         LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'c')
           AND c.relname <> 'dawdle_adoption' AND a.attnum > 0 AND NOT a.attisdropped
         UNION ALL
         SELECT format('constraint %s %s %s', conrelid::regclass, conname,
                       pg_get_constraintdef(oid))
         FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace AND conrelid <> 0
           AND conrelid::regclass::text <> 'dawdle_adoption'
         UNION ALL
         SELECT format('index %s', pg_get_indexdef(i.indexrelid))
         FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
         WHERE c.relnamespace = 'public'::regnamespace AND c.relname <> 'dawdle_adoption'
         UNION ALL
         SELECT format('trigger %s', pg_get_triggerdef(oid))
         FROM pg_trigger WHERE NOT tgisinternal
         UNION ALL
         SELECT format('function %s %s', oid::regprocedure, md5(prosrc))
         FROM pg_proc WHERE pronamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('type %s %s', t.typname,
                       (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                        FROM pg_enum WHERE enumtypid = t.oid))
         FROM pg_type AS t
         WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'c')
           AND t.typname <> 'dawdle_adoption'
         UNION ALL
         SELECT format('relation %s', relname) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')
           AND relname NOT LIKE 'dawdle_adoption%'
         UNION ALL
         {migrations}"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// What differs between an adopted database's catalog and a fresh one's.
/// One difference is allowed: an adopted database keeps Procrastinate's own
/// text of the check that a todo job carries no abort request (`AND
/// (abort_requested = true)`), equal in meaning to dawdle's (`AND
/// abort_requested`); rewriting it would mean a full scan under an exclusive
/// lock for nothing.
async fn catalog_differences(adopted: &PgPool) -> String {
    let fresh = TestDatabase::with_schema().await;
    let want = catalog(fresh.pool()).await;
    let got: BTreeSet<String> = catalog(adopted)
        .await
        .into_iter()
        .map(|line| {
            if line.starts_with("constraint procrastinate_jobs check_not_todo_abort_requested ") {
                line.replace("AND (abort_requested = true))", "AND abort_requested)")
            } else {
                line
            }
        })
        .collect();
    let mut text = String::new();
    for line in want.difference(&got) {
        text.push_str(&format!("  missing:  {line}\n"));
    }
    for line in got.difference(&want) {
        text.push_str(&format!("  extra:    {line}\n"));
    }
    text
}

/// A process started in the background, killed if dropped.
struct Background {
    child: Child,
    what: &'static str,
}

impl Background {
    /// Waits for it to exit by itself: (success, stdout, stderr).
    async fn finish(self, deadline: Duration) -> (bool, String, String) {
        let output = tokio::time::timeout(deadline, self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish within {deadline:?}", self.what))
            .expect("wait for a child process");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// SIGTERM, then waits for it.
    async fn stop(self) -> (bool, String, String) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        self.finish(Duration::from_secs(60)).await
    }
}

fn python_worker(url: &str, args: &[&str]) -> Background {
    let mut all = vec![common::python_script("work.py")
        .to_str()
        .expect("utf-8 path")
        .to_string()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    let child = common::python_command(url)
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python worker");
    Background {
        child,
        what: "the Python worker",
    }
}

fn dawdle_worker(url: &str, queue: &str) -> Background {
    let child = dawdle(url)
        .args([
            "worker",
            "--queues",
            queue,
            "--poll-interval",
            "0.2",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a dawdle worker");
    Background {
        child,
        what: "the dawdle worker",
    }
}

struct Marker(PathBuf);

impl Marker {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "dawdle-adopt-marker-{}-{:08x}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    fn touch(&self) {
        std::fs::write(&self.0, b"go").expect("create the marker file");
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|now| now.subsec_nanos())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_live_procrastinate_database_is_adopted_while_python_and_dawdle_workers_drain_it() {
    const PYTHON_JOBS: i64 = 300;
    const DAWDLE_JOBS: i64 = 2000;
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    let marker = Marker::new();
    let filled = common::run_script(
        &url,
        "fill.py",
        &[],
        &json!({
            "history": 400,
            "python_jobs": PYTHON_JOBS,
            "dawdle_jobs": DAWDLE_JOBS,
            "marker": marker.path(),
        })
        .to_string(),
    )
    .await
    .expect_success()
    .json();
    let stuck = filled["stuck_job"].as_i64().unwrap();
    let hold = filled["hold_job"].as_i64().unwrap();
    let python_worker_id = filled["worker_id"].as_i64().unwrap();

    // The dry run says what it would do and changes nothing.
    let plan = adopt(&url, &["--dry-run"]).await;
    assert!(plan.contains("dry run: nothing is changed"), "{plan}");
    assert!(plan.contains("3.4 or later"), "{plan}");
    assert!(plan.contains("locks held by running jobs: 1"), "{plan}");
    assert!(plan.contains("periodic defers: 2"), "{plan}");
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(
        !ok,
        "schema check passed on an unadopted database:\n{check}"
    );
    assert!(check.contains("dawdle schema adopt"), "{check}");
    let (ok, _, apply) = run_dawdle(&url, &["schema", "apply"]).await;
    assert!(!ok);
    assert!(apply.contains("dawdle schema adopt"), "{apply}");
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'dawdle%'"
        )
        .await,
        0,
        "the dry run, check or apply changed the database"
    );

    let statuses_before = status_counts(pool).await;
    let jobs_before = job_rows(pool).await;
    let events_before = event_rows(pool).await;
    let periodic_before = periodic_rows(pool).await;
    let last_event = *events_before.keys().max().unwrap();
    for status in [
        "succeeded",
        "failed",
        "cancelled",
        "aborted",
        "todo",
        "doing",
    ] {
        assert!(
            statuses_before.keys().any(|(_, s)| s == status),
            "the filled database has no {status} job: {statuses_before:?}"
        );
    }

    // Both workers run through the adoption: the Python one holds a job in
    // doing all along; the dawdle one waits for the schema, then drains.
    // The Python worker runs as a service does (listening, polling) until
    // SIGTERM.
    let python = python_worker(
        &url,
        &[
            "--wait",
            "--concurrency",
            "2",
            "--deadline",
            "120",
            "python",
        ],
    );
    eventually(
        Duration::from_secs(60),
        "the Python worker to start the held job",
        async || common::status(pool, hold).await == "doing",
    )
    .await;
    let rust = dawdle_worker(&url, "dawdle");
    let report = adopt(&url, &["--batch-size", "50", "--lock-timeout", "500ms"]).await;
    assert!(report.contains("switched:"), "{report}");
    assert!(report.contains("backfill:"), "{report}");
    assert!(report.contains("the schema is current"), "{report}");
    let held = common::status(pool, hold).await;
    marker.touch();
    // Not `eventually`: if the Python worker does not drain its queue, what
    // it printed says why.
    let limit = Duration::from_secs(90);
    let drained = holds_within(limit, async || {
        not_succeeded(pool, "python").await == 0 || common::status(pool, hold).await == "aborted"
    })
    .await;
    if !drained {
        let statuses = status_counts(pool).await;
        let (_, stdout, stderr) = python.stop().await;
        // The end of what it printed, on a character boundary.
        let tail = |text: &str| {
            let from = text.char_indices().rev().nth(4000).map_or(0, |(at, _)| at);
            text[from..].to_string()
        };
        panic!(
            "timed out after {limit:?} waiting for the Python worker to drain its queue; \
             jobs by queue and status: {statuses:?}\nPython worker, the end of its \
             output:\n{}\n{}",
            tail(&stdout),
            tail(&stderr)
        );
    }
    let (ok, stdout, stderr) = python.stop().await;
    assert!(
        ok && held == "doing",
        "the held job was {held} after the adoption; Python worker:\n{stdout}\n{stderr}"
    );
    let limit = Duration::from_secs(60);
    let drained = holds_within(limit, async || not_succeeded(pool, "dawdle").await == 0).await;
    if !drained {
        let statuses = status_counts(pool).await;
        let (_, _, worker_log) = rust.stop().await;
        let from = worker_log
            .char_indices()
            .rev()
            .nth(8000)
            .map_or(0, |(at, _)| at);
        let warnings: Vec<&str> = worker_log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .take(40)
            .collect();
        panic!(
            "timed out after {limit:?} waiting for the dawdle worker to drain its queue; \
             jobs by queue and status: {statuses:?}\nits first warnings and errors:\n{}\n\
             the end of its log:\n{}",
            warnings.join("\n"),
            &worker_log[from..]
        );
    }
    let (_, worker_report, worker_log) = rust.stop().await;
    let worker_report: Value = serde_json::from_str(worker_report.trim())
        .unwrap_or_else(|_| panic!("the dawdle worker printed no report; its log:\n{worker_log}"));
    assert_eq!(
        worker_report["succeeded"],
        json!(DAWDLE_JOBS),
        "{worker_log}"
    );

    // Nothing lost: every job other than the workers' is as it was, every
    // event and periodic defer is still there, and the workers added exactly
    // one start and one success per job they ran.
    let statuses_after = status_counts(pool).await;
    for ((queue, status), count) in &statuses_before {
        let expected = match (queue.as_str(), status.as_str()) {
            ("python", "todo") | ("dawdle", "todo") => continue,
            _ => *count,
        };
        assert_eq!(
            statuses_after.get(&(queue.clone(), status.clone())),
            Some(&expected),
            "{queue}/{status}: before {statuses_before:?}, after {statuses_after:?}"
        );
    }
    let python_ran = PYTHON_JOBS + 1;
    assert_eq!(
        statuses_after.get(&("python".into(), "succeeded".into())),
        Some(&python_ran)
    );
    assert_eq!(
        statuses_after.get(&("dawdle".into(), "succeeded".into())),
        Some(&DAWDLE_JOBS)
    );
    let jobs_after = job_rows(pool).await;
    assert_eq!(jobs_after.len(), jobs_before.len());
    for (id, row) in &jobs_before {
        if row.starts_with("python |") || row.starts_with("dawdle |") {
            continue;
        }
        assert_eq!(jobs_after.get(id), Some(row), "job {id}");
    }
    let events_after = event_rows(pool).await;
    for (id, row) in &events_before {
        assert_eq!(events_after.get(id), Some(row), "event {id}");
    }
    let ran = python_ran + DAWDLE_JOBS;
    assert_eq!(
        event_counts(pool, last_event).await,
        BTreeMap::from([("started".to_string(), ran), ("succeeded".to_string(), ran)]),
        "the events the workers added"
    );
    assert_eq!(periodic_rows(pool).await, periodic_before);
    assert_eq!(
        scalar(
            pool,
            &format!("SELECT count(*) FROM procrastinate_workers WHERE id = {python_worker_id}")
        )
        .await,
        1,
        "the worker that holds the stuck job is still registered"
    );

    // The runbook's timestamps agree with the history, for the jobs adopted
    // and for those run since.
    assert_eq!(
        timestamp_mismatches(pool, &["python", "dawdle"]).await,
        Vec::<String>::new()
    );

    // The schema is exactly the one `dawdle schema apply` creates.
    let differences = catalog_differences(pool).await;
    assert!(
        differences.is_empty(),
        "adopted schema differs:\n{differences}"
    );
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(ok && check.contains("schema is current"), "{check}");
    assert_eq!(
        adopt(&url, &[]).await.lines().count(),
        1,
        "a second adoption is a no-op"
    );

    // Every later feature works on it: the lock still holds the job behind
    // the stuck one until the stuck one finishes; then Python runs it.
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'stuck' AND status = 'todo'"
        )
        .await,
        1
    );
    sqlx::query("SELECT procrastinate_finish_job_v1($1, 'succeeded', false)")
        .bind(stuck)
        .execute(pool)
        .await
        .unwrap();
    let (ok, stdout, stderr) = python_worker(&url, &["stuck"])
        .finish(Duration::from_secs(120))
        .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(not_succeeded(pool, "stuck").await, 0);
    for check in dawdle::admin::CHECKS {
        sqlx::query(check.sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|error| panic!("runbook query {}: {error}", check.name));
    }
    let (ok, stats, stderr) = run_dawdle(&url, &["stats", "--json"]).await;
    assert!(ok, "{stderr}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    let statuses_now = status_counts(pool).await;
    for ((queue, status), count) in &statuses_now {
        assert_eq!(
            stats["queues"][queue][status],
            json!(count),
            "dawdle stats, {queue}/{status}: {stats}"
        );
    }
    let failed: i64 = statuses_now
        .iter()
        .filter(|((_, status), _)| status == "failed")
        .map(|(_, count)| count)
        .sum();
    let shell = common::run_script(&url, "shell.py", &["list_jobs", "status=failed"], "")
        .await
        .expect_success()
        .json();
    assert_eq!(shell["ok"], json!(true), "{shell}");
    assert_eq!(
        shell["lines"].as_array().map(Vec::len),
        Some(failed as usize),
        "{shell}"
    );
}

/// Procrastinate's migration files, from the library installed in the test
/// virtual environment, in the order its docs apply them.
async fn procrastinate_migrations() -> Vec<(String, String)> {
    let run = common::run_python(
        "unused",
        &[
            "-c",
            "import os, procrastinate; print(os.path.join(os.path.dirname(procrastinate.__file__), 'sql', 'migrations'))",
        ],
        "",
    )
    .await
    .expect_success();
    let dir = PathBuf::from(run.stdout.trim());
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".sql")
                .then(|| (name, std::fs::read_to_string(&path).unwrap()))
        })
        .collect();
    files.sort();
    assert!(
        files.len() > 30 && files[0].0.starts_with("00.00.00_01"),
        "unexpected migrations in {}: {:?}",
        dir.display(),
        files.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    files
}

/// A database as Procrastinate's own migrations, from its first through
/// `last` (a file name prefix), leave it.
async fn migrated_to(migrations: &[(String, String)], last: &str) -> TestDatabase {
    let db = TestDatabase::empty().await;
    let mut found = false;
    for (name, sql) in migrations {
        sqlx::raw_sql(sql)
            .execute(db.pool())
            .await
            .unwrap_or_else(|error| panic!("migration {name}: {error}"));
        if name.starts_with(last) {
            found = true;
            break;
        }
    }
    assert!(found, "no migration {last}");
    db
}

/// Functions of Procrastinate 3.0's interface that dawdle's schema does not
/// define; an adopted 3.0 database keeps them.
const OLDER_INTERFACE: &[&str] = &[
    "procrastinate_defer_job_v1",
    "procrastinate_defer_periodic_job_v1",
    "procrastinate_fetch_job_v1",
];

/// Jobs in several states, written the way any release's row triggers
/// record them: by plain INSERT and UPDATE.
const RELEASE_ROWS: &str = "
    INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args, scheduled_at)
    VALUES ('q', 'done', NULL, NULL, '{\"n\": 1}', NULL),
           ('q', 'running', 'l1', NULL, '{}', NULL),
           ('q', 'waiting', 'l1', 'ql', '{}', NULL),
           ('q', 'later', NULL, NULL, '{}', now() + interval '1 hour'),
           ('q', 'dropped', NULL, NULL, '{}', NULL);
    UPDATE procrastinate_jobs SET status = 'doing' WHERE task_name IN ('done', 'running');
    UPDATE procrastinate_jobs SET status = 'succeeded', attempts = 1 WHERE task_name = 'done';
    UPDATE procrastinate_jobs SET status = 'cancelled' WHERE task_name = 'dropped';
";

#[tokio::test]
async fn every_procrastinate_3_schema_is_adopted_and_older_ones_are_refused_with_the_way_up() {
    let migrations = procrastinate_migrations().await;

    for (last, release) in [
        ("03.00.00_50", "3.0"),
        ("03.01.00_01", "3.1"),
        ("03.01.00_50", "3.1"),
        ("03.02.00_01", "3.2 or 3.3"),
        ("03.02.00_50", "3.2 or 3.3"),
        ("03.03.00_01", "3.2 or 3.3"),
        ("03.04.00_01", "3.4 or later"),
        ("03.04.00_50", "3.4 or later"),
    ] {
        let db = migrated_to(&migrations, last).await;
        let pool = db.pool();
        let url = db.url();
        sqlx::raw_sql(RELEASE_ROWS).execute(pool).await.unwrap();
        let statuses = status_counts(pool).await;
        let events = event_counts(pool, 0).await;
        let jobs = job_rows(pool).await;

        let plan = adopt(&url, &["--dry-run"]).await;
        assert!(
            plan.contains(&format!("release {release})"))
                || plan.contains(&format!("its {release} migrations")),
            "{last}: {plan}"
        );
        let report = adopt(&url, &["--batch-size", "2"]).await;
        assert!(report.contains("the schema is current"), "{last}: {report}");

        assert_eq!(status_counts(pool).await, statuses, "{last}");
        assert_eq!(event_counts(pool, 0).await, events, "{last}");
        assert_eq!(job_rows(pool).await, jobs, "{last}");
        assert_eq!(
            timestamp_mismatches(pool, &[]).await,
            Vec::<String>::new(),
            "{last}"
        );
        // Functions only older releases' Python code calls stay, so that
        // such clients keep working during and after the adoption.
        let differences: String = catalog_differences(pool)
            .await
            .lines()
            .filter(|line| {
                !OLDER_INTERFACE
                    .iter()
                    .any(|name| line.starts_with(&format!("  extra:    function {name}(")))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            differences.is_empty(),
            "{last}: adopted schema differs:\n{differences}"
        );
        if scalar(
            pool,
            "SELECT count(*) FROM pg_proc WHERE proname = 'procrastinate_fetch_job_v1'",
        )
        .await
            > 0
        {
            let old: i64 = sqlx::query_scalar(
                "SELECT procrastinate_defer_job_v1('old', 'old', 0, NULL, NULL, '{}', NULL)",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            let fetched: Option<i64> =
                sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v1(ARRAY['old'])")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            assert_eq!(fetched, Some(old), "{last}: a 3.0 client's fetch");
            assert_eq!(
                scalar(pool, &format!("SELECT count(*) FROM procrastinate_jobs WHERE id = {old} AND started_at IS NOT NULL AND created_at IS NOT NULL")).await,
                1,
                "{last}: dawdle's triggers stamp what a 3.0 client does"
            );
        }

        // The adopted database works: the lock's next job waits for the
        // running one, then runs.
        let worker: i64 =
            sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
                .fetch_one(pool)
                .await
                .unwrap();
        let fetch = "SELECT id FROM procrastinate_fetch_job_v2(ARRAY['q'], $1)";
        let next: Option<i64> = sqlx::query_scalar(fetch)
            .bind(worker)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            next, None,
            "{last}: the locked job was fetched while its lock was held"
        );
        sqlx::query("SELECT procrastinate_finish_job_v1(id, 'succeeded', false) FROM procrastinate_jobs WHERE task_name = 'running'")
            .execute(pool)
            .await
            .unwrap();
        let next: Option<i64> = sqlx::query_scalar(fetch)
            .bind(worker)
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(
            next.is_some(),
            "{last}: the lock's next job was not fetched"
        );
    }

    for (last, expected) in [
        (
            "02.14.01_01",
            "upgrade this one to 3.x with Procrastinate's own migrations first",
        ),
        (
            "01.01.01_01",
            "upgrade this one to 3.x with Procrastinate's own migrations first",
        ),
        ("03.00.00_01", "finish Procrastinate's 3.0 migration first"),
    ] {
        let db = migrated_to(&migrations, last).await;
        let catalog_before = catalog(db.pool()).await;
        let (ok, stdout, stderr) = run_dawdle(&db.url(), &["schema", "adopt"]).await;
        assert!(!ok, "{last}: adopted\n{stdout}");
        assert!(stderr.contains(expected), "{last}: {stderr}");
        let (ok, check, _) = run_dawdle(&db.url(), &["schema", "check"]).await;
        assert!(!ok && check.contains(expected), "{last}: {check}");
        assert_eq!(
            catalog(db.pool()).await,
            catalog_before,
            "{last}: a refused adoption changed the database"
        );
    }
}

/// Months of history in a few seconds, through Procrastinate's own
/// functions: jobs deferred, fetched by a registered worker and finished.
const HISTORY: &str = "
    SELECT procrastinate_defer_jobs_v1(array_agg(
        ROW('history', 'compat.succeed', 0, NULL, NULL, jsonb_build_object('n', i), NULL)
            ::procrastinate_job_to_defer_v1))
    FROM generate_series(1, 3000) AS i;
    DO $$
    DECLARE
        worker bigint := (SELECT worker_id FROM procrastinate_register_worker_v1());
        job bigint;
    BEGIN
        LOOP
            SELECT id INTO job FROM procrastinate_fetch_job_v2(ARRAY['history'], worker);
            EXIT WHEN job IS NULL;
            PERFORM procrastinate_finish_job_v1(
                job, CASE WHEN job % 7 = 0 THEN 'failed' ELSE 'succeeded' END::procrastinate_job_status,
                false);
        END LOOP;
    END $$;
    SELECT procrastinate_defer_jobs_v1(array_agg(
        ROW('waiting', 'compat.succeed', 0, NULL, NULL, '{}'::jsonb, NULL)
            ::procrastinate_job_to_defer_v1))
    FROM generate_series(1, 100);
";

/// Runs `dawdle schema adopt ARGS…` and kills it with SIGKILL as soon as it
/// prints a line containing `at`. Returns what it printed.
async fn adopt_killed_at(url: &str, args: &[&str], at: &str) -> String {
    let mut child = dawdle(url)
        .args(["schema", "adopt"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dawdle schema adopt");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read adopt's output") {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains(at) {
                child.start_kill().expect("kill adopt");
                return true;
            }
        }
        false
    };
    let killed = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| panic!("adopt printed no line with {at:?} within 120 s"));
    let _ = child.wait().await;
    assert!(killed, "adopt ended before printing {at:?}:\n{printed}");
    printed
}

#[tokio::test]
async fn an_adoption_killed_at_each_step_is_finished_by_the_next_run() {
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    sqlx::raw_sql(HISTORY).execute(pool).await.unwrap();
    let statuses = status_counts(pool).await;
    let events = event_counts(pool, 0).await;
    let jobs = job_rows(pool).await;
    assert_eq!(statuses.values().sum::<i64>(), 3100);

    let args = ["--batch-size", "3"];
    // In the middle of the concurrent index builds (an index left invalid
    // is rebuilt), right after the switch, and twice in the backfill.
    adopt_killed_at(&url, &args, "building index dawdle_jobs_claim_queue_idx").await;
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(!ok && check.contains("dawdle schema adopt"), "{check}");
    adopt_killed_at(&url, &args, "switched:").await;
    adopt_killed_at(&url, &args, "filling the timestamps").await;
    let (through, boundary): (i64, i64) =
        sqlx::query_as("SELECT backfilled_through, boundary_id FROM dawdle_adoption")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(through < boundary, "the backfill was not interrupted");
    // Meanwhile the database is dawdle's: check says so, with a note.
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(ok, "{check}");
    assert!(
        check.contains("adopt"),
        "no note of the unfinished adoption:\n{check}"
    );
    adopt_killed_at(&url, &args, "filling the timestamps").await;

    let report = adopt(&url, &args).await;
    assert!(report.contains("the schema is current"), "{report}");
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM dawdle_adoption
             WHERE finished_at IS NOT NULL AND backfilled_through = boundary_id"
        )
        .await,
        1
    );
    assert_eq!(status_counts(pool).await, statuses);
    assert_eq!(event_counts(pool, 0).await, events);
    assert_eq!(job_rows(pool).await, jobs);
    assert_eq!(timestamp_mismatches(pool, &[]).await, Vec::<String>::new());
    let differences = catalog_differences(pool).await;
    assert!(
        differences.is_empty(),
        "adopted schema differs:\n{differences}"
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid
             AND indrelid IN ('procrastinate_jobs'::regclass, 'procrastinate_events'::regclass)"
        )
        .await,
        0,
        "an index was left invalid"
    );
}

#[tokio::test]
async fn a_switch_blocked_by_a_long_transaction_gives_up_cleanly_and_names_the_blocker() {
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    sqlx::raw_sql(
        "SELECT procrastinate_defer_jobs_v1(ARRAY[
             ROW('q', 't', 0, NULL, NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1])",
    )
    .execute(pool)
    .await
    .unwrap();
    // A report left open: it holds a share lock on the jobs table for as
    // long as its transaction lasts.
    let mut report = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM procrastinate_jobs")
        .execute(&mut *report)
        .await
        .unwrap();

    let (ok, stdout, stderr) = run_dawdle(
        &url,
        &[
            "schema",
            "adopt",
            "--lock-timeout",
            "100ms",
            "--lock-attempts",
            "2",
        ],
    )
    .await;
    assert!(!ok, "adopted under a held lock:\n{stdout}");
    assert!(
        stderr.contains("idle in transaction"),
        "no blocker named: {stderr}"
    );
    assert!(
        stdout.contains("put the fetch functions back"),
        "{stdout}\n{stderr}"
    );
    // Python workers were not left without jobs: the fetch function is
    // Procrastinate's own again, and fetches.
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate_fetch_job%'
             AND prosrc LIKE '%dawdle adoption fence%'"
        )
        .await,
        0
    );
    let worker: i64 =
        sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
            .fetch_one(pool)
            .await
            .unwrap();
    let fetched: Option<i64> =
        sqlx::query_scalar("SELECT id FROM procrastinate_fetch_job_v2(ARRAY['q'], $1)")
            .bind(worker)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(fetched.is_some());
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(!ok && check.contains("dawdle schema adopt"), "{check}");

    report.rollback().await.unwrap();
    let done = adopt(&url, &[]).await;
    assert!(done.contains("the schema is current"), "{done}");
}

/// The code blocks of docs/runbook.md tagged `adoption`, in order:
/// (language, body).
fn runbook_adoption_blocks() -> Vec<(String, String)> {
    runbook_blocks::blocks(&runbook_blocks::runbook())
        .into_iter()
        .filter(|block| block.adoption)
        .map(|block| (block.language, block.body))
        .collect()
}

/// Runs each command line of a runbook bash block as a reader would, with
/// `dawdle`, `procrastinate` and `psql` on PATH.
async fn run_bash_block(url: &str, body: &str) -> Vec<String> {
    let dawdle_dir = PathBuf::from(env!("CARGO_BIN_EXE_dawdle"))
        .parent()
        .unwrap()
        .to_path_buf();
    let venv_bin = common::python().parent().unwrap().to_path_buf();
    let path = std::env::join_paths([dawdle_dir, venv_bin].into_iter().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut outputs = Vec::new();
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let output = tokio::time::timeout(
            Duration::from_secs(180),
            Command::new("bash")
                .args(["-o", "pipefail", "-c", line])
                .env("JOB_QUEUE_DATABASE_URL", url)
                .env("PATH", &path)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within 180 s"))
        .expect("run bash");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "docs/runbook.md: `{line}` failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push(stdout);
    }
    outputs
}

#[tokio::test]
async fn the_runbook_adopts_a_database_and_hands_it_back_to_procrastinate() {
    let blocks = runbook_adoption_blocks();
    let languages: Vec<&str> = blocks
        .iter()
        .map(|(language, _)| language.as_str())
        .collect();
    assert_eq!(
        languages,
        ["bash", "sql", "bash"],
        "the runbook's adoption blocks"
    );

    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    let marker = Marker::new();
    common::run_script(
        &url,
        "fill.py",
        &[],
        &json!({"history": 100, "python_jobs": 20, "dawdle_jobs": 0, "marker": marker.path()})
            .to_string(),
    )
    .await
    .expect_success();
    marker.touch();
    let statuses = status_counts(pool).await;
    let events = event_counts(pool, 0).await;
    let periodic = periodic_rows(pool).await;

    // The adoption, as the runbook gives it.
    let outputs = run_bash_block(&url, &blocks[0].1).await;
    assert!(outputs[0].contains("dry run"), "{}", outputs[0]);
    assert!(
        outputs[1].contains("the schema is current"),
        "{}",
        outputs[1]
    );
    assert!(outputs[2].contains("schema is current"), "{}", outputs[2]);
    // dawdle runs a job and records an error event (which Procrastinate
    // cannot keep) before the database goes back.
    let failing: i64 = sqlx::query_scalar(
        "SELECT (procrastinate_defer_jobs_v1(ARRAY[
             ROW('dawdle', 'dawdle.fail', 0, NULL, NULL, '{}'::jsonb, NULL)
                 ::procrastinate_job_to_defer_v1]))[1]",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let (ok, _, stderr) = run_dawdle(&url, &["worker", "--one-shot", "--queues", "dawdle"]).await;
    assert!(!ok, "the failing job did not fail: {stderr}");
    assert_eq!(common::status(pool, failing).await, "failed");

    // And back, as the runbook gives it.
    sqlx::raw_sql(&blocks[1].1)
        .execute(pool)
        .await
        .unwrap_or_else(|error| panic!("docs/runbook.md, going back, step 1: {error}"));
    run_bash_block(&url, &blocks[2].1).await;

    // Nothing Procrastinate knows was lost...
    let mut expected = statuses.clone();
    *expected
        .entry(("dawdle".to_string(), "failed".to_string()))
        .or_default() += 1;
    assert_eq!(status_counts(pool).await, expected);
    let events_now = event_counts(pool, 0).await;
    for (kind, count) in &events {
        assert!(
            events_now.get(kind).is_some_and(|now| now >= count),
            "{kind}: {count} before, {events_now:?} after"
        );
    }
    assert!(!events_now.contains_key("error"));
    assert_eq!(periodic_rows(pool).await, periodic);

    // ...the schema is the library's own (but for the enum value PostgreSQL
    // cannot drop)...
    let fresh = common::procrastinate_database().await;
    let want = catalog(fresh.pool()).await;
    let got = catalog(pool).await;
    let mut differences = String::new();
    for line in want.difference(&got) {
        differences.push_str(&format!("  missing:  {line}\n"));
    }
    for line in got.difference(&want) {
        differences.push_str(&format!("  extra:    {line}\n"));
    }
    let allowed = "  extra:    type procrastinate_job_event_type \
         deferred,started,deferred_for_retry,failed,succeeded,cancelled,abort_requested,aborted,scheduled,retried,error\n  \
         missing:  type procrastinate_job_event_type \
         deferred,started,deferred_for_retry,failed,succeeded,cancelled,abort_requested,aborted,scheduled,retried\n";
    let mut sorted_allowed: Vec<&str> = allowed.lines().collect();
    sorted_allowed.sort();
    let mut sorted_differences: Vec<&str> = differences.lines().collect();
    sorted_differences.sort();
    assert!(
        sorted_differences.is_empty() || sorted_differences == sorted_allowed,
        "the schema handed back differs from Procrastinate's:\n{differences}"
    );

    // ...and the library works on it: it defers, runs, and its shell lists.
    common::run_script(
        &url,
        "defer.py",
        &[],
        &json!([{"task_name": "compat.succeed", "queue": "after"}]).to_string(),
    )
    .await
    .expect_success();
    let (ok, stdout, stderr) = python_worker(&url, &["after", "stuck"])
        .finish(Duration::from_secs(120))
        .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'after' AND status = 'succeeded'"
        )
        .await,
        1
    );
    let shell = common::run_script(&url, "shell.py", &["list_jobs", "queue=after"], "")
        .await
        .expect_success()
        .json();
    assert_eq!(shell["lines"].as_array().map(Vec::len), Some(1), "{shell}");
}

#[tokio::test]
async fn bench_adopt_adopts_a_procrastinate_database_in_use_and_reports_what_clients_saw() {
    let db = TestDatabase::empty().await;
    let schema = common::run_python("unused", &["-m", "procrastinate", "schema", "--read"], "")
        .await
        .expect_success()
        .stdout;
    let file = std::env::temp_dir().join(format!(
        "dawdle-bench-adopt-schema-{}-{:08x}.sql",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&file, schema).unwrap();
    let (ok, stdout, stderr) = run_dawdle(
        &db.url(),
        &[
            "bench",
            "adopt",
            "--procrastinate-schema",
            file.to_str().unwrap(),
            "--jobs",
            "2000",
            "--workers",
            "2",
            "--settle",
            "1",
            "--batch-size",
            "500",
            "--json",
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["jobs"], json!(2000));
    assert_eq!(report["client_errors"], json!(0), "{report}\n{stderr}");
    assert!(report["adopt_s"].as_f64().unwrap() > 0.0);
    assert!(report["longest_lock_ms"].as_f64().unwrap() > 0.0);
    assert!(
        report["before"]["median_jobs_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(stderr.contains("backfill:"), "{stderr}");

    let (ok, _, stderr) = run_dawdle(
        &db.url(),
        &[
            "bench",
            "adopt",
            "--procrastinate-schema",
            "/nonexistent.sql",
        ],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("procrastinate schema --read"), "{stderr}");
}

#[tokio::test]
async fn a_backfill_batch_held_up_by_a_locked_row_waits_and_carries_on() {
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    sqlx::raw_sql(HISTORY).execute(pool).await.unwrap();
    let last: i64 = scalar(pool, "SELECT max(id) FROM procrastinate_jobs").await;

    let mut child = dawdle(&url)
        .args([
            "schema",
            "adopt",
            "--batch-size",
            "1",
            "--lock-timeout",
            "100ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dawdle schema adopt");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let mut holder = None;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read adopt's output") {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("filling the timestamps") {
                // A worker's transaction holding the last job's row.
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT 1 FROM procrastinate_jobs WHERE id = $1 FOR UPDATE")
                    .bind(last)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                holder = Some(tx);
            }
            if line.contains("stayed locked") {
                if let Some(tx) = holder.take() {
                    tx.rollback().await.unwrap();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("adopt did not finish within 120 s");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "adopt failed:\n{printed}");
    assert!(
        printed.contains("stayed locked"),
        "no wait for the locked row:\n{printed}"
    );
    assert!(printed.contains("the schema is current"), "{printed}");
    assert_eq!(timestamp_mismatches(pool, &[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn the_backfill_wakes_workers_for_the_waiting_jobs_it_held() {
    // A dawdle worker's claim skips the rows a backfill batch holds, and its
    // next claims start past them: each batch names its waiting jobs in a
    // notification once it commits, as the triggers do.
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    sqlx::raw_sql(HISTORY).execute(pool).await.unwrap();
    let waiting: BTreeSet<i64> =
        sqlx::query_scalar("SELECT id FROM procrastinate_jobs WHERE status = 'todo'")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(waiting.len(), 100);
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen("procrastinate_any_queue_v1").await.unwrap();

    let report = adopt(&url, &["--batch-size", "10"]).await;
    assert!(report.contains("backfill:"), "{report}");

    // One notification per batch: the batch's first waiting job.
    let mut named = BTreeSet::new();
    while let Ok(Ok(notification)) =
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        let payload: Value = serde_json::from_str(notification.payload()).unwrap();
        if let (Some("job_inserted"), Some(id)) =
            (payload["type"].as_str(), payload["job_id"].as_i64())
        {
            named.insert(id);
        }
    }
    let first_of_each_batch: BTreeSet<i64> = waiting.iter().copied().step_by(10).collect();
    assert_eq!(named, first_of_each_batch, "{report}");
}

#[tokio::test]
async fn hostile_rows_of_a_procrastinate_database_are_adopted_as_they_are() {
    let db = common::procrastinate_database().await;
    let pool = db.pool();
    let url = db.url();
    // What Procrastinate's schema accepts and dawdle's would not, or what a
    // person at psql may leave: arguments that are not an object, deeply
    // nested or a megabyte long, an infinite schedule, events without a type
    // or a time, markup and a secret-looking URL in text columns.
    let deep = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
    sqlx::raw_sql(&format!(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at, lock)
         VALUES ('hostile', 'array', '[1, 2]', NULL, NULL),
                ('hostile', 'null', 'null', NULL, NULL),
                ('hostile', 'deep', '{{\"a\": {deep}}}', NULL, NULL),
                ('hostile', 'long', jsonb_build_object('s', repeat('x', 1048576)), NULL, NULL),
                ('hostile', '<script>alert(1)</script>', '{{}}', 'infinity', 
                 'postgresql://user:hunter2@db/x');
         INSERT INTO procrastinate_events (job_id, type, at)
         SELECT id, NULL, NULL FROM procrastinate_jobs WHERE task_name = 'array';
         UPDATE procrastinate_events SET at = NULL WHERE job_id IN
             (SELECT id FROM procrastinate_jobs WHERE task_name = 'null');"
    ))
    .execute(pool)
    .await
    .unwrap();
    let statuses = status_counts(pool).await;
    let events = event_counts(pool, 0).await;
    let jobs = job_rows(pool).await;

    let plan = adopt(&url, &["--dry-run"]).await;
    assert!(plan.contains("(none): 1"), "{plan}");
    let report = adopt(&url, &[]).await;
    assert!(
        report.contains("warning: 2 jobs have arguments that are not a JSON object"),
        "{report}"
    );
    assert!(!report.contains("hunter2"), "{report}");
    assert!(report.contains("the schema is current"), "{report}");
    assert_eq!(status_counts(pool).await, statuses);
    assert_eq!(event_counts(pool, 0).await, events);
    assert_eq!(job_rows(pool).await, jobs);
    // The check that would refuse every update of those rows is left out,
    // and said so: the queue keeps flowing, each of them failing alone.
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(ok, "{check}");
    assert!(
        check.contains("note: the check that job arguments are JSON objects was left out"),
        "{check}"
    );
    // (Exit 1: the verdict may call such a queue unhealthy.)
    let (_, stats, stderr) = run_dawdle(&url, &["stats", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&stats)
            .unwrap_or_else(|_| panic!("dawdle stats: {stats}\n{stderr}"))["queues"]["hostile"]
            ["todo"],
        json!(5)
    );
    sqlx::query("UPDATE procrastinate_jobs SET scheduled_at = NULL WHERE queue_name = 'hostile'")
        .execute(pool)
        .await
        .unwrap();
    let (ok, _, stderr) = run_dawdle(&url, &["worker", "--one-shot", "--queues", "hostile"]).await;
    assert!(!ok, "the unknown tasks did not fail: {stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(
        status_counts(pool)
            .await
            .get(&("hostile".to_string(), "failed".to_string())),
        Some(&5),
        "{stderr}"
    );

    // Once they are fixed, the next run adds the check, validated.
    sqlx::raw_sql(
        "UPDATE procrastinate_jobs SET args = jsonb_build_object('value', args)
         WHERE jsonb_typeof(args) <> 'object'",
    )
    .execute(pool)
    .await
    .unwrap();
    let report = adopt(&url, &[]).await;
    assert!(!report.contains("warning"), "{report}");
    assert!(report.contains("adding the check"), "{report}");
    let (ok, check, _) = run_dawdle(&url, &["schema", "check"]).await;
    assert!(ok && !check.contains("note:"), "{check}");
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_constraint
             WHERE conname = 'procrastinate_jobs_args_is_object' AND convalidated"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn bad_adopt_options_get_a_usage_error() {
    for args in [
        ["--batch-size", "0"],
        ["--batch-size", "1e400"],
        ["--lock-timeout", "banana"],
        ["--lock-attempts", "0"],
    ] {
        let mut all = vec!["schema", "adopt"];
        all.extend_from_slice(&args);
        let output = dawdle("postgresql://nobody@/none?host=/nonexistent")
            .args(&all)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}
