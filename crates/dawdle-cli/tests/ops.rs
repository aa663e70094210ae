//! The operations commands as an operator uses them: what they change, what
//! they refuse and why, exit codes and JSON output.

use std::process::{Command, Output};

use dawdle::testing::TestDatabase;
use dawdle::{defer, NewJob};
use serde_json::{json, Value};
use sqlx::PgPool;

async fn dawdle(db: &TestDatabase, args: &[&str]) -> Output {
    let url = db.url();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args(&args)
            .env("JOB_QUEUE_DATABASE_URL", url)
            .output()
            .expect("run dawdle")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(output), stderr(output)))
}

async fn job(pool: &PgPool, task: &str, queue: &str) -> i64 {
    defer(pool, &NewJob::new(task, json!({})).unwrap().queue(queue))
        .await
        .unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pool).await.unwrap();
}

async fn status(pool: &PgPool, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Fails a job the way a worker does: started, an error event, failed.
async fn fail(pool: &PgPool, id: i64, kind: &str, message: &str) {
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = {id}"),
    )
    .await;
    sqlx::query(
        "INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         VALUES ($1, 'error', $2, $3, $2 || ': ' || $3)",
    )
    .bind(id)
    .bind(kind)
    .bind(message)
    .execute(pool)
    .await
    .unwrap();
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'failed', attempts = 1 WHERE id = {id}"),
    )
    .await;
}

#[tokio::test]
async fn unknown_jobs_and_wrong_states_are_refused_with_the_reason() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let missing = dawdle(&db, &["job", "123"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no job 123"),
        "{}",
        stderr(&missing)
    );

    let waiting = job(pool, "t", "default").await;
    let retry = dawdle(&db, &["retry", &waiting.to_string()]).await;
    assert_eq!(retry.status.code(), Some(1));
    assert!(
        stderr(&retry).contains(&format!("job {waiting} is todo, already waiting to run")),
        "{}",
        stderr(&retry)
    );

    let reset = dawdle(&db, &["reset-stalled", &waiting.to_string()]).await;
    assert_eq!(reset.status.code(), Some(1));
    assert!(
        stderr(&reset).contains("only jobs in doing can be reset"),
        "{}",
        stderr(&reset)
    );

    let nothing = dawdle(&db, &["retry", "999"]).await;
    assert!(stderr(&nothing).contains("no job 999"));
}

