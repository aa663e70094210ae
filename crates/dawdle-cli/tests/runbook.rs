//! docs/runbook.md, executed: every shell command of its ```bash blocks and
//! every ```sql block runs against a database set up like a service that has
//! been busy for a while, in the order the runbook gives them. The document
//! cannot drift from the code.
//!
//! Blocks tagged `notest` are the ones that need Docker, replace the test's
//! own environment or start a server; the test checks that nothing else is.
//! Blocks tagged `adoption` need a database Procrastinate created: the
//! adoption tests run those.

use std::path::{Path, PathBuf};
use std::process::Command;

use dawdle::testing::TestDatabase;
use dawdle::{defer, NewJob};
use serde_json::json;
use sqlx::PgPool;

#[path = "support/runbook_blocks.rs"]
mod runbook_blocks;
use runbook_blocks::blocks;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

async fn at(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A database that looks like a service's after some weeks: successes and
/// failures old and new, a job 123 that failed, a job running, a live worker.
async fn busy_database() -> (TestDatabase, i64) {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    for i in 0..3 {
        defer(
            pool,
            &NewJob::new("email.send_welcome", json!({"user_id": i}))
                .unwrap()
                .queue("email"),
        )
        .await
        .unwrap();
    }
    at(pool, "SELECT setval('procrastinate_jobs_id_seq', 122)").await;
    let failed = defer(
        pool,
        &NewJob::new("crm.notify", json!({"order_id": 9}))
            .unwrap()
            .queue("crm"),
    )
    .await
    .unwrap();
    assert_eq!(failed, 123);
    at(
        pool,
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id IN (1, 2, 123);
         INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         VALUES (123, 'error', 'ConnectionError', 'crm.example.com refused the connection',
                 'ConnectionError: call the CRM API\ncaused by: connection refused'),
                (2, 'error', 'TimeoutError', 'smtp timed out', 'TimeoutError: smtp timed out');
         UPDATE procrastinate_jobs SET status = 'failed', attempts = 1 WHERE id IN (2, 123);
         UPDATE procrastinate_jobs SET status = 'succeeded', attempts = 1 WHERE id = 1;",
    )
    .await;
    // Old history for the purge procedures.
    old_job(pool, "old.success", "succeeded", 40).await;
    // A job running for two minutes (not stuck yet) and a live worker.
    let running = defer(pool, &NewJob::new("report.build", json!({})).unwrap())
        .await
        .unwrap();
    at(pool, "SELECT procrastinate_register_worker_v1()").await;
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = 1,
                started_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .bind(running)
    .execute(pool)
    .await
    .unwrap();
    (db, running)
}

/// A job that finished `days` ago with `status`.
async fn old_job(pool: &PgPool, task: &str, status: &str, days: i32) {
    let id = defer(pool, &NewJob::new(task, json!({})).unwrap())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = $2::procrastinate_job_status,
                started_at = now() - make_interval(days => $3),
                finished_at = now() - make_interval(days => $3)
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// Sets the scene for a procedure whose subject earlier ones changed: the
/// retries of section 3 leave no failed job for section 5's purge.
async fn prepare(line: &str, pool: &PgPool) {
    if line == "./scripts/jobs/purge-old.sh 90 --include-failed" {
        old_job(pool, "old.failure", "failed", 100).await;
    }
}

fn run_line(line: &str, url: &str, bin_dir: &Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["-c", line])
        .current_dir(repo_root())
        .env("JOB_QUEUE_DATABASE_URL", url)
        .env("DAWDLE_BIN", env!("CARGO_BIN_EXE_dawdle"))
        .env("PATH", path)
        .env_remove("DAWDLE_HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash")
}

#[tokio::test]
async fn every_command_and_query_of_the_runbook_works_as_written() {
    let runbook = runbook_blocks::runbook();
    let blocks = blocks(&runbook);
    let (db, running) = busy_database().await;
    let url = db.url();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_dawdle"))
        .parent()
        .unwrap()
        .to_path_buf();

    let mut commands = 0;
    let mut queries = 0;
    for block in &blocks {
        if block.adoption {
            // Run on a Procrastinate database of their own, by tests/adopt.rs.
            continue;
        }
        if !block.tested {
            assert!(
                [
                    "docker compose",
                    "export JOB_QUEUE_DATABASE_URL",
                    "reference-service serve"
                ]
                .iter()
                .any(|reason| block.body.contains(reason)),
                "docs/runbook.md:{}: a block marked notest that needs neither Docker, nor the \
                 reader's environment, nor a long-running server:\n{}",
                block.line,
                block.body
            );
            continue;
        }
        match block.language.as_str() {
            "bash" => {
                for line in block.body.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    prepare(line, db.pool()).await;
                    let output = run_line(line, &url, &bin_dir);
                    let stdout = String::from_utf8_lossy(&output.stdout);
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    assert!(
                        output.status.success(),
                        "docs/runbook.md:{}: `{line}` exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                        block.line,
                        output.status.code()
                    );
                    check_effect(line, db.pool(), running, &stdout).await;
                    commands += 1;
                }
            }
            "sql" => {
                let sql = block.body.replace("<job_id>", &running.to_string());
                sqlx::raw_sql(&sql)
                    .execute(db.pool())
                    .await
                    .unwrap_or_else(|e| panic!("docs/runbook.md:{}: {e}\n{sql}", block.line));
                if sql.contains(&format!("WHERE id = {running} AND status = 'doing'")) {
                    assert_eq!(status(db.pool(), running).await.as_deref(), Some("todo"));
                }
                queries += 1;
            }
            "text" => {}
            other => panic!(
                "docs/runbook.md:{}: code block of unknown language {other:?}",
                block.line
            ),
        }
    }
    assert_eq!(commands, 21, "the runbook's shell commands");
    assert_eq!(queries, 8, "the runbook's SQL blocks");
}

