//! The CLI's read commands render every row anyone may have written:
//! cells longer than a terminal line (and than the formatter's 65,535-wide
//! limit), infinite and far timestamps, arguments Rust cannot represent,
//! control characters and escape sequences. Nothing panics, tables stay
//! bounded, and no raw escape byte reaches the terminal.

use std::process::{Command, Output};

use dawdle::testing::TestDatabase;

fn dawdle(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args(args)
        .env("JOB_QUEUE_DATABASE_URL", url)
        .output()
        .expect("run dawdle")
}

/// Runs `dawdle` off the async runtime (it is a blocking child process).
async fn run(url: &str, args: &[&str]) -> Output {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dawdle(&url, &args)
    })
    .await
    .unwrap()
}

/// Rows a worker would have failed on before, and a person can still write.
async fn hostile_rows(pool: &sqlx::PgPool) -> Vec<i64> {
    let long = "x".repeat(70_000);
    let statements = [
        format!(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, lock)
             VALUES ('default', 'dawdle.noop', '{{\"blob\": \"{long}\"}}', '{long}')"
        ),
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('default', 'dawdle.noop', '{\"n\": 1e400}')"
            .to_string(),
        format!(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
             VALUES ('default', 'dawdle.noop', '{{\"deep\": {}1{}}}')",
            "[".repeat(300),
            "]".repeat(300)
        ),
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
         VALUES ('default', 'dawdle.noop', '{}', 'infinity')"
            .to_string(),
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at, created_at)
         VALUES ('default', 'dawdle.noop', '{}', '-infinity', '-infinity')"
            .to_string(),
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
         VALUES ('default', 'dawdle.noop', '{}', '294276-12-31 23:59:59+00')"
            .to_string(),
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES (E'evil\\x1b[2J', E'task\\x1b]0;pwned\\x07\\u202e', '{\"s\": \"\\u001b[31m\"}')"
            .to_string(),
    ];
    for statement in &statements {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    // A failed job whose error a person (or another library) wrote by hand,
    // unbounded, at an infinite time.
    sqlx::query(&format!(
        "WITH failed AS (
             INSERT INTO procrastinate_jobs (queue_name, task_name, status, args)
             VALUES ('default', 'py.task', 'failed', '{{}}') RETURNING id)
         INSERT INTO procrastinate_events (job_id, type, at, error, error_message, error_traceback)
         SELECT id, 'error', 'infinity', '{long}', E'line\\nbreak\\x1b[0m{long}', '{long}' FROM failed"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar("SELECT id FROM procrastinate_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn assert_rendered(args: &[&str], output: &Output, max_line: usize) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && output.status.code().is_some_and(|code| code <= 1),
        "{args:?} exited {:?}: {stderr}",
        output.status
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\x07'),
        "{args:?}: raw escape in output"
    );
    if max_line > 0 {
        let widest = stdout
            .lines()
            .map(|line| line.chars().count())
            .max()
            .unwrap_or(0);
        assert!(
            widest <= max_line,
            "{args:?}: a line of {widest} characters"
        );
    }
}