#[tokio::test]
async fn failures_are_listed_shown_and_retried() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let email = job(pool, "email.send", "email").await;
    let crm = job(pool, "crm.notify", "crm").await;
    fail(pool, email, "ConnectionError", "smtp refused").await;
    fail(pool, crm, "TimeoutError", "crm slow").await;

    let failed = dawdle(&db, &["failed", "--json"]).await;
    let rows = json_of(&failed);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["error"] == "ConnectionError" && r["id"] == email));
    let table = dawdle(&db, &["failed", "--queue", "crm"]).await;
    assert!(stdout(&table).contains("TimeoutError") && !stdout(&table).contains("smtp refused"));

    let detail = dawdle(&db, &["job", &email.to_string()]).await;
    let text = stdout(&detail);
    for expected in [
        "status:          failed",
        "history:",
        "error",
        "ConnectionError: smtp refused",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let detail = json_of(&dawdle(&db, &["job", &email.to_string(), "--json"]).await);
    assert_eq!(detail["job"]["status"], "failed");
    assert_eq!(detail["events"].as_array().unwrap().len(), 4);

    let dry = dawdle(&db, &["retry-failed", "email", "--dry-run"]).await;
    assert!(
        stdout(&dry).contains("would retry 1 failed job(s) in queue email"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(status(pool, email).await.as_deref(), Some("failed"));
    let one_queue = dawdle(&db, &["retry-failed", "email"]).await;
    assert!(
        stdout(&one_queue).contains("retried 1 failed job(s) in queue email"),
        "{}",
        stdout(&one_queue)
    );
    assert_eq!(status(pool, email).await.as_deref(), Some("todo"));
    assert_eq!(status(pool, crm).await.as_deref(), Some("failed"));
    let single = dawdle(&db, &["retry", &crm.to_string(), "--json"]).await;
    assert_eq!(json_of(&single)["retried"], 1);
    assert_eq!(status(pool, crm).await.as_deref(), Some("todo"));
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT type::text FROM procrastinate_events WHERE job_id = $1 ORDER BY id",
    )
    .bind(crm)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(history.last().unwrap(), "retried");
}

#[tokio::test]
async fn stats_judge_health_and_exit_1_when_jobs_are_stuck() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    exec(pool, "SELECT procrastinate_register_worker_v1()").await;
    job(pool, "t", "default").await;
    let healthy = dawdle(&db, &["stats", "--json"]).await;
    assert_eq!(healthy.status.code(), Some(0), "{}", stdout(&healthy));
    let report = json_of(&healthy);
    assert_eq!(report["totals"]["todo"], 1);
    assert_eq!(report["live_workers"], 1);

    let stuck = job(pool, "t", "default").await;
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET status = 'doing', started_at = now() - interval '20 minutes' WHERE id = {stuck}"),
    )
    .await;
    let unhealthy = dawdle(&db, &["stats"]).await;
    assert_eq!(unhealthy.status.code(), Some(1));
    let text = stdout(&unhealthy);
    assert!(text.contains("verdict: UNHEALTHY"), "{text}");
    assert!(
        text.contains("stuck in doing for more than 5 minutes"),
        "{text}"
    );

    let reset = dawdle(&db, &["reset-stalled", "--older-than", "10m", "--json"]).await;
    assert_eq!(json_of(&reset)["ids"], json!([stuck]));
    assert_eq!(status(pool, stuck).await.as_deref(), Some("todo"));
    let noted: String = sqlx::query_scalar(
        "SELECT error FROM procrastinate_events WHERE job_id = $1 AND type = 'error'",
    )
    .bind(stuck)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(noted, "Stalled");
    assert_eq!(dawdle(&db, &["stats"]).await.status.code(), Some(0));
}

#[tokio::test]
async fn cancel_and_clear_pending_say_what_they_changed() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let waiting = job(pool, "t", "email").await;
    let running = job(pool, "t", "email").await;
    let orphaned = job(pool, "t", "email").await;
    let worker: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap();
    exec(
        pool,
        &format!(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = {worker}
             WHERE id = {running};
             UPDATE procrastinate_jobs SET status = 'doing' WHERE id = {orphaned};"
        ),
    )
    .await;
    let done = job(pool, "t", "email").await;
    exec(pool, &format!("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = {done}; UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = {done}")).await;

    assert!(
        stdout(&dawdle(&db, &["cancel", &waiting.to_string()]).await).contains("cancelled 1 job")
    );
    assert_eq!(status(pool, waiting).await.as_deref(), Some("cancelled"));
    let abort = dawdle(&db, &["cancel", &running.to_string()]).await;
    assert!(
        stdout(&abort).contains("abort requested"),
        "{}",
        stdout(&abort)
    );
    let again = dawdle(&db, &["cancel", &running.to_string(), "--json"]).await;
    assert_eq!(json_of(&again)["changed"], 0);
    assert_eq!(json_of(&again)["outcome"], "abort_already_requested");
    // Nobody would stop a job whose worker is gone: refused, with what to do.
    let nobody = dawdle(&db, &["cancel", &orphaned.to_string()]).await;
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        stderr(&nobody).contains("no live worker") && stderr(&nobody).contains("reset-stalled"),
        "{}",
        stderr(&nobody)
    );
    let refused = dawdle(&db, &["cancel", &done.to_string()]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("already finished"));

    for _ in 0..3 {
        job(pool, "t", "email").await;
    }
    job(pool, "t", "crm").await;
    let without_yes = dawdle(&db, &["clear-pending"]).await;
    assert_eq!(without_yes.status.code(), Some(2));
    assert!(stderr(&without_yes).contains("--yes"));
    let cleared = dawdle(
        &db,
        &["clear-pending", "--queue", "email", "--yes", "--json"],
    )
    .await;
    assert_eq!(json_of(&cleared)["deleted"], 3);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 1, "the crm job stays");
}

