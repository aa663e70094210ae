//! What the end-to-end tests share: the service as a child process with its
//! logs, a stub CRM, temporary directories, and polling with deadlines.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use dawdle::testing::TestDatabase;
use serde_json::Value;
use sqlx::PgPool;

/// Every variable the service reads, removed from the child's environment
/// so that the machine's own settings cannot leak into a test.
const SERVICE_VARIABLES: &[&str] = &[
    "JOB_QUEUE_DATABASE_URL",
    "DATABASE_URL",
    "JOB_QUEUE_ENABLED",
    "BIND",
    "EMAIL_DIR",
    "SMTP_URL",
    "SMTP_TIMEOUT_SECONDS",
    "EMAIL_FROM",
    "CRM_WEBHOOK_URL",
    "CRM_TIMEOUT_SECONDS",
    "OUTBOX_ENABLED",
    "OUTBOX_POLL_INTERVAL_SECONDS",
    "LOG_FORMAT",
    "JOB_MAX_RETRIES",
    "JOB_RETRY_BASE_SECONDS",
    "JOB_RETRY_MAX_WAIT_SECONDS",
    "JOB_CONCURRENCY",
    "JOB_POLL_INTERVAL_SECONDS",
    "JOB_SHUTDOWN_TIMEOUT_SECONDS",
    "DAWDLE_HOME",
    "RUST_LOG",
];

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "reference-{label}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `reference-service`, killed when dropped; its output is kept
/// and printed if the test fails.
#[derive(Debug)]
pub struct Service {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    label: String,
}

impl Service {
    pub fn spawn(label: &str, args: &[&str], env: &[(&str, String)], dir: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reference-service"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for variable in SERVICE_VARIABLES {
            command.env_remove(variable);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("start reference-service");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, prefix) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "stderr: "),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(format!("{prefix}{line}"));
                }
            });
        }
        Self {
            child,
            logs,
            label: label.to_string(),
        }
    }

    /// The JSON log lines so far.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first JSON log line whose message starts with `message`.
    pub fn find_log(&self, message: &str) -> Option<Value> {
        self.json_logs().into_iter().find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|text| text.starts_with(message))
        })
    }

    pub async fn wait_for_log(&mut self, message: &str, deadline: Duration) -> Value {
        let what = format!("{} to log {message:?}", self.label);
        eventually(deadline, &what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before logging {message:?}",
                    self.label
                );
            }
            std::future::ready(self.find_log(message))
        })
        .await
    }

    /// The API's base URL, once it listens.
    pub async fn base_url(&mut self) -> String {
        let line = self
            .wait_for_log("api_listening", Duration::from_secs(60))
            .await;
        format!(
            "http://{}",
            line["address"].as_str().expect("address field")
        )
    }

    /// Sends SIGTERM, as `docker stop` does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    pub async fn wait_for_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.label);
        eventually(deadline, &what, || {
            std::future::ready(self.child.try_wait().expect("poll the child"))
        })
        .await
    }

    pub fn print_logs(&self) {
        eprintln!("----- {} output -----", self.label);
        for line in self.logs.lock().unwrap().iter() {
            eprintln!("{line}");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The settings every test starts from: both databases, a free port, mail
/// into `mail_dir`, fast polling so that tests do not wait on timers.
pub fn service_env(
    main: &TestDatabase,
    jobs: &TestDatabase,
    mail_dir: &Path,
    crm_url: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", main.url()),
        ("JOB_QUEUE_DATABASE_URL", jobs.url()),
        ("BIND", "127.0.0.1:0".into()),
        ("EMAIL_DIR", mail_dir.display().to_string()),
        ("CRM_WEBHOOK_URL", crm_url.into()),
        ("CRM_TIMEOUT_SECONDS", "5".into()),
        ("LOG_FORMAT", "json".into()),
        ("JOB_POLL_INTERVAL_SECONDS", "0.1".into()),
        ("JOB_SHUTDOWN_TIMEOUT_SECONDS", "10".into()),
        ("OUTBOX_POLL_INTERVAL_SECONDS", "0.2".into()),
    ]
}

/// Polls `probe` until it gives a value or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call the stub CRM received.
#[derive(Debug, Clone)]
pub struct CrmCall {
    pub idempotency_key: String,
    pub body: Value,
}

/// A CRM webhook on a free local port that records every call, then answers
/// 200 after `delay`.
#[derive(Debug)]
pub struct StubCrm {
    pub url: String,
    calls: Arc<Mutex<Vec<CrmCall>>>,
    server: tokio::task::JoinHandle<()>,
}

impl StubCrm {
    pub async fn start(delay: Duration) -> Self {
        Self::start_at("127.0.0.1:0", delay).await
    }

    /// A stub at the address of `url` (a CRM that comes back up).
    pub async fn start_on(url: &str, delay: Duration) -> Self {
        let address = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .expect("an address in the URL");
        Self::start_at(address, delay).await
    }

    async fn start_at(address: &str, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let url = format!("http://{}/crm/events", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let app = Router::new().route(
            "/crm/events",
            post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    let idempotency_key = headers
                        .get("idempotency-key")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    recorded.lock().unwrap().push(CrmCall {
                        idempotency_key,
                        body,
                    });
                    tokio::time::sleep(delay).await;
                    StatusCode::OK
                }
            }),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, calls, server }
    }

    pub fn calls(&self) -> Vec<CrmCall> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for StubCrm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A URL where nothing listens: a CRM that is down.
pub fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/crm/events")
}

/// A job as the tests look at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub task_name: String,
    pub status: String,
    pub attempts: i32,
    pub args: Value,
}

pub async fn jobs(pool: &PgPool) -> Vec<JobRow> {
    sqlx::query_as(
        "SELECT id, task_name, status::text AS status, attempts, args
         FROM procrastinate_jobs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An event of a job's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub error: Option<String>,
    pub error_traceback: Option<String>,
}

pub async fn events(pool: &PgPool, job_id: i64) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT type::text AS event_type, at, error, error_traceback
         FROM procrastinate_events WHERE job_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The `.eml` files written so far, as text.
pub fn emails(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect()
}

/// The complete emails (the transport writes in place, so a file may be
/// caught half written) sent to `address`.
pub fn emails_to(dir: &Path, address: &str) -> Vec<String> {
    emails(dir)
        .into_iter()
        .filter(|text| {
            let to_address = text
                .lines()
                .any(|line| line.starts_with("To: ") && line.contains(address));
            to_address && text.contains("The Dawdle Shop")
        })
        .collect()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn post_json(url: &str, body: Value) -> (StatusCode, Value) {
    let response = http().post(url).json(&body).send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