#[tokio::test]
async fn read_commands_render_every_hostile_row() {
    let db = TestDatabase::with_schema().await;
    let url = db.url();
    let ids = hostile_rows(db.pool()).await;

    // Tables: every cell bounded (10 columns of at most 100 characters).
    for args in [&["jobs"][..], &["failed"], &["stats"]] {
        let output = run(&url, args).await;
        assert_rendered(args, &output, 1_200);
    }
    let jobs = run(&url, &["jobs"]).await;
    let table = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        table.contains("infinity") && table.contains("-infinity"),
        "{table}"
    );
    assert!(
        table.contains("\\u{1b}"),
        "escape sequences are shown escaped"
    );

    // JSON: whole values, valid JSON, no panics.
    for args in [
        &["jobs", "--json"][..],
        &["failed", "--json"],
        &["stats", "--json"],
    ] {
        let output = run(&url, args).await;
        assert_rendered(args, &output, 0);
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: not JSON: {error}"));
    }
    let listed: serde_json::Value =
        serde_json::from_slice(&run(&url, &["jobs", "--json"]).await.stdout).unwrap();
    let unreadable = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["args_error"].is_string())
        .count();
    assert_eq!(unreadable, 2, "the 1e400 and the deep job say why");
    let left_out: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["args_left_out"].is_object())
        .collect();
    assert_eq!(left_out.len(), 1, "the 70,000-character blob is left out");
    assert!(left_out[0]["args"].is_null());
    assert!(
        left_out[0]["args_left_out"]["stored_bytes"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert!(left_out[0]["args_left_out"]["excerpt"]
        .as_str()
        .unwrap()
        .starts_with("{\"blob\": \"xxx"));

    // One job at a time, as text and JSON, and through the shell.
    for id in ids {
        let id = id.to_string();
        let output = run(&url, &["job", &id]).await;
        assert_rendered(&["job", &id], &output, 4_200);
        let output = run(&url, &["job", &id, "--json"]).await;
        assert_rendered(&["job", &id, "--json"], &output, 0);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap();
    }
    for line in [
        "list_jobs details",
        "failed",
        "list_queues",
        "list_tasks",
        "list_locks",
    ] {
        let args = ["shell", line];
        let output = run(&url, &args).await;
        assert_rendered(&args, &output, 0);
    }
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_a_listing_quietly() {
    let db = TestDatabase::with_schema().await;
    // Far more output than a pipe buffers, so the write fails whatever the
    // timing: 2,000 jobs with 200-character arguments.
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         SELECT 'default', 'dawdle.noop', jsonb_build_object('pad', repeat('p', 200))
         FROM generate_series(1, 2000)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let url = db.url();
    for args in [
        &["jobs", "--limit", "2000"][..],
        &["jobs", "--limit", "2000", "--json"],
    ] {
        let url = url.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_dawdle"))
                .args(&args)
                .env("JOB_QUEUE_DATABASE_URL", url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run dawdle");
            // The reader closes before reading anything (`| head -c 0`).
            drop(child.stdout.take());
            child.wait_with_output().expect("wait for dawdle")
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{:?}: {stderr}", output.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A job with 20,000 error events prints its first and last events and
/// says how many it left out, as text, as JSON and in the shell.
#[tokio::test]
async fn a_long_history_prints_bounded() {
    let db = TestDatabase::with_schema().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
         VALUES ('default', 't', '{}', 'failed') RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         SELECT $1, 'error', 'Kind', 'message', repeat('frame\n', 700)
         FROM generate_series(1, 20000)",
    )
    .bind(id)
    .execute(db.pool())
    .await
    .unwrap();
    let url = db.url();
    let id = id.to_string();
    let text = run(&url, &["job", &id]).await;
    assert_rendered(&["job", &id], &text, 4_200);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.len() < 2_000_000,
        "job {id} printed {} bytes",
        out.len()
    );
    assert!(out.contains("(19780 events left out)"), "{out}");
    let json = run(&url, &["job", &id, "--json"]).await;
    assert!(json.stdout.len() < 2_000_000, "{} bytes", json.stdout.len());
    let detail: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(detail["events_left_out"], 19_780);
    assert_eq!(detail["events"].as_array().unwrap().len(), 220);
    let shell = run(&url, &["shell", &format!("job {id}")]).await;
    assert!(shell.status.success());
    assert!(
        shell.stdout.len() < 2_000_000,
        "{} bytes",
        shell.stdout.len()
    );
}

/// `--json` timestamps: PostgreSQL's infinities are the strings "infinity"
/// and "-infinity" (an RFC 3339 parser accepts no year 262142), finite ones
/// chrono's RFC 3339 form as before.
#[tokio::test]
async fn json_timestamps_say_infinity_and_keep_finite_ones() {
    let db = TestDatabase::with_schema().await;
    let url = db.url();
    let finite = "2026-12-03T10:00:00.5Z";
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs
             (queue_name, task_name, args, status, scheduled_at, created_at, started_at, finished_at)
         VALUES ('mail', 't', '{}', 'failed', 'infinity', $1::timestamptz, '-infinity', 'infinity')
         RETURNING id",
    )
    .bind(finite)
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO procrastinate_events (job_id, type, at)
         VALUES ($1, 'started', '-infinity'), ($1, 'error', 'infinity'), ($1, 'failed', $2::timestamptz)",
    )
    .bind(id)
    .bind(finite)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dawdle_queue_pauses (queue_name, paused_at)
         VALUES ('mail', '-infinity'), ('crm', 'infinity'), ('sms', $1::timestamptz)",
    )
    .bind(finite)
    .execute(db.pool())
    .await
    .unwrap();
    // How a finite timestamp serialized before: chrono's own form.
    let as_before =
        serde_json::to_value(finite.parse::<chrono::DateTime<chrono::Utc>>().unwrap()).unwrap();
    assert_eq!(as_before, "2026-12-03T10:00:00.500Z");

    let json = async |args: &[&str]| -> serde_json::Value {
        let output = run(&url, args).await;
        assert_rendered(args, &output, 0);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: not JSON: {error}"))
    };
    let listed = json(&["jobs", "--json"]).await;
    let detail = json(&["job", &id.to_string(), "--json"]).await;
    for job in [&listed[0], &detail["job"]] {
        assert_eq!(job["scheduled_at"], "infinity", "{job}");
        assert_eq!(job["created_at"], as_before, "{job}");
        assert_eq!(job["started_at"], "-infinity", "{job}");
        assert_eq!(job["finished_at"], "infinity", "{job}");
    }
    let text = detail.to_string();
    assert!(
        !text.contains("262142") && !text.contains("262143"),
        "{text}"
    );
    let events = text.matches(r#""at":"#).count();
    assert!(events >= 3, "{text}");
    assert!(text.contains(r#""at":"-infinity""#), "{text}");
    assert!(text.contains(r#""at":"infinity""#), "{text}");
    assert!(text.contains(&format!(r#""at":{as_before}"#)), "{text}");

    let failed = json(&["failed", "--json"]).await;
    assert_eq!(failed[0]["finished_at"], "infinity", "{failed}");

    let paused = json(&["queue", "list", "--json"]).await;
    let at = |queue: &str| {
        paused
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["queue"] == queue)
            .map(|row| row["paused_at"].clone())
    };
    assert_eq!(at("mail"), Some("-infinity".into()), "{paused}");
    assert_eq!(at("crm"), Some("infinity".into()), "{paused}");
    assert_eq!(at("sms"), Some(as_before), "{paused}");
}
