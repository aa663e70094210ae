//! The service end to end, as the runbook's operators see it: the real
//! binary against real PostgreSQL (a main and a jobs database per test), a
//! stub CRM on a local port, and emails as `.eml` files.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    emails, emails_to, events, eventually, get_json, jobs, post_json, service_env, unreachable_url,
    Service, StubCrm, TempDir,
};
use dawdle::testing::TestDatabase;
use dawdle::NewJob;
use serde_json::json;
use sqlx::Connection;

/// Long enough for a loaded 2-core machine; the conditions usually hold
/// within a second.
const DEADLINE: Duration = Duration::from_secs(60);

async fn register(base: &str, email: &str, name: &str) -> i64 {
    let (status, user) = post_json(
        &format!("{base}/users"),
        json!({"email": email, "name": name}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    user["id"].as_i64().unwrap()
}

/// Waits until every job has finished and returns them.
async fn finished_jobs(pool: &sqlx::PgPool, count: usize) -> Vec<common::JobRow> {
    eventually(DEADLINE, &format!("{count} finished jobs"), || async {
        let jobs = jobs(pool).await;
        let done = jobs.len() == count
            && jobs
                .iter()
                .all(|job| job.status == "succeeded" || job.status == "failed");
        done.then_some(jobs)
    })
    .await
}

#[tokio::test]
async fn registering_and_ordering_send_emails_and_notify_the_crm() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let crm = StubCrm::start(Duration::ZERO).await;
    let mut service = Service::spawn(
        "serve",
        &[],
        &service_env(&main, &jobs_db, mail.path(), &crm.url),
        None,
    );
    let base = service.base_url().await;
    let started = service
        .wait_for_log("job_queue_worker_started", DEADLINE)
        .await;
    assert_eq!(started["level"], "INFO", "{started}");
    assert!(started["worker_id"].is_i64(), "{started}");

    let user_id = register(&base, "Ada@Example.com", "Ada Lovelace").await;
    let (status, order) = post_json(
        &format!("{base}/orders"),
        json!({"user_id": user_id, "items": [
            {"sku": "book", "quantity": 2, "unit_price_cents": 1250},
            {"sku": "pen", "quantity": 1, "unit_price_cents": 199}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total_cents"], 2699);
    let order_id = order["id"].as_i64().unwrap();

    let (status, user) = get_json(&format!("{base}/users/{user_id}")).await;
    assert_eq!(
        (status.as_u16(), &user["email"]),
        (200, &json!("ada@example.com"))
    );
    let (status, read_back) = get_json(&format!("{base}/orders/{order_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read_back["items"][1]["sku"], "pen");

    let finished = finished_jobs(jobs_db.pool(), 4).await;
    let tasks: BTreeSet<(&str, &str)> = finished
        .iter()
        .map(|job| (job.task_name.as_str(), job.status.as_str()))
        .collect();
    assert_eq!(
        tasks,
        BTreeSet::from([
            ("crm.notify_event", "succeeded"),
            ("email.send_order_confirmation", "succeeded"),
            ("email.send_welcome", "succeeded"),
        ])
    );

    // The jobs dashboard is mounted on the API (open: the service listens
    // on a loopback address).
    for page in [
        "/admin/jobs",
        "/admin/jobs/",
        "/admin/jobs/jobs?status=succeeded",
    ] {
        let response = common::http()
            .get(format!("{base}{page}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{page}: {body}");
        assert!(
            body.contains("email.send_welcome") || body.contains("Queue health"),
            "{page}: {body}"
        );
    }

    let sent = eventually(DEADLINE, "two complete emails", || async {
        let sent = emails_to(mail.path(), "ada@example.com");
        (sent.len() == 2).then_some(sent)
    })
    .await;
    let welcome = sent
        .iter()
        .find(|text| text.contains("Subject: Welcome to the Dawdle Shop"))
        .expect("a welcome email");
    assert!(welcome.contains("Hello Ada Lovelace"), "{welcome}");
    assert!(
        welcome.contains(&format!("Message-ID: <user-{user_id}-registered.welcome@")),
        "{welcome}"
    );
    let confirmation = sent
        .iter()
        .find(|text| text.contains(&format!("Subject: Your order #{order_id}")))
        .expect("an order confirmation");
    assert!(confirmation.contains("Total: 26.99"), "{confirmation}");

    let mut keys: Vec<String> = crm
        .calls()
        .iter()
        .map(|call| call.idempotency_key.clone())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("order-{order_id}-placed"),
            format!("user-{user_id}-registered")
        ]
    );
    let registered = crm
        .calls()
        .into_iter()
        .find(|call| call.body["event"]["type"] == "user_registered")
        .unwrap();
    assert_eq!(registered.body["event"]["email"], "ada@example.com");

    // Domain rules answer before any job exists.
    let (status, error) = post_json(
        &format!("{base}/users"),
        json!({"email": "ada@example.com", "name": "Again"}),
    )
    .await;
    assert_eq!(status, 409, "{error}");
    let (status, _) = post_json(
        &format!("{base}/users"),
        json!({"email": "nobody", "name": "X"}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, error) = post_json(
        &format!("{base}/orders"),
        json!({"user_id": 999, "items": [{"sku": "a", "quantity": 1, "unit_price_cents": 1}]}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(error["error"], "user 999 does not exist");
    assert_eq!(get_json(&format!("{base}/users/999")).await.0, 404);
    assert_eq!(jobs(jobs_db.pool()).await.len(), 4);

    // /metrics: what the in-process worker did, and the queue as the
    // jobs database shows it.
    let response = common::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let exposition = response.text().await.unwrap();
    for line in [
        r#"dawdle_job_outcomes_total{task="email.send_welcome",queue="email",outcome="succeeded"} 1"#,
        r#"dawdle_job_outcomes_total{task="email.send_order_confirmation",queue="email",outcome="succeeded"} 1"#,
        r#"dawdle_job_outcomes_total{task="crm.notify_event",queue="crm",outcome="succeeded"} 2"#,
        "dawdle_queue_gauges_up 1",
        "# TYPE dawdle_attempt_duration_seconds histogram",
    ] {
        assert!(
            exposition
                .lines()
                .any(|l| l == line || (line.starts_with('#') && l.starts_with(line))),
            "{line} missing from:\n{exposition}"
        );
    }

    // Every line on stdout is a JSON object: the logs are structured.
    assert!(service.json_logs().len() > 5);
    assert!(service
        .find_log("http_request")
        .is_some_and(|line| line["path"] == "/users" && line["status"] == 201));
}

#[tokio::test]
async fn health_reports_the_api_both_databases_and_the_worker() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let mut service = Service::spawn(
        "serve",
        &[],
        &service_env(&main, &jobs_db, mail.path(), &unreachable_url()),
        None,
    );
    let base = service.base_url().await;
    service
        .wait_for_log("job_queue_worker_started", DEADLINE)
        .await;
    let (status, health) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["api"], "ok");
    assert_eq!(health["main_database"]["status"], "ok");
    assert_eq!(health["jobs_database"]["status"], "ok");
    assert_eq!(health["worker"], json!({"enabled": true, "running": true}));
    assert_eq!(health["outbox"]["enabled"], false);

    // The jobs database goes away (the runbook's "Database Connection
    // Issues"): the API stays up and says which part is unhealthy.
    let mut admin =
        sqlx::PgConnection::connect_with(&jobs_db.cluster().connect_options("postgres"))
            .await
            .unwrap();
    sqlx::query(&format!(
        "DROP DATABASE \"{}\" WITH (FORCE)",
        jobs_db.name()
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let health = eventually(DEADLINE, "/health to report the jobs database", || async {
        let (status, health) = get_json(&format!("{base}/health")).await;
        (status == 503).then_some(health)
    })
    .await;
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["main_database"]["status"], "ok");
    assert_eq!(health["jobs_database"]["status"], "unavailable");
    assert!(
        health["jobs_database"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("does not exist") || error.contains("terminat")),
        "{health}"
    );
}

#[tokio::test]
async fn with_the_crm_down_jobs_retry_with_backoff_then_fail_as_connection_error() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let crm_url = unreachable_url();
    let mut env = service_env(&main, &jobs_db, mail.path(), &crm_url);
    // Waits of 2 s then 4 s (± 10 % jitter): backoff visible in seconds.
    env.push(("JOB_RETRY_BASE_SECONDS", "2".into()));
    env.push(("JOB_MAX_RETRIES", "2".into()));
    let mut service = Service::spawn("serve", &[], &env, None);
    let base = service.base_url().await;
    let user_id = register(&base, "grace@example.com", "Grace Hopper").await;

    let finished = finished_jobs(jobs_db.pool(), 2).await;
    let crm_job = finished
        .iter()
        .find(|job| job.task_name == "crm.notify_event")
        .unwrap();
    assert_eq!((crm_job.status.as_str(), crm_job.attempts), ("failed", 3));
    // The email does not depend on the CRM.
    let email_job = finished
        .iter()
        .find(|job| job.task_name == "email.send_welcome")
        .unwrap();
    assert_eq!(email_job.status, "succeeded");

    let history = events(jobs_db.pool(), crm_job.id).await;
    let errors: Vec<&common::EventRow> = history
        .iter()
        .filter(|event| event.event_type == "error")
        .collect();
    assert_eq!(errors.len(), 3, "{history:#?}");
    for error in &errors {
        assert_eq!(error.error.as_deref(), Some("ConnectionError"));
        let traceback = error.error_traceback.as_deref().unwrap();
        assert!(
            traceback.starts_with("ConnectionError: call the CRM API at http://127.0.0.1:"),
            "{traceback}"
        );
        assert!(traceback.contains("caused by:"), "{traceback}");
    }
    assert_eq!(history.last().unwrap().event_type, "failed");

    // The gap from each retry being recorded to the next start is the
    // backoff, and it grows.
    let mut gaps = Vec::new();
    for (index, event) in history.iter().enumerate() {
        if event.event_type != "deferred_for_retry" {
            continue;
        }
        let next_start = history[index..]
            .iter()
            .find(|later| later.event_type == "started")
            .expect("a start after each retry");
        gaps.push((next_start.at - event.at).as_seconds_f64());
    }
    assert_eq!(gaps.len(), 2, "{history:#?}");
    // The retry was scheduled a little before its event was written (the
    // outcome is flushed in batches), hence the slack below 90 % of the wait.
    assert!(gaps[0] >= 1.5, "first wait {:.3} s", gaps[0]);
    assert!(gaps[1] >= 3.2, "second wait {:.3} s", gaps[1]);
    assert!(gaps[1] > gaps[0], "waits {gaps:?} do not grow");

    // The runbook's "Recent errors by type" query shows the pattern.
    let by_type: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT task_name, error, COUNT(*)
         FROM procrastinate_jobs j
         JOIN procrastinate_events e ON j.id = e.job_id
         WHERE e.type = 'error'
           AND e.at > NOW() - INTERVAL '1 hour'
         GROUP BY task_name, error",
    )
    .fetch_all(jobs_db.pool())
    .await
    .unwrap();
    assert_eq!(
        by_type,
        [(
            "crm.notify_event".to_string(),
            Some("ConnectionError".to_string()),
            3
        )]
    );
    assert_eq!(emails_to(mail.path(), "grace@example.com").len(), 1);
    let failure = service.find_log("job failed").expect("a failure log line");
    assert_eq!(failure["error_kind"], "ConnectionError");
    assert_eq!(
        crm_job.args["event_key"],
        format!("user-{user_id}-registered")
    );

    // The CRM is back: the runbook's retry script, then the job succeeds.
    let crm = StubCrm::start_on(&crm_url, Duration::ZERO).await;
    let dawdle =
        std::path::Path::new(env!("CARGO_BIN_EXE_reference-service")).with_file_name("dawdle");
    assert!(
        dawdle.exists(),
        "{} is missing: build the workspace (cargo build --workspace) before these tests",
        dawdle.display()
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/jobs/retry-job.sh");
    let retried = std::process::Command::new(script)
        .arg(crm_job.id.to_string())
        .env("JOB_QUEUE_DATABASE_URL", jobs_db.url())
        .env("DAWDLE_BIN", &dawdle)
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(String::from_utf8_lossy(&retried.stdout).contains("retried 1 job"));
    let id = crm_job.id;
    eventually(
        Duration::from_secs(30),
        "the retried job to succeed",
        || {
            let pool = jobs_db.pool().clone();
            async move {
                let status: String =
                    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                (status == "succeeded").then_some(())
            }
        },
    )
    .await;
    assert_eq!(crm.calls().len(), 1);
}

#[tokio::test]
async fn with_the_worker_disabled_jobs_wait_in_todo_until_a_worker_starts() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let crm = StubCrm::start(Duration::ZERO).await;
    let env = service_env(&main, &jobs_db, mail.path(), &crm.url);
    let mut api_env = env.clone();
    api_env.push(("JOB_QUEUE_ENABLED", "false".into()));
    let mut api = Service::spawn("serve without worker", &[], &api_env, None);
    let base = api.base_url().await;
    let disabled = api
        .wait_for_log("job_queue_worker_disabled", DEADLINE)
        .await;
    assert_eq!(disabled["level"], "WARN");

    let (status, health) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health["worker"],
        json!({"enabled": false, "running": false})
    );

    register(&base, "linus@example.com", "Linus").await;
    // The request deferred its jobs before answering, and no worker exists
    // that could take them.
    let waiting = jobs(jobs_db.pool()).await;
    assert_eq!(waiting.len(), 2);
    assert!(
        waiting.iter().all(|job| job.status == "todo"),
        "{waiting:?}"
    );
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(jobs_db.pool())
        .await
        .unwrap();
    assert_eq!(workers, 0);
    assert!(api.find_log("job_queue_worker_started").is_none());

    // The same binary as a worker alone drains them.
    let mut worker = Service::spawn("worker", &["worker"], &env, None);
    worker
        .wait_for_log("job_queue_worker_started", DEADLINE)
        .await;
    let finished = finished_jobs(jobs_db.pool(), 2).await;
    assert!(
        finished.iter().all(|job| job.status == "succeeded"),
        "{finished:?}"
    );
    assert_eq!(emails_to(mail.path(), "linus@example.com").len(), 1);
    assert_eq!(crm.calls().len(), 1);

    worker.terminate();
    assert_eq!(worker.wait_for_exit(DEADLINE).await.code(), Some(0));
    assert!(worker.find_log("job_queue_worker_stopped").is_some());
}

#[tokio::test]
async fn outbox_events_committed_before_a_crash_are_relayed_on_the_next_start() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let crm = StubCrm::start(Duration::ZERO).await;
    let mut env = service_env(&main, &jobs_db, mail.path(), &crm.url);
    env.push(("OUTBOX_ENABLED", "true".into()));

    let mut migrate = Service::spawn("migrate", &["migrate"], &env, None);
    assert_eq!(migrate.wait_for_exit(DEADLINE).await.code(), Some(0));

    // What a process that died between two commits left behind. Alan's
    // registration committed with its outbox row; the process died before
    // relaying it. Barbara's was relayed, and her jobs even ran (another
    // worker sent her email), but the process died before marking her row
    // relayed: the next start defers her jobs a second time.
    let mut user_ids = Vec::new();
    for (email, name) in [
        ("alan@example.com", "Alan"),
        ("barbara@example.com", "Barbara"),
    ] {
        let mut tx = main.pool().begin().await.unwrap();
        let user_id: i64 =
            sqlx::query_scalar("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id")
                .bind(email)
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        sqlx::query("INSERT INTO outbox_events (event) VALUES ($1)")
            .bind(json!({
                "type": "user_registered", "user_id": user_id, "email": email, "name": name
            }))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        user_ids.push(user_id);
    }
    let alan_key = format!("user-{}-registered", user_ids[0]);
    let barbara_key = format!("user-{}-registered", user_ids[1]);
    let relayed_before_the_crash = [
        NewJob::new(
            "email.send_welcome",
            json!({"event_key": barbara_key, "user_id": user_ids[1],
                   "email": "barbara@example.com", "name": "Barbara"}),
        )
        .unwrap()
        .queue("email")
        .queueing_lock(format!("email.send_welcome:{barbara_key}")),
        NewJob::new(
            "crm.notify_event",
            json!({"event_key": barbara_key, "event": {
                "type": "user_registered", "user_id": user_ids[1],
                "email": "barbara@example.com", "name": "Barbara"}}),
        )
        .unwrap()
        .queue("crm")
        .queueing_lock(format!("crm.notify_event:{barbara_key}")),
    ];
    dawdle::defer_batch(jobs_db.pool(), &relayed_before_the_crash)
        .await
        .unwrap();
    sqlx::query("UPDATE procrastinate_jobs SET status = 'succeeded'")
        .execute(jobs_db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO email_deliveries (message_id, recipient) VALUES ($1, $2)")
        .bind(format!("<{barbara_key}.welcome@reference-service.dawdle>"))
        .bind("barbara@example.com")
        .execute(main.pool())
        .await
        .unwrap();

    let mut service = Service::spawn("serve with outbox", &[], &env, None);
    let base = service.base_url().await;
    let pending_outbox = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL")
            .fetch_one(main.pool())
            .await
            .unwrap()
    };
    eventually(DEADLINE, "the outbox to be relayed", || async {
        (pending_outbox().await == 0).then_some(())
    })
    .await;
    let all_done = || async {
        let jobs = jobs(jobs_db.pool()).await;
        jobs.iter()
            .all(|job| job.status == "succeeded")
            .then_some(jobs)
    };
    let done = eventually(DEADLINE, "every job to succeed", all_done).await;
    // Alan's two jobs, Barbara's two from before the crash, and their
    // duplicates: delivery is at least once.
    let per_key = |key: &str| {
        done.iter()
            .filter(|job| job.args["event_key"] == key)
            .count()
    };
    assert_eq!(
        (per_key(&alan_key), per_key(&barbara_key)),
        (2, 4),
        "{done:?}"
    );
    assert_eq!(emails_to(mail.path(), "alan@example.com").len(), 1);
    // The duplicate welcome job ran and found the email already sent.
    assert_eq!(emails_to(mail.path(), "barbara@example.com").len(), 0);
    assert!(service
        .find_log("email already sent by an earlier run")
        .is_some());
    // The duplicate CRM call carries the same idempotency key as the first,
    // so that the CRM can drop it.
    let keys: BTreeSet<String> = crm
        .calls()
        .into_iter()
        .map(|call| call.idempotency_key)
        .collect();
    assert_eq!(keys, BTreeSet::from([alan_key, barbara_key]));

    // And while running: a registration writes its event in its own
    // transaction, and the relay defers it.
    register(&base, "edsger@example.com", "Edsger").await;
    eventually(DEADLINE, "the new registration's email", || async {
        (emails_to(mail.path(), "edsger@example.com").len() == 1).then_some(())
    })
    .await;
    assert_eq!(pending_outbox().await, 0);
    let (_, health) = get_json(&format!("{base}/health")).await;
    assert_eq!(health["outbox"], json!({"enabled": true, "pending": 0}));
    assert!(service.find_log("outbox_relayed").is_some());
    assert_eq!(emails(mail.path()).len(), 2);
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_exits_zero() {
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    // A CRM slow enough that its job is still running when SIGTERM arrives.
    let crm = StubCrm::start(Duration::from_millis(1500)).await;
    let mut service = Service::spawn(
        "serve",
        &[],
        &service_env(&main, &jobs_db, mail.path(), &crm.url),
        None,
    );
    let base = service.base_url().await;
    register(&base, "barbara@example.com", "Barbara Liskov").await;
    eventually(DEADLINE, "the CRM call to be in flight", || async {
        (!crm.calls().is_empty()).then_some(())
    })
    .await;

    service.terminate();
    let status = service.wait_for_exit(DEADLINE).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let crm_job = jobs(jobs_db.pool())
        .await
        .into_iter()
        .find(|job| job.task_name == "crm.notify_event")
        .unwrap();
    assert_eq!(
        crm_job.status, "succeeded",
        "the running job was drained, not cut off"
    );
    for message in [
        "shutdown_requested",
        "api_stopped",
        "job_queue_worker_stopped",
        "service_stopped",
    ] {
        assert!(
            service.find_log(message).is_some(),
            "no {message:?} log line"
        );
    }
    let stopped = service.find_log("job_queue_worker_stopped").unwrap();
    assert_eq!(stopped["interrupted"], 0, "{stopped}");
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(jobs_db.pool())
        .await
        .unwrap();
    assert_eq!(workers, 0, "the worker unregistered");
}

#[tokio::test]
async fn without_database_urls_both_databases_live_on_the_embedded_cluster() {
    use dawdle::local_pg::{LocalCluster, LocalClusterConfig};

    /// Stops the cluster the service started, whatever the test's outcome.
    struct StopCluster(LocalCluster);
    impl Drop for StopCluster {
        fn drop(&mut self) {
            let _ = self.0.stop();
        }
    }

    let home = TempDir::new("home");
    let cluster =
        LocalCluster::new(LocalClusterConfig::persistent(home.path().join("postgres"))).unwrap();
    let _stop = StopCluster(cluster.clone());
    let env = [
        ("DAWDLE_HOME", home.path().display().to_string()),
        ("EMAIL_DIR", home.path().join("mail").display().to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ];
    let mut migrate = Service::spawn("migrate (embedded)", &["migrate"], &env, Some(home.path()));
    let status = migrate.wait_for_exit(Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(0));
    let migrated = migrate.find_log("main_database_migrated").unwrap();
    assert!(
        migrated["database"]
            .as_str()
            .unwrap()
            .contains("/app?host="),
        "{migrated}"
    );

    for (database, table) in [("app", "users"), ("jobs", "procrastinate_jobs")] {
        let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options(database))
            .await
            .unwrap();
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(exists, "{table} in {database}");
        conn.close().await.unwrap();
    }
}

#[test]
fn help_names_every_setting_by_its_environment_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reference-service"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "JOB_QUEUE_DATABASE_URL",
        "DATABASE_URL",
        "JOB_QUEUE_ENABLED",
        "BIND",
        "EMAIL_DIR",
        "SMTP_URL",
        "CRM_WEBHOOK_URL",
        "CRM_TIMEOUT_SECONDS",
        "OUTBOX_ENABLED",
        "LOG_FORMAT",
        "JOB_RETRY_BASE_SECONDS",
        "JOB_MAX_RETRIES",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing:\n{help}"
        );
    }
    for command in ["serve", "worker", "migrate"] {
        assert!(help.contains(command), "{command} missing:\n{help}");
    }
}

#[tokio::test]
async fn a_requests_trace_context_reaches_the_jobs_it_causes() {
    use dawdle::testing::OtlpSink;
    const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER_SPAN_ID: &str = "b7ad6b7169203331";
    let (main, jobs_db) = (TestDatabase::empty().await, TestDatabase::empty().await);
    let mail = TempDir::new("mail");
    let crm = StubCrm::start(Duration::ZERO).await;
    let sink = OtlpSink::start();
    let mut env = service_env(&main, &jobs_db, mail.path(), &crm.url);
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint()));
    env.push(("OTEL_SERVICE_NAME", "reference-under-test".into()));
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "100".into()));
    let mut service = Service::spawn("traced", &[], &env, None);
    let base = service.base_url().await;

    let response = common::http()
        .post(format!("{base}/users"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"email": "grace@example.com", "name": "Grace Hopper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // The jobs the registration caused carry the request's trace: same
    // trace id, the request's own span as parent.
    let contexts: Vec<(i64, String)> = eventually(DEADLINE, "traced jobs", || async {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT job_id, traceparent FROM dawdle_job_trace_contexts ORDER BY job_id",
        )
        .fetch_all(jobs_db.pool())
        .await
        .unwrap_or_default();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    let all_jobs = jobs(jobs_db.pool()).await;
    assert_eq!(
        contexts.len(),
        all_jobs.len(),
        "every job of the request is traced"
    );
    for (_, traceparent) in &contexts {
        assert!(
            traceparent.starts_with(&format!("00-{TRACE_ID}-")),
            "{traceparent}"
        );
        assert!(
            !traceparent.contains(CALLER_SPAN_ID),
            "the request's span, not the caller's"
        );
    }
    finished_jobs(jobs_db.pool(), all_jobs.len()).await;

    // The collector gets the request's server span, in the caller's trace,
    // and each attempt's consumer span, linked to the request's span.
    let job_ids: Vec<String> = contexts.iter().map(|(id, _)| id.to_string()).collect();
    let (request, attempts) = eventually(DEADLINE, "the request's and attempts' spans", || async {
        let spans = sink.spans();
        let request = spans
            .iter()
            .find(|span| span.name == "POST /users")
            .cloned();
        let attempts: Vec<_> = spans
            .into_iter()
            .filter(|span| {
                span.attributes
                    .get("messaging.message.id")
                    .is_some_and(|id| job_ids.contains(id))
            })
            .collect();
        (request.is_some() && attempts.len() == job_ids.len()).then(|| (request.unwrap(), attempts))
    })
    .await;
    assert_eq!(request.kind, 2, "server");
    assert_eq!(request.trace_id, TRACE_ID);
    assert_eq!(request.parent_span_id, CALLER_SPAN_ID);
    assert_eq!(
        request.service_name.as_deref(),
        Some("reference-under-test")
    );
    for attempt in &attempts {
        assert_eq!(attempt.kind, 5, "consumer");
        assert_eq!(
            attempt.links,
            [(TRACE_ID.to_string(), request.span_id.clone())],
            "{attempt:?} {contexts:?}"
        );
    }
}