#[tokio::test]
async fn purge_deletes_old_finished_jobs_in_batches_with_their_history() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let jobs: Vec<NewJob> = (0..250)
        .map(|i| NewJob::new("t", json!({"i": i})).unwrap())
        .collect();
    let ids = dawdle::defer_batch(pool, &jobs).await.unwrap();
    // 200 succeeded 40 days ago, 30 failed 40 days ago, 20 succeeded today.
    exec(pool, "UPDATE procrastinate_jobs SET status = 'doing'").await;
    sqlx::query(
        "UPDATE procrastinate_jobs SET
             status = CASE WHEN id <= $1 THEN 'succeeded' WHEN id <= $2 THEN 'failed' ELSE 'succeeded' END::procrastinate_job_status,
             finished_at = CASE WHEN id <= $2 THEN now() - interval '40 days' ELSE now() END",
    )
    .bind(ids[199])
    .bind(ids[229])
    .execute(pool)
    .await
    .unwrap();

    let dry = dawdle(&db, &["purge", "--older-than", "30", "--dry-run", "--json"]).await;
    assert_eq!(json_of(&dry)["matching"], 200);
    let purged = dawdle(&db, &["purge", "--older-than", "30", "--batch-size", "17"]).await;
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(
        stdout(&purged).contains("deleted 200 succeeded, cancelled and aborted job(s)"),
        "{}",
        stdout(&purged)
    );
    let with_failed = dawdle(
        &db,
        &["purge", "--older-than", "30", "--include-failed", "--json"],
    )
    .await;
    assert_eq!(json_of(&with_failed)["deleted"], 30);
    let (jobs, orphan_events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM procrastinate_jobs),
                (SELECT count(*) FROM procrastinate_events e
                 WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = e.job_id))",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((jobs, orphan_events), (20, 0));
}

#[tokio::test]
async fn healthcheck_checks_database_schema_and_worker() {
    let db = TestDatabase::empty().await;
    let no_schema = dawdle(&db, &["healthcheck", "--json"]).await;
    assert_eq!(no_schema.status.code(), Some(1));
    assert_eq!(json_of(&no_schema)["schema_current"], false);
    dawdle(&db, &["schema", "apply"]).await;
    let no_worker = dawdle(&db, &["healthcheck"]).await;
    assert_eq!(no_worker.status.code(), Some(1));
    assert!(
        stdout(&no_worker).contains("no worker has sent a heartbeat"),
        "{}",
        stdout(&no_worker)
    );
    assert_eq!(
        dawdle(&db, &["healthcheck", "--no-worker"])
            .await
            .status
            .code(),
        Some(0)
    );
    exec(db.pool(), "SELECT procrastinate_register_worker_v1()").await;
    let healthy = dawdle(&db, &["healthcheck"]).await;
    assert_eq!(healthy.status.code(), Some(0));
    assert!(stdout(&healthy).starts_with("healthy"));
}