async fn status(pool: &PgPool, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// What a procedure must have done, checked right after it ran (later
/// procedures change the same jobs again).
async fn check_effect(line: &str, pool: &PgPool, running: i64, stdout: &str) {
    match line {
        "./scripts/jobs/queue-stats.sh" => assert!(stdout.contains("verdict:"), "{stdout}"),
        "./scripts/jobs/list-failed.sh" => assert!(stdout.contains("ConnectionError"), "{stdout}"),
        "./scripts/jobs/job-status.sh 123" => {
            assert!(
                stdout.contains("crm.notify") && stdout.contains("caused by: connection refused"),
                "{stdout}"
            )
        }
        "./scripts/jobs/retry-job.sh 123" => {
            assert_eq!(status(pool, 123).await.as_deref(), Some("todo"))
        }
        "./scripts/jobs/retry-all-failed.sh email" => {
            assert_eq!(count(pool, "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'email' AND status = 'failed'").await, 0);
            assert_eq!(
                count(
                    pool,
                    "SELECT count(*) FROM procrastinate_jobs WHERE id = 123 AND status = 'todo'"
                )
                .await,
                1
            );
            assert_eq!(count(pool, "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'email' AND status = 'todo'").await, 2, "the failed email job and the waiting one");
        }
        "./scripts/jobs/purge-old.sh 30" => {
            assert_eq!(
                count(
                    pool,
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'old.success'"
                )
                .await,
                0
            )
        }
        "./scripts/jobs/purge-old.sh 90 --include-failed" => {
            assert_eq!(
                count(
                    pool,
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name LIKE 'old.%'"
                )
                .await,
                0
            )
        }
        "dawdle clear-pending --queue email --yes" => {
            assert_eq!(count(pool, "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'email' AND status = 'todo'").await, 0)
        }
        "dawdle shell list_queues" => assert!(stdout.contains("jobs (todo:"), "{stdout}"),
        r#"dawdle queue pause email --reason "SMTP provider outage""# => {
            assert!(stdout.starts_with("paused queue email"), "{stdout}");
            assert_eq!(
                count(
                    pool,
                    "SELECT count(*) FROM dawdle_queue_pauses WHERE queue_name = 'email'"
                )
                .await,
                1
            );
        }
        "dawdle queue list" => assert!(stdout.contains("SMTP provider outage"), "{stdout}"),
        "dawdle queue resume email" => {
            assert!(stdout.starts_with("resumed queue email"), "{stdout}");
            assert_eq!(
                count(pool, "SELECT count(*) FROM dawdle_queue_pauses").await,
                0
            );
        }
        _ => {}
    }
    let _ = running;
}

#[test]
fn the_quick_reference_names_every_script_and_each_exists() {
    let runbook = runbook_blocks::runbook();
    for script in [
        "queue-stats.sh",
        "list-failed.sh",
        "job-status.sh",
        "retry-job.sh",
        "retry-all-failed.sh",
        "purge-old.sh",
        "apply-schema.sh",
    ] {
        assert!(
            runbook.contains(&format!("./scripts/jobs/{script}")),
            "{script}"
        );
        let path = repo_root().join("scripts/jobs").join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert!(mode & 0o111 != 0, "{script} is not executable");
    }
}

#[test]
fn every_named_check_is_a_query_of_the_runbook_word_for_word() {
    let runbook = runbook_blocks::runbook();
    for check in dawdle::admin::CHECKS {
        assert!(
            runbook.contains(check.sql),
            "`dawdle check {}` runs SQL that docs/runbook.md does not show:\n{}",
            check.name,
            check.sql
        );
    }
}
