//! `dawdle worker --metrics-addr`: a worker draining jobs serves counts that
//! match the jobs table, with label values bounded whatever the rows hold.

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::Duration;

use dawdle::testing::{eventually, TestDatabase};

/// A free local port (bound, then released for the worker to take).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `GET /metrics` over plain HTTP/1.0; `None` while nothing answers.
fn scrape(address: &str) -> Option<String> {
    http_get(address, "/metrics")
}

/// [`scrape`] off the async runtime; empty while nothing answers.
async fn scrape_now(address: &str) -> String {
    let address = address.to_string();
    tokio::task::spawn_blocking(move || scrape(&address))
        .await
        .unwrap()
        .unwrap_or_default()
}

/// The body of `GET path` over plain HTTP/1.0; `None` while nothing answers.
fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// The value of the sample `name{labels}` in `exposition`, if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_draining_worker_serves_counts_that_match_the_jobs_table() {
    let db = TestDatabase::with_schema().await;
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         SELECT 'default', 'dawdle.noop', '{}'::jsonb FROM generate_series(1, 40)
         UNION ALL
         SELECT 'mail', 'dawdle.fail', '{\"message\": \"no\"}' FROM generate_series(1, 3)
         UNION ALL
         -- Names nobody registered, in queues nobody configured: bounded labels.
         SELECT 'q-' || n, 'evil.' || n, '{}' FROM generate_series(1, 100) AS n",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let address = free_address();
    let _worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args([
                "worker",
                "--metrics-addr",
                &address,
                "--poll-interval",
                "0.2",
            ])
            .env("JOB_QUEUE_DATABASE_URL", db.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let succeeded =
        r#"dawdle_job_outcomes_total{task="dawdle.noop",queue="default",outcome="succeeded"}"#;
    let mut exposition = String::new();
    eventually(
        Duration::from_secs(30),
        "the worker's metrics to count every job",
        async || {
            exposition = scrape_now(&address).await;
            let finished: f64 = exposition
                .lines()
                .filter(|line| line.starts_with("dawdle_job_outcomes_total{"))
                .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            finished >= 143.0
        },
    )
    .await;
    // An outcome is counted when it is decided and written to the table a
    // moment later: wait for the table to hold every one before comparing.
    eventually(
        Duration::from_secs(30),
        "the table to record every outcome",
        async || {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            open == 0
        },
    )
    .await;

    // The same counts as the table.
    let table: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT task_name, status::text, count(*) FROM procrastinate_jobs
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let count = |task: &str, status: &str| {
        table
            .iter()
            .filter(|(t, s, _)| t.starts_with(task) && s == status)
            .map(|(_, _, n)| *n as f64)
            .sum::<f64>()
    };
    assert_eq!(
        sample(&exposition, succeeded),
        Some(count("dawdle.noop", "succeeded"))
    );
    assert_eq!(count("dawdle.noop", "succeeded"), 40.0);
    assert_eq!(
        sample(
            &exposition,
            r#"dawdle_job_outcomes_total{task="dawdle.fail",queue="mail",outcome="failed"}"#
        ),
        Some(count("dawdle.fail", "failed"))
    );
    assert_eq!(
        sample(
            &exposition,
            r#"dawdle_jobs_started_total{task="dawdle.noop",queue="default"}"#
        ),
        Some(40.0)
    );
    // A hundred unknown tasks in a hundred queues: one task label value,
    // and queue label values capped (64 distinct names, then "other").
    let unknown: Vec<&str> = exposition
        .lines()
        .filter(|line| line.starts_with(r#"dawdle_job_outcomes_total{task="unknown","#))
        .collect();
    assert!(!unknown.is_empty() && unknown.len() <= 65, "{unknown:?}");
    assert!(
        !exposition.contains("evil."),
        "task names of rows are not labels"
    );
    let unknown_total: f64 = unknown
        .iter()
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(unknown_total, count("evil.", "failed"));
    assert_eq!(unknown_total, 100.0);
    // Histograms in Prometheus' bucket form, with their help text.
    for line in [
        "# TYPE dawdle_attempt_duration_seconds histogram",
        "# TYPE dawdle_queue_wait_seconds histogram",
        "# TYPE dawdle_claim_jobs histogram",
        "# HELP dawdle_job_outcomes_total",
    ] {
        assert!(
            exposition.contains(line),
            "{line} missing from:\n{exposition}"
        );
    }
    assert!(
        exposition.contains(
            r#"dawdle_attempt_duration_seconds_bucket{task="dawdle.noop",queue="default",le="+Inf"} 40"#
        ),
        "{exposition}"
    );
    // A worker's first claim reads the claim order from its head.
    assert!(
        exposition.contains(r#"dawdle_claim_duration_seconds_bucket{read_from="head",le="+Inf"}"#),
        "{exposition}"
    );
}

#[tokio::test]
async fn a_taken_metrics_address_is_a_clear_error_at_start() {
    let db = TestDatabase::with_schema().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args(["worker", "--one-shot", "--metrics-addr", &address])
            .env("JOB_QUEUE_DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed to serve metrics on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn metrics_serve_shows_the_queues_as_the_runbook_queries_count_them() {
    let db = TestDatabase::with_schema().await;
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)
         SELECT 'email', 't', '{}'::jsonb, 'todo'::procrastinate_job_status, NULL
         FROM generate_series(1, 7)
         UNION ALL
         SELECT 'email', 't', '{}'::jsonb, 'todo', now() + interval '1 hour'
         UNION ALL
         SELECT 'crm', 't', '{}'::jsonb, 'todo', NULL FROM generate_series(1, 2)
         UNION ALL
         -- A queue name with a quote, a newline and markup: one escaped series.
         SELECT E'q\"x\\nnew{line} <script>', 't', '{}'::jsonb, 'todo', NULL",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // A job an older Procrastinate release was aborting counts as doing,
    // as `dawdle stats` counts it.
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, started_at)
         VALUES ('aborts', 't', '{}'::jsonb, 'aborting', now())",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // Three waiting jobs made old, two failed jobs, one stuck in doing.
    sqlx::query(
        "UPDATE procrastinate_jobs SET created_at = now() - interval '10 minutes'
         WHERE queue_name = 'crm'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
         SELECT 'email', 't', '{}'::jsonb, 'failed' FROM generate_series(1, 2)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let address = free_address();
    let _sidecar = Worker(
        Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args(["metrics", "serve", "--bind", &address, "--refresh", "0.2"])
            .env("JOB_QUEUE_DATABASE_URL", db.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut exposition = String::new();
    eventually(Duration::from_secs(30), "the queue gauges", async || {
        exposition = scrape_now(&address).await;
        sample(&exposition, "dawdle_queue_gauges_up") == Some(1.0)
    })
    .await;
    let gauge = |series: &str| sample(&exposition, series);
    assert_eq!(
        gauge(r#"dawdle_queue_jobs{queue="email",status="todo"}"#),
        Some(8.0)
    );
    assert_eq!(
        gauge(r#"dawdle_queue_jobs{queue="crm",status="todo"}"#),
        Some(2.0)
    );
    assert_eq!(
        gauge(r#"dawdle_queue_jobs{queue="q\"x\nnew{line} <script>",status="todo"}"#),
        Some(1.0)
    );
    assert!(
        exposition
            .lines()
            .all(|line| !line.starts_with("new{line}")),
        "a newline in a label value broke a line"
    );
    assert_eq!(
        gauge(r#"dawdle_queue_jobs{queue="aborts",status="doing"}"#),
        Some(1.0)
    );
    assert_eq!(gauge("dawdle_jobs_failed_last_hour"), Some(2.0));
    assert_eq!(gauge("dawdle_jobs_stuck_doing"), Some(0.0));
    assert_eq!(gauge("dawdle_workers_live"), Some(0.0));
    let crm_lag = gauge(r#"dawdle_queue_oldest_waiting_seconds{queue="crm"}"#).unwrap();
    assert!((600.0..700.0).contains(&crm_lag), "{crm_lag}");

    // A job put in doing with an old start is stuck; the reading follows.
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = 'doing', started_at = now() - interval '6 minutes'
         WHERE id = (SELECT min(id) FROM procrastinate_jobs WHERE queue_name = 'crm')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the stuck job to show",
        async || {
            exposition = scrape_now(&address).await;
            sample(&exposition, "dawdle_jobs_stuck_doing") == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        sample(
            &exposition,
            r#"dawdle_queue_jobs{queue="crm",status="doing"}"#
        ),
        Some(1.0)
    );

    // A paused queue shows for how long; once resumed, 0.
    dawdle::admin::pause_queue(db.pool(), "email", None, None)
        .await
        .unwrap();
    sqlx::query("UPDATE dawdle_queue_pauses SET paused_at = now() - interval '2 hours'")
        .execute(db.pool())
        .await
        .unwrap();
    let paused = r#"dawdle_queue_paused_seconds{queue="email"}"#;
    eventually(Duration::from_secs(30), "the pause to show", async || {
        exposition = scrape_now(&address).await;
        sample(&exposition, paused).is_some_and(|seconds| seconds >= 7200.0)
    })
    .await;
    dawdle::admin::resume_queue(db.pool(), "email")
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the resume to show", async || {
        exposition = scrape_now(&address).await;
        sample(&exposition, paused).is_none()
    })
    .await;
}

/// The distinct `queue` label values of `metric`'s samples in `exposition`
/// (label values as written, escapes kept).
fn queue_labels(exposition: &str, metric: &str) -> std::collections::BTreeSet<String> {
    let prefix = format!("{metric}{{");
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|labels| {
            let value = labels.split_once("queue=\"")?.1;
            let mut end = 0;
            let mut escaped = false;
            for (at, char) in value.char_indices() {
                match char {
                    '"' if !escaped => {
                        end = at;
                        break;
                    }
                    '\\' => escaped = !escaped,
                    _ => escaped = false,
                }
            }
            Some(value[..end].to_string())
        })
        .collect()
}

#[tokio::test]
async fn metrics_serve_exports_only_the_queues_of_the_last_reading_within_the_bound() {
    use dawdle::admin::gauges::MAX_QUEUES;
    let db = TestDatabase::with_schema().await;
    let address = free_address();
    let _sidecar = Worker(
        Command::new(env!("CARGO_BIN_EXE_dawdle"))
            .args(["metrics", "serve", "--bind", &address, "--refresh", "0.2"])
            .env("JOB_QUEUE_DATABASE_URL", db.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A steady busy queue, and each round 70 new queues (more than can keep
    // their names) in place of the round before's, one of them paused.
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         SELECT 'steady', 't', '{}'::jsonb FROM generate_series(1, 5)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let jobs = ["dawdle_queue_jobs", "dawdle_queue_oldest_waiting_seconds"];
    let mut exposition = String::new();
    for round in 0..4 {
        sqlx::query("DELETE FROM procrastinate_jobs WHERE queue_name <> 'steady'")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM dawdle_queue_pauses")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
             SELECT format('r%s-q%s', $1::int, lpad(n::text, 2, '0')), 't', '{}'::jsonb
             FROM generate_series(0, 69) AS n",
        )
        .bind(round)
        .execute(db.pool())
        .await
        .unwrap();
        dawdle::admin::pause_queue(db.pool(), &format!("r{round}-paused"), None, None)
            .await
            .unwrap();
        let mine = format!("r{round}-");
        let this_round = |labels: &std::collections::BTreeSet<String>| {
            labels
                .iter()
                .all(|queue| queue.starts_with(&mine) || queue == "steady" || queue == "other")
        };
        eventually(
            Duration::from_secs(30),
            "only this round's queues",
            async || {
                exposition = scrape_now(&address).await;
                for metric in jobs {
                    let labels = queue_labels(&exposition, metric);
                    assert!(
                        labels.len() <= MAX_QUEUES + 1,
                        "{metric}: {} queue label values",
                        labels.len()
                    );
                }
                let paused = queue_labels(&exposition, "dawdle_queue_paused_seconds");
                assert!(paused.len() <= MAX_QUEUES, "{paused:?}");
                let labels = queue_labels(&exposition, "dawdle_queue_jobs");
                labels.contains(&format!("r{round}-q00"))
                    && this_round(&labels)
                    && paused.len() == 1
                    && paused.contains(&format!("r{round}-paused"))
            },
        )
        .await;
        let labels = queue_labels(&exposition, "dawdle_queue_jobs");
        assert_eq!(labels.len(), MAX_QUEUES + 1, "{labels:?}");
        assert!(labels.contains("steady") && labels.contains("other"));
        // 71 queues: `steady` and 63 of this round by name, 7 summed.
        assert_eq!(
            sample(
                &exposition,
                r#"dawdle_queue_jobs{queue="other",status="todo"}"#
            ),
            Some(7.0)
        );
    }
    // Once every queue is empty and none is paused, no queue is exported.
    sqlx::query("DELETE FROM procrastinate_jobs")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM dawdle_queue_pauses")
        .execute(db.pool())
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "no queue left", async || {
        exposition = scrape_now(&address).await;
        exposition.lines().all(|line| !line.contains("queue="))
    })
    .await;
    assert_eq!(sample(&exposition, "dawdle_queue_gauges_up"), Some(1.0));
}

/// Debian's `prometheus` server, or `None` with a loud message.
fn prometheus_server() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        eprintln!(
            "\n!!! SKIPPED: the prometheus server is not installed (apt-get install \
             prometheus); no real scrape was tested !!!\n"
        );
    }
    found
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A PromQL query's single value, asked of Prometheus' HTTP API.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    let body = http_get(prometheus, &format!("/api/v1/query?query={encoded}"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_counts_the_jobs_table_shows() {
    let Some(prometheus) = prometheus_server() else {
        return;
    };
    let db = TestDatabase::with_schema().await;
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         SELECT 'default', 'dawdle.noop', '{}'::jsonb FROM generate_series(1, 30)
         UNION ALL
         SELECT 'mail', 'dawdle.fail', '{}'::jsonb FROM generate_series(1, 5)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let (worker_address, gauges_address, prometheus_address) =
        (free_address(), free_address(), free_address());
    let dir = std::env::temp_dir().join(format!("dawdle-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // One file per process, stdout and stderr sharing its offset so that
    // neither overwrites the other.
    let log_file = |name: &str| {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        (file.try_clone().unwrap(), file)
    };
    let spawn = |log: &str, args: &[&str]| {
        let (stdout, stderr) = log_file(log);
        Worker(
            Command::new(env!("CARGO_BIN_EXE_dawdle"))
                .args(args)
                .env("JOB_QUEUE_DATABASE_URL", db.url())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap(),
        )
    };
    let _gauges = spawn(
        "gauges.log",
        &[
            "metrics",
            "serve",
            "--bind",
            &gauges_address,
            "--refresh",
            "0.5",
        ],
    );

    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: dawdle-worker\n    static_configs: [{{targets: ['{worker_address}']}}]\n\
             \x20 - job_name: dawdle-gauges\n    static_configs: [{{targets: ['{gauges_address}']}}]\n"
        ),
    )
    .unwrap();
    let (prometheus_stdout, prometheus_stderr) = log_file("prometheus.log");
    let _prometheus = Worker(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus_address}"))
            .stdout(prometheus_stdout)
            .stderr(prometheus_stderr)
            .spawn()
            .unwrap(),
    );

    let table = |status: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM procrastinate_jobs WHERE status::text = $1",
            )
            .bind(status)
            .fetch_one(&pool)
            .await
            .unwrap() as f64
        }
    };
    let ask = |promql: &'static str| {
        let prometheus_address = prometheus_address.clone();
        async move {
            tokio::task::spawn_blocking(move || query(&prometheus_address, promql))
                .await
                .unwrap()
        }
    };
    // The gauges are seen holding the waiting jobs before a worker starts:
    // a queue without jobs has no series.
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape the 35 waiting jobs from the gauges",
        async || ask(r#"sum(dawdle_queue_jobs{status="todo"})"#).await == Some(35.0),
    )
    .await;
    let _worker = spawn("worker.log", &["worker", "--metrics-addr", &worker_address]);
    let observed = std::sync::Mutex::new(String::new());
    let waited = tokio::time::timeout(
        Duration::from_secs(90),
        eventually(
            Duration::from_secs(3600),
            "Prometheus to hold the counts of the jobs table",
            async || {
                let seen = [
                    ask(r#"sum(dawdle_job_outcomes_total{outcome="succeeded"})"#).await,
                    Some(table("succeeded").await),
                    ask(r#"sum(dawdle_job_outcomes_total{outcome="failed"})"#).await,
                    Some(table("failed").await),
                    // A drained queue is no longer exported: no series is 0
                    // (the dashboard's "jobs waiting").
                    ask(r#"sum(dawdle_queue_jobs{status="todo"}) or 0 * max(dawdle_queue_gauges_up)"#)
                        .await,
                    ask("max(dawdle_workers_live)").await,
                    ask(r#"sum(up{job=~"dawdle-.*"})"#).await,
                ];
                *observed.lock().unwrap() = format!("{seen:?}");
                seen[0] == seen[1]
                    && seen[2] == seen[3]
                    && seen[4] == Some(0.0)
                    && seen[5] == Some(1.0)
            },
        ),
    )
    .await;
    if waited.is_err() {
        let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        panic!(
            "Prometheus never held the counts of the jobs table after 90 s; last seen \
             [succeeded, table, failed, table, todo, workers live, up]: {}\n\
             prometheus log:\n{}\nworker log:\n{}\ngauges log:\n{}",
            observed.lock().unwrap(),
            tail(&log("prometheus.log")),
            tail(&log("worker.log")),
            tail(&log("gauges.log")),
        );
    }
    assert_eq!(table("succeeded").await, 30.0);
    assert_eq!(table("failed").await, 5.0);
    assert_eq!(ask(r#"sum(up{job=~"dawdle-.*"})"#).await, Some(2.0));
    drop(_prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}
