//! The `dawdle` binary as a user runs it: exit codes, output, error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dawdle::testing::{eventually, PgBouncer, TestDatabase};

fn dawdle(database_url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dawdle"));
    command.args(args).env_remove("JOB_QUEUE_DATABASE_URL");
    if let Some(url) = database_url {
        command.env("JOB_QUEUE_DATABASE_URL", url);
    }
    command.output().expect("run dawdle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends SIGTERM to process `pid`, as a service manager stops the worker.
fn sigterm(pid: u32) {
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Runs `dawdle` off the async runtime (it is a blocking child process).
async fn run(database_url: Option<String>, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dawdle(database_url.as_deref(), &args)
    })
    .await
    .unwrap()
}

#[test]
fn version_and_help_for_every_command() {
    let version = dawdle(None, &["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!("dawdle {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["schema", "--help"],
        &["schema", "apply", "--help"],
        &["schema", "check", "--help"],
        &["defer", "--help"],
        &["jobs", "--help"],
        &["db", "--help"],
        &["db", "start", "--help"],
        &["worker", "--help"],
        &["bench", "triggers", "--help"],
    ] {
        let output = dawdle(None, args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(text(&output.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn typos_get_usage_and_exit_code_2() {
    let output = dawdle(None, &["shedule", "apply"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("Usage:"),
        "{}",
        text(&output.stderr)
    );
    let output = dawdle(
        None,
        &[
            "defer",
            "t",
            "{}",
            "--at",
            "2030-01-01T00:00:00Z",
            "--in",
            "5",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot be used with"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_bad_listen_url_is_refused_without_showing_its_password() {
    for url in [
        "postgresql://u:hunter2secret@x:notaport/jobs",
        "mysql://u:hunter2secret@x/jobs",
    ] {
        let output = dawdle(
            Some("postgresql://postgres@127.0.0.1:1/jobs"),
            &["worker", "--one-shot", "--pgbouncer", "--listen-url", url],
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--listen-url"), "{stderr}");
        assert!(!stderr.contains("hunter2secret"), "{stderr}");
    }
}

#[test]
fn bench_latency_through_pgbouncer_needs_its_url_and_says_so() {
    for (args, says) in [
        (
            &["bench", "latency", "--consumer", "dawdle,dawdle-pgbouncer"][..],
            "need --pgbouncer URL",
        ),
        (
            &[
                "bench",
                "latency",
                "--pgbouncer",
                "postgresql://localhost:6432/jobs",
            ][..],
            "add one to --consumer",
        ),
        (
            &[
                "bench",
                "latency",
                "--consumer",
                "dawdle-pgbouncer-listen",
                "--pgbouncer",
                "postgresql://localhost:6432/jobs",
                "--synchronous-commit",
                "off",
            ][..],
            "cannot be measured through PgBouncer",
        ),
    ] {
        let output = dawdle(None, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            text(&output.stderr).contains(says),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[tokio::test]
async fn schema_check_apply_and_check_again() {
    let db = TestDatabase::empty().await;
    let url = Some(db.url());

    let check = run(url.clone(), &["schema", "check"]).await;
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(out.contains("schema is NOT current"), "{out}");
    assert!(out.contains("schema not applied"), "{out}");
    assert!(
        out.contains("pending migration 0001_procrastinate_v3_interface"),
        "{out}"
    );

    let apply = run(url.clone(), &["schema", "apply"]).await;
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(text(&apply.stdout).contains("applied migration 0001_procrastinate_v3_interface"));
    let again = run(url.clone(), &["schema", "apply"]).await;
    assert!(
        text(&again.stdout).contains("nothing to apply"),
        "{}",
        text(&again.stdout)
    );

    let check = run(url.clone(), &["schema", "check", "--json"]).await;
    assert!(check.status.success());
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["current"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[tokio::test]
async fn defer_prints_the_id_and_rejects_bad_input() {
    let db = TestDatabase::with_schema().await;
    let url = Some(db.url());

    let output = run(
        url.clone(),
        &[
            "defer",
            "email.send",
            r#"{"to": "a@example.com"}"#,
            "--queue",
            "email",
            "--priority",
            "-2",
            "--lock",
            "user-1",
            "--queueing-lock",
            "mail-1",
            "--in",
            "60",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let id: i64 = text(&output.stdout)
        .trim()
        .parse()
        .expect("the job id alone on stdout");
    let job = dawdle::admin::get_job(db.pool(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.queue_name.as_str(), job.priority), ("email", -2));
    assert_eq!(job.lock.as_deref(), Some("user-1"));
    assert!(job.scheduled_at.is_some());

    let again = run(
        url.clone(),
        &["defer", "email.send", "{}", "--queueing-lock", "mail-1"],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already waiting"),
        "{}",
        text(&again.stderr)
    );

    let bad_json = run(url.clone(), &["defer", "t", "{not json"]).await;
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(
        text(&bad_json.stderr).contains("not valid JSON"),
        "{}",
        text(&bad_json.stderr)
    );

    let not_object = run(url.clone(), &["defer", "t", "[1, 2]"]).await;
    assert_eq!(not_object.status.code(), Some(1));
    assert!(
        text(&not_object.stderr).contains("must be a JSON object"),
        "{}",
        text(&not_object.stderr)
    );

    let long = "t".repeat(129);
    let too_long = run(url.clone(), &["defer", &long]).await;
    assert_eq!(too_long.status.code(), Some(1));
    assert!(
        text(&too_long.stderr).contains("the limit is 128"),
        "{}",
        text(&too_long.stderr)
    );

    let json = run(url.clone(), &["defer", "t", r#"{"k": 1}"#, "--json"]).await;
    let job: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(job["task_name"], "t");
    assert_eq!(job["args"], serde_json::json!({"k": 1}));
    assert_eq!(job["status"], "todo");

    let listed = run(url.clone(), &["jobs", "--queue", "email"]).await;
    let out = text(&listed.stdout);
    assert!(out.starts_with("ID"), "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        [id.to_string().as_str(), "email", "email.send", "todo"],
        "{out}"
    );
    let listed = run(url, &["jobs", "--json"]).await;
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(jobs.len(), 2);
}

#[tokio::test]
async fn errors_name_the_database_and_the_fix() {
    let unreachable = run(
        Some("postgresql://app:s3cret@127.0.0.1:1/jobs".into()),
        &["jobs"],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(1));
    let err = text(&unreachable.stderr);
    assert!(
        err.contains("postgresql://app:***@127.0.0.1:1/jobs"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");

    let db = TestDatabase::empty().await;
    let missing = run(Some(db.url()), &["jobs"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("apply-schema.sh"), "{err}");
}

/// Stops the embedded cluster of a test's DAWDLE_HOME and removes it, even
/// when the test fails.
struct EmbeddedHome(PathBuf);

impl Drop for EmbeddedHome {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args(["db", "stop"])
            .env("DAWDLE_HOME", &self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dawdle_at_home(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args(args)
        .env_remove("JOB_QUEUE_DATABASE_URL")
        .env("DAWDLE_HOME", home)
        .output()
        .expect("run dawdle")
}

#[test]
fn without_a_url_the_embedded_database_is_started_and_said_so() {
    let home =
        EmbeddedHome(std::env::temp_dir().join(format!("dawdle-home-{}", std::process::id())));
    let apply = dawdle_at_home(&home.0, &["schema", "apply"]);
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    let notice = text(&apply.stderr);
    assert!(
        notice.contains("JOB_QUEUE_DATABASE_URL is not set; using the embedded PostgreSQL"),
        "{notice}"
    );

    let id = dawdle_at_home(&home.0, &["defer", "hello.world", r#"{"n": 1}"#]);
    assert!(id.status.success(), "{}", text(&id.stderr));
    let listed = dawdle_at_home(&home.0, &["jobs", "--json"]);
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["task_name"], "hello.world");

    // The URL works for other clients, and the cluster keeps its data.
    let url = text(&dawdle_at_home(&home.0, &["db", "url"]).stdout)
        .trim()
        .to_string();
    assert!(
        url.starts_with("postgresql://postgres@localhost:5432/jobs?host=/"),
        "{url}"
    );
    let status = dawdle_at_home(&home.0, &["db", "status"]);
    assert!(status.status.success() && text(&status.stdout).starts_with("running"));
    let stop = dawdle_at_home(&home.0, &["db", "stop"]);
    assert!(
        text(&stop.stdout).contains("stopped"),
        "{}",
        text(&stop.stdout)
    );
    let status = dawdle_at_home(&home.0, &["db", "status"]);
    assert_eq!(status.status.code(), Some(3));
    let listed = dawdle_at_home(&home.0, &["jobs", "--json"]);
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(jobs.len(), 1, "data survives a restart");
}

#[tokio::test]
async fn one_shot_worker_runs_the_diagnostic_tasks_and_reports_failures_in_its_exit_code() {
    let db = TestDatabase::with_schema().await;
    let url = Some(db.url());
    for (task, args) in [
        ("dawdle.noop", "{}"),
        ("dawdle.sleep", r#"{"seconds": 0.05}"#),
    ] {
        assert!(run(url.clone(), &["defer", task, args])
            .await
            .status
            .success());
    }
    let ok = run(
        url.clone(),
        &["worker", "--one-shot", "--json", "--log-format", "json"],
    )
    .await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["succeeded"], 2);
    assert!(report["peak_rss_kb"].as_u64().unwrap() > 0);
    // JSON logs, one object per line, including the startup line.
    let logs: Vec<serde_json::Value> = text(&ok.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "job_queue_worker_started"),
        "{logs:?}"
    );
    assert!(logs
        .iter()
        .any(|l| l["message"] == "job succeeded" && l["task"] == "dawdle.noop"));

    let id = run(
        url.clone(),
        &[
            "defer",
            "dawdle.fail",
            r#"{"kind": "ConnectionError", "message": "smtp down"}"#,
        ],
    )
    .await;
    let id: i64 = text(&id.stdout).trim().parse().unwrap();
    let failed = run(url, &["worker", "--one-shot"]).await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let (kind, message): (String, String) = sqlx::query_as(
        "SELECT error, error_message FROM procrastinate_events WHERE job_id = $1 AND type = 'error'",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ConnectionError", "smtp down")
    );
}

#[tokio::test]
async fn sigterm_stops_the_worker_cleanly_and_puts_unfinished_jobs_back() {
    let db = TestDatabase::with_schema().await;
    let url = db.url();
    let id = run(
        Some(url.clone()),
        &["defer", "dawdle.sleep", r#"{"seconds": 600}"#],
    )
    .await;
    let id: i64 = text(&id.stdout).trim().parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args(["worker", "--shutdown-timeout", "0.5"])
        .env("JOB_QUEUE_DATABASE_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the job to start", async || {
        let status: String =
            sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        status == "doing"
    })
    .await;
    sigterm(child.id());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let logs = text(&output.stderr);
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("job_queue_worker_stopped"), "{logs}");
    let (status, workers): (String, i64) = sqlx::query_as(
        "SELECT (SELECT status::text FROM procrastinate_jobs WHERE id = $1),
                (SELECT count(*) FROM procrastinate_workers)",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), workers), ("todo", 0));
}

#[tokio::test]
async fn bench_drain_measures_a_real_worker_that_claims_ahead_only_when_allowed() {
    let db = TestDatabase::with_schema().await;
    let mut jobs_per_claim = Vec::new();
    for prefetch in ["0", "1000"] {
        let out = run(
            Some(db.url()),
            &[
                "bench",
                "drain",
                "--jobs",
                "2000",
                "--concurrency",
                "2",
                "--rounds",
                "1",
                "--prefetch",
                prefetch,
                // Two levels of history in one run, the table growing
                // between them.
                "--history",
                "1500,0",
                "--json",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["jobs"], 2000);
        assert_eq!(report["history_jobs"], serde_json::json!([0, 1500]));
        let levels: Vec<&serde_json::Value> = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| &result["history_jobs"])
            .collect();
        assert_eq!(levels, [0, 1500]);
        let round = &report["results"][0]["rounds"][0];
        assert!(round["drain_jobs_per_second_wall"].as_f64().unwrap() > 0.0);
        assert!(round["peak_rss_kb"].as_u64().unwrap() > 0);
        // The worker process ran 2,000 jobs: it used some CPU, and the
        // machine was busy for some of the drain.
        assert!(
            round["worker_cpu_seconds"].as_f64().unwrap() > 0.0,
            "{round}"
        );
        let busy = round["machine_cpu_busy"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 1.0, "{round}");
        jobs_per_claim.push(round["mean_jobs_per_claim"].as_f64().unwrap());
    }
    // Two slots: without prefetch no claim takes more than two jobs; with
    // it, no-op jobs teach the worker to claim well ahead (how far follows
    // the claim's round trip: about two round trips' worth of jobs).
    assert!(jobs_per_claim[0] <= 2.0, "{jobs_per_claim:?}");
    assert!(jobs_per_claim[1] > 4.0, "{jobs_per_claim:?}");
}

#[tokio::test]
async fn bench_latency_measures_the_worker_and_the_sql_floor_on_the_same_jobs() {
    let db = TestDatabase::with_schema().await;
    let out = run(
        Some(db.url()),
        &[
            "bench",
            "latency",
            "--rate",
            "200",
            "--seconds",
            "5",
            "--idle-transaction",
            "without",
            "--consumer",
            "dawdle,sql-floor",
            "--synchronous-commit",
            "off",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    let consumers: Vec<&str> = results
        .iter()
        .map(|result| result["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(consumers, ["dawdle", "sql-floor"]);
    for result in results {
        assert_eq!(result["synchronous_commit"], "off");
        // Every job deferred was picked up, and each defer was timed.
        let jobs = result["whole_run"]["jobs"].as_i64().unwrap();
        assert!(jobs >= 500, "{result}");
        assert_eq!(result["defer_round_trip"]["jobs"], jobs, "{result}");
        let p50 = result["whole_run"]["p50_ms"].as_f64().unwrap();
        let p99 = result["whole_run"]["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{result}");
    }
}

#[tokio::test]
async fn sigterm_puts_back_jobs_claimed_ahead_and_logs_each_one() {
    let db = TestDatabase::with_schema().await;
    let url = db.url();
    // Fast jobs teach the worker to claim ahead; the slow one then keeps the
    // only slot while the jobs claimed behind it wait.
    let noops = "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
                 SELECT 'default', 'dawdle.noop', '{}' FROM generate_series(1, 300)";
    sqlx::query(noops).execute(db.pool()).await.unwrap();
    let slow: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('default', 'dawdle.sleep', '{\"seconds\": 600}') RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(noops).execute(db.pool()).await.unwrap();
    // Hundreds of log lines: to a file, since a pipe nobody reads until
    // the end would fill up and block the worker.
    let log_path = std::env::temp_dir().join(format!("{}-worker.log", db.name()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args([
            "worker",
            "--concurrency",
            "1",
            "--shutdown-timeout",
            "0.5",
            "--log-format",
            "json",
        ])
        .env("JOB_QUEUE_DATABASE_URL", &url)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "jobs claimed behind the slow one",
        async || {
            // A job held ready is `doing` too: the worker's log says when the
            // slow one really started.
            let slow_started = std::fs::read_to_string(&log_path)
                .unwrap()
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .any(|line| line["message"] == "job started" && line["job_id"] == slow);
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' AND id > $1",
            )
            .bind(slow)
            .fetch_one(db.pool())
            .await
            .unwrap();
            slow_started && held > 0
        },
    )
    .await;
    sigterm(child.id());
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert_eq!(status.code(), Some(0), "{logs}");

    // Every job put back unstarted has a log line naming it, and waits
    // again as it was: todo, no attempt, no error.
    let mut logged: Vec<i64> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "job put back unstarted")
        .map(|line| {
            assert_eq!(line["task"], "dawdle.noop");
            assert_eq!(line["attempt"], 1);
            line["job_id"].as_i64().unwrap()
        })
        .collect();
    logged.sort_unstable();
    let put_back: Vec<i64> = sqlx::query_scalar(
        "SELECT j.id FROM procrastinate_jobs j
         WHERE j.status = 'todo' AND j.attempts = 0 AND j.started_at IS NULL
           AND EXISTS (SELECT 1 FROM procrastinate_events e
                       WHERE e.job_id = j.id AND e.type = 'deferred_for_retry')
           AND NOT EXISTS (SELECT 1 FROM procrastinate_events e
                           WHERE e.job_id = j.id AND e.type = 'error')
         ORDER BY j.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(!put_back.is_empty());
    assert_eq!(logged, put_back);
    let doing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(doing, 0);
}

#[tokio::test]
async fn a_worker_behind_pgbouncer_hears_new_jobs_on_its_listen_url() {
    let db = TestDatabase::with_schema().await;
    let Some(bouncer) = PgBouncer::start(&db, 2).await else {
        return;
    };
    // --listen-url is for a worker behind PgBouncer only.
    let refused = run(
        Some(db.url()),
        &["worker", "--one-shot", "--listen-url", &db.url()],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("--listen-url is for a worker behind PgBouncer"),
        "{}",
        text(&refused.stderr)
    );

    // Statements through PgBouncer, LISTEN on the direct URL; polls and
    // heartbeats far apart, so only a notification brings the job in time.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args(["worker", "--pgbouncer", "--listen-url", &db.url()])
        .args(["--poll-interval", "300s", "--heartbeat-interval", "60s"])
        .args(["--stalled-after", "600s"])
        .env("JOB_QUEUE_DATABASE_URL", bouncer.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the worker to register and LISTEN on its direct connection",
        async || {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT FROM procrastinate_workers)
                    AND EXISTS (SELECT FROM pg_stat_activity
                                WHERE datname = current_database() AND query ILIKE 'LISTEN%')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap()
        },
    )
    .await;
    let job: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('default', 'dawdle.noop', '{}') RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the job to run on its notification",
        async || {
            sqlx::query_scalar::<_, String>(
                "SELECT status::text FROM procrastinate_jobs WHERE id = $1",
            )
            .bind(job)
            .fetch_one(db.pool())
            .await
            .unwrap()
                == "succeeded"
        },
    )
    .await;
    sigterm(child.id().unwrap());
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
}
