//! The dashboard in real headless Chromium, driven over WebDriver as an
//! on-call engineer would use it: the overview, filtering jobs, a failed
//! job's traceback, retrying it and seeing it run, pausing a queue and
//! seeing a worker leave its jobs waiting, resuming it. A job whose
//! arguments hold `<script>` markup shows it as text. Screenshots of each
//! page go to `target/dashboard-screenshots/` on every run.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the test command
//! installs them when it runs as root); without them the test says so
//! loudly and passes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dawdle::testing::{eventually, TestDatabase};
use dawdle::{defer, defer_batch, NewJob, Registry, Worker, WorkerConfig};
use dawdle_dashboard::{router, BasicAuth, DashboardConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Starts chromedriver and a headless Chromium session; `None` (said
/// loudly) when either is not installed.
async fn browser() -> Option<(Driver, Client)> {
    let (Some(driver), Some(chromium)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        eprintln!(
            "\n*** SKIPPED: the dashboard's browser test needs chromium and chromedriver \
             (sudo apt-get install chromium chromium-driver) ***\n"
        );
        return None;
    };
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    eventually(DEADLINE, "chromedriver to start a session", async || {
        client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
            .ok();
        client.is_some()
    })
    .await;
    Some((driver, client.unwrap()))
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn status(db: &TestDatabase, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Submits the form around the button `css`, accepting its confirmation,
/// and waits for the answer page titled `answer`.
async fn confirm_and_submit(client: &Client, css: &str, answer: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut accepted = false;
    eventually(DEADLINE, "the confirmation dialog", async || {
        accepted = client.accept_alert().await.is_ok();
        accepted
    })
    .await;
    eventually(DEADLINE, "the action's answer", async || {
        match client.find(Locator::Css("main h1")).await {
            Ok(title) => title.text().await.is_ok_and(|text| text == answer),
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn an_on_call_engineer_works_the_queue_from_the_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let db = TestDatabase::with_schema().await;
    // A job that failed with a traceback (its task exists: a retry runs),
    // a job whose arguments hold markup, and some history.
    let failed = defer(
        db.pool(),
        &NewJob::new("dawdle.noop", json!({}))
            .unwrap()
            .queue("email"),
    )
    .await
    .unwrap();
    let hostile = defer(
        db.pool(),
        &NewJob::new(
            "dawdle.noop",
            json!({"note": "<script>window.__pwned = 1</script>"}),
        )
        .unwrap()
        .queue("held"),
    )
    .await
    .unwrap();
    sqlx::raw_sql(&format!(
        "UPDATE procrastinate_jobs SET status = 'doing', started_at = now() WHERE id = {failed};
         UPDATE procrastinate_jobs SET status = 'failed', attempts = 3, finished_at = now()
         WHERE id = {failed};
         INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         VALUES ({failed}, 'error', 'ConnectionError', 'SMTP refused the connection',
                 'ConnectionError: SMTP refused the connection\n  caused by: connection refused');"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    // Keep the hostile job waiting: its queue is paused from the start.
    dawdle::admin::pause_queue(db.pool(), "held", Some("test"), None)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(
        db.pool().clone(),
        DashboardConfig {
            base_path: String::new(),
            auth: Some(BasicAuth::new("ops", "s3cret").unwrap()),
            actions: true,
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://ops:s3cret@127.0.0.1:{port}");
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    let worker = Worker::builder(db.pool().clone(), registry)
        .config(WorkerConfig::default().poll_interval(Duration::from_millis(200)))
        .build()
        .unwrap()
        .start();
    worker.ready().await.unwrap();

    // The overview.
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(!text_of(&client, "#verdict").await.is_empty());
    screenshot(&client, "overview").await;

    // Jobs, filtered to the failed ones with the form.
    client.goto(&format!("{base}/jobs")).await.unwrap();
    client
        .find(Locator::Css("select[name=status]"))
        .await
        .unwrap()
        .select_by_value("failed")
        .await
        .unwrap();
    client
        .find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The unfiltered page has a #jobs table too: wait for the filtered one.
    eventually(DEADLINE, "the filtered jobs page", async || {
        client
            .current_url()
            .await
            .is_ok_and(|url| url.as_str().contains("status=failed"))
    })
    .await;
    client
        .wait()
        .for_element(Locator::Css("#jobs"))
        .await
        .unwrap();
    let rows = client
        .find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    screenshot(&client, "jobs").await;

    // The failed job and its traceback.
    client
        .find(Locator::LinkText(&failed.to_string()))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("#events"))
        .await
        .unwrap();
    client
        .find(Locator::Css(".traceback summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let traceback = text_of(&client, ".traceback pre").await;
    assert!(
        traceback.contains("caused by: connection refused"),
        "{traceback}"
    );
    screenshot(&client, "job").await;

    // Retry it, and see it run.
    confirm_and_submit(&client, "#retry", "Retried").await;
    let answer = text_of(&client, "main").await;
    assert!(answer.contains("1 job changed"), "{answer}");
    eventually(DEADLINE, "the retried job to run", async || {
        status(&db, failed).await == "succeeded"
    })
    .await;
    client.goto(&format!("{base}/jobs/{failed}")).await.unwrap();
    assert_eq!(text_of(&client, "h1 .status").await, "succeeded");

    // The failures page (now empty of it) renders.
    client.goto(&format!("{base}/failures")).await.unwrap();
    screenshot(&client, "failures").await;

    // Pause the email queue: a worker leaves its new jobs waiting.
    client.goto(&format!("{base}/queues")).await.unwrap();
    client
        .find(Locator::Css(
            "form[action$='/queues/email/pause'] input[name=reason]",
        ))
        .await
        .unwrap()
        .send_keys("SMTP provider outage")
        .await
        .unwrap();
    confirm_and_submit(
        &client,
        "form[action$='/queues/email/pause'] button",
        "Paused",
    )
    .await;
    let waiting = defer(
        db.pool(),
        &NewJob::new("dawdle.noop", json!({}))
            .unwrap()
            .queue("email"),
    )
    .await
    .unwrap();
    let elsewhere = defer_batch(db.pool(), &[NewJob::new("dawdle.noop", json!({})).unwrap()])
        .await
        .unwrap()[0];
    eventually(DEADLINE, "a job of another queue to run", async || {
        status(&db, elsewhere).await == "succeeded"
    })
    .await;
    assert_eq!(
        status(&db, waiting).await,
        "todo",
        "the paused queue's job waits"
    );
    client.goto(&format!("{base}/queues")).await.unwrap();
    let queues = text_of(&client, "#queues").await;
    assert!(
        queues.contains("paused since") && queues.contains("SMTP provider outage"),
        "{queues}"
    );
    screenshot(&client, "queues").await;

    // Resume it: the job runs.
    confirm_and_submit(
        &client,
        "form[action$='/queues/email/resume'] button",
        "Resumed",
    )
    .await;
    eventually(DEADLINE, "the resumed queue's job to run", async || {
        status(&db, waiting).await == "succeeded"
    })
    .await;

    // The workers page shows this test's worker, live; the purge page
    // previews before deleting anything.
    client.goto(&format!("{base}/workers")).await.unwrap();
    assert!(text_of(&client, "#workers").await.contains("live"));
    screenshot(&client, "workers").await;
    client.goto(&format!("{base}/purge")).await.unwrap();
    client
        .find(Locator::Css("#purge-preview button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("#preview"))
        .await
        .unwrap();
    assert!(text_of(&client, "#preview")
        .await
        .contains("would be deleted"));
    screenshot(&client, "purge").await;

    // Markup in arguments is text, never run.
    client
        .goto(&format!("{base}/jobs/{hostile}"))
        .await
        .unwrap();
    assert!(text_of(&client, "#args")
        .await
        .contains("<script>window.__pwned = 1</script>"));
    let ran = client
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!(true), "the arguments' script must not run");

    client.close().await.unwrap();
    worker.shutdown().await.unwrap();
}