#[tokio::test]
async fn monitoring_checks_run_by_name_with_json() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    for queue in ["email", "email", "crm"] {
        job(pool, "t", queue).await;
    }
    let listed = json_of(&dawdle(&db, &["check", "--json"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 6);
    let depth = json_of(&dawdle(&db, &["check", "queue-depth", "--json"]).await);
    let mut rows: Vec<(String, i64)> = depth["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["queue_name"].as_str().unwrap().to_string(),
                r["pending"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(rows, [("crm".to_string(), 1), ("email".to_string(), 2)]);
    assert_eq!(depth["columns"], json!(["queue_name", "pending"]));
    let unknown = dawdle(&db, &["check", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("queue-depth"));
}

/// The runbook's avg-duration query cannot subtract an infinite time: the
/// check says which row is at fault and how to find it, rather than the
/// bare database error (its SQL stays the runbook's).
#[tokio::test]
async fn a_check_on_an_infinite_timestamp_says_which_rows_and_how_to_find_them() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let fine = job(pool, "t", "default").await;
    let infinite = job(pool, "t", "default").await;
    exec(
        pool,
        &format!(
            "UPDATE procrastinate_jobs SET status = 'succeeded',
                 started_at = now() - interval '2 seconds', finished_at = now() WHERE id = {fine};
             UPDATE procrastinate_jobs SET status = 'succeeded',
                 started_at = '-infinity', finished_at = now() WHERE id = {infinite}"
        ),
    )
    .await;
    let find = dawdle::admin::INFINITE_TIMESTAMPS_SQL;
    for args in [
        &["check", "avg-duration"][..],
        &["check", "avg-duration", "--json"],
        &["shell", "check avg-duration"],
    ] {
        let output = dawdle(&db, args).await;
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains("infinite timestamp"), "{args:?}: {said}");
        assert!(said.contains(find), "{args:?}: {said}");
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    // The query it gives finds that row, and only it.
    let found: Vec<i64> = sqlx::query_scalar(find).fetch_all(pool).await.unwrap();
    assert_eq!(found, [infinite]);
    let runbook = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook.md"),
    )
    .unwrap();
    assert!(runbook.contains(find), "the runbook gives the same query");
    // Once the row is mended, the check runs.
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET started_at = now() - interval '1 second' WHERE id = {infinite}"),
    )
    .await;
    let mended = json_of(&dawdle(&db, &["check", "avg-duration", "--json"]).await);
    assert_eq!(mended["rows"].as_array().unwrap().len(), 1, "{mended}");
}

#[tokio::test]
async fn the_shell_runs_procrastinate_commands_one_at_a_time_or_interactively() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let a = job(pool, "email.send", "email").await;
    let b = job(pool, "crm.notify", "crm").await;
    fail(pool, b, "ConnectionError", "down").await;
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET lock = 'L1' WHERE id = {a}"),
    )
    .await;

    let listed = stdout(&dawdle(&db, &["shell", "list_jobs", "status=failed", "details"]).await);
    assert!(
        listed.contains(&format!("#{b} crm.notify on crm - [failed] (attempts=1")),
        "{listed}"
    );
    assert!(!listed.contains("email.send"), "{listed}");
    let queues = stdout(&dawdle(&db, &["shell", "list_queues"]).await);
    assert!(
        queues.contains("crm: 1 jobs (todo: 0, doing: 0, succeeded: 0, failed: 1"),
        "{queues}"
    );
    let locks = stdout(&dawdle(&db, &["shell", "list_locks"]).await);
    assert!(locks.starts_with("L1: 1 jobs"), "{locks}");
    let retried = stdout(&dawdle(&db, &["shell", "retry", &b.to_string()]).await);
    assert!(retried.contains("[todo]"), "{retried}");
    let bad = dawdle(&db, &["shell", "list_jobs", "colour=blue"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("unknown filter"), "{}", stderr(&bad));

    // Interactive: commands from standard input, a failing one does not end it.
    let url = db.url();
    let session = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .arg("shell")
            .env("JOB_QUEUE_DATABASE_URL", url)
            .env("HOME", std::env::temp_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"help\ncancel 999999\nlist_tasks\nexit\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(session.status.success());
    let out = stdout(&session);
    assert!(
        out.contains("list_queues") && out.contains("crm.notify: 1 jobs"),
        "{out}"
    );
    assert!(
        stderr(&session).contains("no job 999999"),
        "{}",
        stderr(&session)
    );
}

#[tokio::test]
async fn queues_are_paused_listed_and_resumed_saying_what_changed() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    job(pool, "dawdle.noop", "email").await;
    job(pool, "dawdle.noop", "email").await;

    let paused = dawdle(
        &db,
        &[
            "queue",
            "pause",
            "email",
            "--reason",
            "SMTP outage",
            "--by",
            "ops",
        ],
    )
    .await;
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert!(
        stdout(&paused).starts_with("paused queue email: 2 waiting job(s) stay in todo"),
        "{}",
        stdout(&paused)
    );
    let again = dawdle(&db, &["queue", "pause", "email", "--json"]).await;
    let again = json_of(&again);
    assert_eq!(
        (again["paused"].clone(), again["changed"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(
        again["state"]["reason"], "SMTP outage",
        "the first pause is kept"
    );

    let listed = dawdle(&db, &["queue", "list"]).await;
    let text = stdout(&listed);
    assert!(text.contains("QUEUE") && text.contains("email"), "{text}");
    assert!(
        text.contains("SMTP outage") && text.contains("ops"),
        "{text}"
    );
    let listed = json_of(&dawdle(&db, &["queue", "list", "--json"]).await);
    assert_eq!(listed[0]["queue"], "email");
    assert_eq!(listed[0]["waiting"], 2);

    // The on-call sees it in the health verdict too, with how to undo it.
    let stats = dawdle(&db, &["stats"]).await;
    assert!(
        stdout(&stats).contains("paused queues:               email (2 waiting)"),
        "{}",
        stdout(&stats)
    );
    assert!(
        stdout(&stats).contains("dawdle queue resume email"),
        "{}",
        stdout(&stats)
    );

    // A worker drains the other queues and leaves this one waiting.
    let other = job(pool, "dawdle.noop", "default").await;
    let worker = dawdle(&db, &["worker", "--one-shot"]).await;
    assert!(worker.status.success(), "{}", stderr(&worker));
    assert_eq!(status(pool, other).await.as_deref(), Some("succeeded"));
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'email' AND status = 'todo'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(waiting, 2);

    let resumed = dawdle(&db, &["queue", "resume", "email"]).await;
    assert_eq!(
        stdout(&resumed).trim(),
        "resumed queue email: workers claim its 2 waiting job(s) now"
    );
    let resumed = json_of(&dawdle(&db, &["queue", "resume", "email", "--json"]).await);
    assert_eq!(
        (resumed["resumed"].clone(), resumed["changed"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(
        stdout(&dawdle(&db, &["queue", "list"]).await).trim(),
        "no queue is paused"
    );
    let worker = dawdle(&db, &["worker", "--one-shot"]).await;
    assert!(worker.status.success(), "{}", stderr(&worker));
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 0);

    let bad = dawdle(&db, &["queue", "pause", ""]).await;
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("queue name is empty"),
        "{}",
        stderr(&bad)
    );
}

/// What a reset or a retry cannot change as asked stays as it is or ends
/// failed, each with why, and holds back none of the others: a job whose
/// worker is alive is left running, a job whose queueing lock a waiting
/// job holds is failed instead of reset, and of failed jobs only those that
/// can wait together are retried.
#[tokio::test]
async fn resets_and_retries_leave_what_they_cannot_change_and_say_why() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let worker: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
        .fetch_one(pool)
        .await
        .unwrap();
    let running = job(pool, "t", "default").await;
    let twinned = job(pool, "t", "default").await;
    let orphaned = job(pool, "t", "default").await;
    exec(
        pool,
        &format!(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = {worker}
             WHERE id = {running};
             UPDATE procrastinate_jobs SET status = 'doing', queueing_lock = 'QL'
             WHERE id IN ({twinned}, {orphaned});
             UPDATE procrastinate_jobs SET queueing_lock = NULL WHERE id = {orphaned};
             UPDATE procrastinate_jobs SET started_at = now() - interval '20 minutes'
             WHERE status = 'doing';"
        ),
    )
    .await;
    let twin = job(pool, "t", "default").await;
    exec(
        pool,
        &format!("UPDATE procrastinate_jobs SET queueing_lock = 'QL' WHERE id = {twin}"),
    )
    .await;

    let alone = dawdle(&db, &["reset-stalled", &running.to_string()]).await;
    assert_eq!(alone.status.code(), Some(1));
    let said = stderr(&alone);
    assert!(
        said.contains("heartbeat") && said.contains("--even-if-alive"),
        "{said}"
    );
    let reset = dawdle(&db, &["reset-stalled", "--older-than", "10m", "--json"]).await;
    assert_eq!(reset.status.code(), Some(0), "{}", stderr(&reset));
    let report = json_of(&reset);
    assert_eq!(report["ids"], json!([orphaned]));
    assert_eq!(report["failed_instead"], json!([twinned]));
    assert_eq!(report["skipped_alive"], json!([running]));
    assert_eq!(status(pool, running).await.as_deref(), Some("doing"));
    assert_eq!(status(pool, twinned).await.as_deref(), Some("failed"));
    assert_eq!(status(pool, twin).await.as_deref(), Some("todo"));
    let forced = dawdle(
        &db,
        &["reset-stalled", &running.to_string(), "--even-if-alive"],
    )
    .await;
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert!(stdout(&forced).contains("reset 1 stalled job(s)"));

    // Failed jobs: two of one queueing lock, one whose lock the twin holds,
    // one with a lock too large for the index of waiting jobs, one plain.
    let mut failed = Vec::new();
    for _ in 0..4 {
        let id = job(pool, "t", "retry").await;
        fail(pool, id, "Boom", "failed").await;
        failed.push(id);
    }
    let [older, newer, huge, plain] = failed[..] else {
        unreachable!()
    };
    exec(
        pool,
        &format!(
            "UPDATE procrastinate_jobs SET queueing_lock = 'QL2' WHERE id IN ({older}, {newer});
             UPDATE procrastinate_jobs
             SET lock = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) AS g)
             WHERE id = {huge};"
        ),
    )
    .await;
    let dry = json_of(&dawdle(&db, &["retry-failed", "--dry-run", "--json"]).await);
    assert_eq!(dry["matching"], 3, "{dry}");
    let retried = dawdle(&db, &["retry-failed", "retry"]).await;
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    let text = stdout(&retried);
    assert!(
        text.contains("retried 2 failed job(s) in queue retry"),
        "{text}"
    );
    assert!(text.contains("left 2 failed job(s) as they were"), "{text}");
    assert!(
        text.contains(&format!(
            "job {older}: a newer failed job with the same queueing lock is retried instead"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "job {huge}: the database refused it with SQLSTATE 54000"
        )),
        "{text}"
    );
    for (id, expected) in [
        (older, "failed"),
        (newer, "todo"),
        (huge, "failed"),
        (plain, "todo"),
    ] {
        assert_eq!(
            status(pool, id).await.as_deref(),
            Some(expected),
            "job {id}"
        );
    }
    // The job failed instead of reset waits behind its twin's queueing lock.
    let blocked = dawdle(&db, &["retry", &twinned.to_string()]).await;
    assert_eq!(blocked.status.code(), Some(1));
    assert!(
        stderr(&blocked).contains("another job waits with the same queueing lock"),
        "{}",
        stderr(&blocked)
    );
}

/// A jobs table dawdle did not create (here one made by hand) gets what it
/// is and what to run, not a missing column's error from deep in a query.
#[tokio::test]
async fn commands_on_a_jobs_table_dawdle_did_not_create_say_what_to_run() {
    let db = TestDatabase::empty().await;
    exec(
        db.pool(),
        "CREATE TABLE procrastinate_jobs (id bigserial PRIMARY KEY, status text)",
    )
    .await;
    for args in [&["jobs"][..], &["stats"], &["retry", "1"], &["failed"]] {
        let output = dawdle(&db, args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let said = stderr(&output);
        assert!(
            said.contains("which dawdle did not create") && said.contains("dawdle schema"),
            "{args:?}: {said}"
        );
        assert!(!said.contains("does not exist"), "{args:?}: {said}");
    }
}

/// An age longer than any timestamp can be from now selects what is older
/// than anything (nothing here), instead of failing with "timestamp out of
/// range" from the database.
#[tokio::test]
async fn ages_beyond_any_timestamp_select_nothing_instead_of_failing() {
    let db = TestDatabase::with_schema().await;
    let stuck = job(db.pool(), "t", "default").await;
    exec(
        db.pool(),
        &format!("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = {stuck}"),
    )
    .await;
    for args in [
        &["purge", "--older-than", "99999999d", "--json"][..],
        &["reset-stalled", "--older-than", "99999999d", "--json"],
        &["stats", "--stuck-after", "999999999d", "--json"],
        &[
            "healthcheck",
            "--no-worker",
            "--worker-within",
            "999999999d",
            "--json",
        ],
    ] {
        let output = dawdle(&db, args).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        json_of(&output);
    }
    assert_eq!(status(db.pool(), stuck).await.as_deref(), Some("doing"));
}
