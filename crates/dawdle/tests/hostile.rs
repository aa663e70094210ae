//! No row can stop the queue. Rows that the Python library, a person at
//! psql or a buggy service can write (arguments Rust cannot represent,
//! infinite schedules, wrong argument types, odd names, enormous errors) are
//! mixed with innocent jobs and run by a one-shot worker: every job ends in
//! a final state with a bounded, non-empty error kind, the worker ends
//! normally, and the admin reads render every row.

mod common;

use std::time::Duration;

use dawdle::admin::{self, FailedFilter, JobFilter};
use dawdle::testing::TestDatabase;
use dawdle::{
    defer_batch, JobContext, NewJob, Registry, Task, TaskError, Worker, WorkerConfig, WorkerError,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

const MAX_KIND_CHARS: usize = dawdle::task_error::MAX_KIND_CHARS;
const MAX_MESSAGE_BYTES: usize = dawdle::task_error::MAX_MESSAGE_BYTES;
const MAX_TRACEBACK_BYTES: usize = dawdle::task_error::MAX_TRACEBACK_BYTES;

/// Fails with NUL characters in its kind and message, which PostgreSQL
/// text cannot store.
#[derive(Debug, Serialize, Deserialize)]
struct NulError {}

impl Task for NulError {
    const NAME: &'static str = "test.nul_error";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("Nul\0Kind", "before\0after").no_retry())
    }
}

/// Defers a waiting twin with its own queueing lock, then fails asking for
/// a retry: the retry cannot go back to `todo` beside the twin.
#[derive(Debug, Serialize, Deserialize)]
struct TwinThenRetry {
    queueing_lock: String,
}

impl Task for TwinThenRetry {
    const NAME: &'static str = "test.twin_then_retry";

    fn retry_strategy() -> dawdle::RetryStrategy {
        dawdle::RetryStrategy::exponential(3, 2.0)
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        // Not due yet, so that it still waits when the retry is written.
        let twin = NewJob::new("dawdle.noop", json!({}))
            .unwrap()
            .queueing_lock(self.queueing_lock)
            .scheduled_in(Duration::from_secs(3600))
            .unwrap();
        dawdle::defer(ctx.pool(), &twin).await.unwrap();
        Err(TaskError::new("Flaky", "try again later"))
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    dawdle::diagnostics::register(&mut registry);
    registry.register::<NulError>();
    registry.register::<TwinThenRetry>();
    registry
}

fn one_shot() -> WorkerConfig {
    WorkerConfig::default()
        .one_shot(true)
        .concurrency(8)
        .poll_interval(Duration::from_millis(200))
}

/// Runs a one-shot worker to its end, which must come, and normally.
async fn drain(pool: &PgPool) -> dawdle::WorkerReport {
    let worker = Worker::new(pool.clone(), registry(), one_shot());
    let report = tokio::time::timeout(Duration::from_secs(60), worker.run(std::future::pending()))
        .await
        .expect("a one-shot worker over hostile rows must terminate");
    report.expect("the worker must end normally")
}

/// Inserts a job row by hand, as a person at psql would: `args` and
/// `scheduled_at` are SQL text cast by the database.
async fn insert(pool: &PgPool, task: &str, args_sql: &str, scheduled_sql: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
         VALUES ('default', $1, $2::jsonb, $3::timestamptz) RETURNING id",
    )
    .bind(task)
    .bind(args_sql)
    .bind(scheduled_sql)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("insert {task} {args_sql:.80}: {error}"))
}

async fn status(pool: &PgPool, id: i64) -> String {
    common::status(pool, id).await
}

/// The last error event of a job: (kind, message, traceback).
async fn last_error(pool: &PgPool, id: i64) -> (String, String, String) {
    sqlx::query_as(
        "SELECT error, error_message, error_traceback FROM procrastinate_events
         WHERE job_id = $1 AND type = 'error' ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("job {id} has no error event: {error}"))
}

/// Every job is final (but those scheduled for never), every error event is
/// bounded, and every admin read renders every row.
async fn check_invariants(pool: &PgPool) {
    let unfinished: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, status::text FROM procrastinate_jobs
         WHERE status IN ('todo', 'doing') AND (scheduled_at IS NULL OR scheduled_at <= now())",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        unfinished.is_empty(),
        "jobs left unfinished: {unfinished:?}"
    );
    type ErrorRow = (i64, Option<String>, Option<String>, Option<String>);
    let errors: Vec<ErrorRow> = sqlx::query_as(
        "SELECT job_id, error, error_message, error_traceback FROM procrastinate_events
         WHERE type = 'error'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (job, kind, message, traceback) in errors {
        let kind = kind.unwrap_or_default();
        assert!(
            !kind.is_empty() && kind.chars().count() <= MAX_KIND_CHARS,
            "job {job}: kind {kind:?}"
        );
        assert!(
            message.unwrap_or_default().len() <= MAX_MESSAGE_BYTES,
            "job {job}"
        );
        assert!(
            traceback.unwrap_or_default().len() <= MAX_TRACEBACK_BYTES,
            "job {job}"
        );
    }
    let jobs = admin::list_jobs(pool, &JobFilter::default()).await.unwrap();
    for job in &jobs {
        let detail = admin::job_detail(pool, job.id).await.unwrap().unwrap();
        assert_eq!(detail.job.id, job.id);
        serde_json::to_string(&detail).expect("a job detail serialises");
    }
    let failed = admin::failed_jobs(pool, &FailedFilter::default())
        .await
        .unwrap();
    serde_json::to_string(&failed).unwrap();
    admin::stats(pool, &admin::StatsConfig::default())
        .await
        .expect("stats over hostile rows");
}

#[tokio::test]
async fn hostile_rows_fail_alone_and_innocent_jobs_run() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let innocent: Vec<NewJob> = (0..40)
        .map(|i| NewJob::new("dawdle.noop", json!({"i": i})).unwrap())
        .collect();
    let mut innocent_ids = defer_batch(pool, &innocent[..20]).await.unwrap();

    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let huge_int = format!("1{}", "0".repeat(400));
    let beyond_f64 = insert(pool, "dawdle.noop", r#"{"n": 1e400}"#, None).await;
    let python_int = insert(
        pool,
        "dawdle.noop",
        &format!(r#"{{"n": {huge_int}}}"#),
        None,
    )
    .await;
    let too_deep = insert(pool, "dawdle.noop", &format!(r#"{{"deep": {deep}}}"#), None).await;
    let wrong_type = insert(pool, "dawdle.sleep", r#"{"seconds": "soon"}"#, None).await;
    let null_arg = insert(pool, "dawdle.sleep", r#"{"seconds": null}"#, None).await;
    let missing_arg = insert(pool, "dawdle.sleep", "{}", None).await;
    let negative = insert(pool, "dawdle.sleep", r#"{"seconds": -1}"#, None).await;
    let forever = insert(pool, "dawdle.sleep", r#"{"seconds": 1e300}"#, None).await;
    let empty_kind = insert(pool, "dawdle.fail", r#"{"kind": ""}"#, None).await;
    let long_kind = insert(
        pool,
        "dawdle.fail",
        &json!({"kind": "K".repeat(1000), "message": "m".repeat(1 << 20)}).to_string(),
        None,
    )
    .await;
    let control_kind = insert(
        pool,
        "dawdle.fail",
        r#"{"kind": "Bad\nKind\u001b[2J"}"#,
        None,
    )
    .await;
    let nul = insert(pool, "test.nul_error", "{}", None).await;
    let unknown = insert(pool, "\u{202e}evil\u{1b}[31m.task", "{}", None).await;
    let wide = {
        let wide: serde_json::Map<String, serde_json::Value> =
            (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
        insert(
            pool,
            "dawdle.noop",
            &serde_json::Value::Object(wide).to_string(),
            None,
        )
        .await
    };
    let big = insert(
        pool,
        "dawdle.noop",
        &json!({"blob": "x".repeat(5 << 20)}).to_string(),
        None,
    )
    .await;
    let odd_unicode = insert(
        pool,
        "dawdle.noop",
        r#"{"s": "\ud83d\ude00 \u2028 \u00e9 \ufeff"}"#,
        None,
    )
    .await;
    let past_infinity = insert(pool, "dawdle.noop", "{}", Some("-infinity")).await;
    let future_infinity = insert(pool, "dawdle.noop", "{}", Some("infinity")).await;
    let far_future = insert(pool, "dawdle.noop", "{}", Some("294276-12-31 23:59:59+00")).await;
    let far_past = insert(pool, "dawdle.noop", "{}", Some("4713-01-01 00:00:00+00 BC")).await;
    sqlx::query(
        "UPDATE procrastinate_jobs SET created_at = '-infinity', lock = repeat('L', 100000),
                queueing_lock = E'q\\x01\\x1b[0m'
         WHERE id = $1",
    )
    .bind(odd_unicode)
    .execute(pool)
    .await
    .unwrap();
    innocent_ids.extend(defer_batch(pool, &innocent[20..]).await.unwrap());

    drain(pool).await;

    for id in innocent_ids {
        assert_eq!(status(pool, id).await, "succeeded", "innocent job {id}");
    }
    for id in [wide, big, odd_unicode, past_infinity, far_past] {
        assert_eq!(status(pool, id).await, "succeeded", "job {id}");
    }
    for (id, expected_kind) in [
        (beyond_f64, "ValidationError"),
        (python_int, "ValidationError"),
        (too_deep, "ValidationError"),
        (wrong_type, "ValidationError"),
        (null_arg, "ValidationError"),
        (missing_arg, "ValidationError"),
        (negative, "ValidationError"),
        (forever, "ValidationError"),
        (empty_kind, "Error"),
        (long_kind, "Error"),
        (control_kind, "Error"),
        (nul, "Error"),
        (unknown, "UnknownTask"),
    ] {
        assert_eq!(status(pool, id).await, "failed", "job {id}");
        let (kind, message, traceback) = last_error(pool, id).await;
        assert_eq!(kind, expected_kind, "job {id}: {message}");
        assert!(!message.is_empty(), "job {id}");
        assert!(message.len() <= MAX_MESSAGE_BYTES && traceback.len() <= MAX_TRACEBACK_BYTES);
    }
    // Undecodable arguments: failed at once (one attempt), saying why.
    let (_, message, _) = last_error(pool, beyond_f64).await;
    assert!(message.contains("cannot be read"), "{message}");
    assert!(
        message.contains("1e400") || message.contains("1000"),
        "{message}"
    );
    let (_, message, _) = last_error(pool, too_deep).await;
    assert!(message.contains("recursion limit"), "{message}");
    let (_, message, _) = last_error(pool, long_kind).await;
    assert!(message.ends_with(dawdle::text::TRUNCATED), "{message:.80}");
    let (_, message, traceback) = last_error(pool, nul).await;
    assert_eq!(message, "before\\0after");
    assert!(traceback.contains("note: the error kind"), "{traceback}");
    for id in [future_infinity, far_future] {
        assert_eq!(
            status(pool, id).await,
            "todo",
            "scheduled for (almost) never: job {id}"
        );
    }
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM procrastinate_jobs WHERE id = $1")
        .bind(beyond_f64)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "an unreadable job is not retried");

    let job = admin::get_job(pool, future_infinity)
        .await
        .unwrap()
        .unwrap();
    assert!(dawdle::rows::is_clamped(job.scheduled_at.unwrap()));
    let job = admin::get_job(pool, beyond_f64).await.unwrap().unwrap();
    assert!(job.args.is_null() && job.args_error.is_some());
    check_invariants(pool).await;
}

#[tokio::test]
async fn rows_the_python_library_writes_with_values_rust_cannot_hold_fail_alone() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    // json.loads/json.dumps keep Python's big integers exact and nest as
    // deep as asked: both reach the database through the real library.
    let deep = format!("{}0{}", "[".repeat(150), "]".repeat(150));
    let request = format!(
        r#"{{"mode": "single", "jobs": [
            {{"task_name": "dawdle.noop", "args": {{"n": 1{zeros}}}}},
            {{"task_name": "dawdle.noop", "args": {{"deep": {deep}}}}},
            {{"task_name": "dawdle.noop", "args": {{"fine": true}}}},
            {{"task_name": "dawdle.sleep", "args": {{"seconds": [1, 2]}}}}
        ]}}"#,
        zeros = "0".repeat(400)
    );
    let out = common::run_script(&db.url(), "defer.py", &[], &request)
        .await
        .expect_success();
    let ids: Vec<i64> = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{}", out.stdout);

    drain(pool).await;

    assert_eq!(status(pool, ids[0]).await, "failed");
    assert_eq!(last_error(pool, ids[0]).await.0, "ValidationError");
    assert_eq!(status(pool, ids[1]).await, "failed");
    assert_eq!(last_error(pool, ids[1]).await.0, "ValidationError");
    assert_eq!(status(pool, ids[2]).await, "succeeded");
    assert_eq!(status(pool, ids[3]).await, "failed");
    assert_eq!(last_error(pool, ids[3]).await.0, "ValidationError");
    check_invariants(pool).await;
}

/// JSON text a person or another language may store, including what
/// serde_json cannot represent: numbers beyond f64, deep nesting.
fn hostile_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        (1u32..600).prop_map(|digits| format!("9{}", "9".repeat(digits as usize))),
        (300u32..5000).prop_map(|exponent| format!("-1.5e{exponent}")),
        "[^\u{0}]{0,40}".prop_map(|s| serde_json::Value::String(s).to_string()),
    ];
    let value = leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[^\u{0}]{0,12}", inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
            (130usize..400).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        ]
    });
    prop::collection::vec(("[a-z]{1,8}", value), 0..5).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

fn hostile_task() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("dawdle.noop".to_string()),
        Just("dawdle.sleep".to_string()),
        Just("dawdle.fail".to_string()),
        "[^\u{0}]{1,128}",
    ]
}

fn hostile_schedule() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some("-infinity")),
        1 => Just(Some("4713-01-01 00:00:00+00 BC")),
        1 => Just(Some("2000-01-01 00:00:00+00")),
    ]
}

#[test]
fn any_rows_with_innocent_jobs_mixed_in_all_end_final() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::with_schema());
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let rows = prop::collection::vec((hostile_task(), hostile_json(), hostile_schedule()), 1..12);
    runner
        .run(&rows, |rows| {
            runtime.block_on(async {
                let pool = db.pool();
                sqlx::query("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers")
                    .execute(pool)
                    .await
                    .unwrap();
                let innocent: Vec<NewJob> = (0..5)
                    .map(|_| NewJob::new("dawdle.noop", json!({})).unwrap())
                    .collect();
                let ids = defer_batch(pool, &innocent).await.unwrap();
                for (task, args, schedule) in &rows {
                    // A sleep that would outlast the test is not hostile, just slow.
                    let task = if task == "dawdle.sleep" && args.contains("seconds") {
                        "dawdle.noop"
                    } else {
                        task.as_str()
                    };
                    insert(pool, task, args, *schedule).await;
                }
                defer_batch(pool, &innocent).await.unwrap();
                drain(pool).await;
                for id in ids {
                    assert_eq!(status(pool, id).await, "succeeded");
                }
                check_invariants(pool).await;
            });
            Ok(())
        })
        .unwrap();
}

/// The loop runs code that is not the worker's: here the shutdown future
/// panics while jobs run and others are held. The worker reports the crash
/// as an error, and no job is left `doing`.
#[tokio::test]
async fn a_panic_in_the_worker_loop_leaves_no_job_behind() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool().clone();
    let jobs: Vec<NewJob> = (0..30)
        .map(|_| NewJob::new("dawdle.sleep", json!({"seconds": 0.3})).unwrap())
        .collect();
    defer_batch(&pool, &jobs).await.unwrap();
    let worker = Worker::new(
        pool.clone(),
        registry(),
        WorkerConfig::default()
            .concurrency(4)
            .shutdown_timeout(Duration::from_secs(5)),
    );
    let watch = pool.clone();
    let crash = async move {
        // Waits until jobs run (the test fails on the worker's timeout if
        // they never do).
        loop {
            let doing: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'",
            )
            .fetch_one(&watch)
            .await
            .unwrap();
            if doing > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a shutdown future that fails");
    };
    let ended = tokio::time::timeout(Duration::from_secs(30), worker.run(crash))
        .await
        .expect("the worker must stop after its loop panicked");
    match ended {
        Err(WorkerError::Crashed { reason }) => {
            assert!(reason.contains("a shutdown future that fails"), "{reason}")
        }
        other => panic!("expected a crash report, got {other:?}"),
    }
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        left.iter()
            .all(|(status, _)| status == "todo" || status == "succeeded"),
        "{left:?}"
    );
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "the crashed worker unregistered");
}

/// A one-shot run against a database that never answers ends with an error
/// once it has waited as long as a worker takes to count as stalled.
#[tokio::test]
async fn a_one_shot_worker_gives_up_on_an_unreachable_database() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://nobody@127.0.0.1:1/jobs")
        .unwrap();
    let worker = Worker::new(
        pool,
        registry(),
        one_shot()
            .stalled_after(Duration::from_secs(1))
            .heartbeat_interval(Duration::from_millis(200)),
    );
    let ended = tokio::time::timeout(Duration::from_secs(30), worker.run(std::future::pending()))
        .await
        .expect("a one-shot worker must terminate");
    assert!(
        matches!(ended, Err(WorkerError::Unreachable { .. })),
        "{ended:?}"
    );
}

/// Defers three follow-ups on success; the second one's queueing lock is
/// already taken by a waiting job.
#[derive(Debug, Serialize, Deserialize)]
struct FansOut {
    n: u32,
}

impl Task for FansOut {
    const NAME: &'static str = "test.fans_out";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        for i in 0..3 {
            let job = NewJob::new("test.follow_up", json!({"parent": self.n, "i": i}))
                .unwrap()
                .queue("follow_ups")
                .queueing_lock(format!("follow-up-{}-{i}", self.n));
            ctx.defer_after_success(job).unwrap();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_conflicting_follow_up_is_skipped_alone() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let taken = NewJob::new("test.follow_up", json!({}))
        .unwrap()
        .queue("follow_ups")
        .queueing_lock("follow-up-1-1");
    defer_batch(pool, &[taken]).await.unwrap();
    let parents: Vec<NewJob> = (0..4)
        .map(|n| NewJob::for_task(&FansOut { n }).unwrap())
        .collect();
    let parent_ids = defer_batch(pool, &parents).await.unwrap();
    let mut registry = Registry::new();
    registry.register::<FansOut>();
    let worker = Worker::new(
        pool.clone(),
        registry,
        one_shot().queues(Some(vec!["default".into()])),
    );
    tokio::time::timeout(Duration::from_secs(30), worker.run(std::future::pending()))
        .await
        .unwrap()
        .unwrap();
    for id in parent_ids {
        assert_eq!(status(pool, id).await, "succeeded", "parent {id}");
    }
    let locks: Vec<String> = sqlx::query_scalar(
        "SELECT queueing_lock FROM procrastinate_jobs WHERE queue_name = 'follow_ups'
         ORDER BY queueing_lock",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<String> = (0..4)
        .flat_map(|n| (0..3).map(move |i| format!("follow-up-{n}-{i}")))
        .collect();
    assert_eq!(
        locks, expected,
        "every follow-up but the conflicting one, which already waits"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM procrastinate_jobs WHERE queueing_lock = 'follow-up-1-1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        waiting, 1,
        "the conflicting follow-up was skipped, the waiting job kept"
    );
}

/// An outcome the database refuses (here a constraint an operator added
/// on error messages) holds back neither the other outcomes of its batch
/// nor its own job: it is recorded with its error details replaced.
#[tokio::test]
async fn an_outcome_the_database_refuses_is_recorded_plainly_and_alone() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    sqlx::query(
        "ALTER TABLE procrastinate_events ADD CONSTRAINT no_poison
         CHECK (error_message IS NULL OR error_message NOT LIKE '%poison%')",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("dawdle.noop", json!({"i": i})).unwrap())
        .collect();
    jobs.insert(
        25,
        NewJob::new(
            "dawdle.fail",
            json!({"kind": "Poison", "message": "poison pill"}),
        )
        .unwrap(),
    );
    let ids = defer_batch(pool, &jobs).await.unwrap();
    drain(pool).await;
    for (index, id) in ids.iter().enumerate() {
        let expected = if index == 25 { "failed" } else { "succeeded" };
        assert_eq!(status(pool, *id).await, expected, "job {id}");
    }
    let (kind, message, _) = last_error(pool, ids[25]).await;
    assert_eq!(kind, "Error");
    assert!(message.contains("could not be stored"), "{message}");
}

/// An outcome refused even alone (a retry that would make a second waiting
/// job of a queueing lock) ends its job `failed` with why, instead of
/// leaving it `doing` with nobody to finish it; an attempt count at the top
/// of its range stays there instead of refusing the outcome.
#[tokio::test]
async fn an_outcome_refused_even_alone_fails_its_job_instead_of_leaving_it_doing() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let mut jobs: Vec<NewJob> = (0..20)
        .map(|i| NewJob::new("dawdle.noop", json!({"i": i})).unwrap())
        .collect();
    jobs.insert(
        10,
        NewJob::new("test.twin_then_retry", json!({"queueing_lock": "QL"}))
            .unwrap()
            .queueing_lock("QL"),
    );
    let ids = defer_batch(pool, &jobs).await.unwrap();
    let worn = insert(pool, "dawdle.noop", "{}", None).await;
    sqlx::query("UPDATE procrastinate_jobs SET attempts = 2147483647 WHERE id = $1")
        .bind(worn)
        .execute(pool)
        .await
        .unwrap();
    let report = drain(pool).await;
    assert_eq!(report.refused, 1, "{report:?}");
    for (index, id) in ids.iter().enumerate() {
        let expected = if index == 10 { "failed" } else { "succeeded" };
        assert_eq!(status(pool, *id).await, expected, "job {id}");
    }
    let (kind, message, _) = last_error(pool, ids[10]).await;
    assert_eq!(kind, "Error");
    assert!(
        message.contains("recording its outcome (retry) was refused")
            && message.contains("another job waits with the same queueing lock"),
        "{message}"
    );
    assert_eq!(status(pool, worn).await, "succeeded");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM procrastinate_jobs WHERE id = $1")
        .bind(worn)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(attempts, i32::MAX);
    check_invariants(pool).await;
}

/// Orphaned jobs the rescue cannot put back as they are (an attempt count
/// at the top of its range, a waiting twin of their queueing lock) hold
/// back neither the rescue of the others nor themselves.
#[tokio::test]
async fn the_stalled_job_rescue_is_not_stopped_by_one_row() {
    let db = TestDatabase::with_schema().await;
    let pool = db.pool();
    let insert_doing = |attempts: i32, queueing_lock: Option<&'static str>| async move {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO procrastinate_jobs
                 (queue_name, task_name, status, attempts, queueing_lock, started_at)
             VALUES ('default', 'dawdle.noop', 'doing', $1, $2, now() - interval '1 hour')
             RETURNING id",
        )
        .bind(attempts)
        .bind(queueing_lock)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let worn = insert_doing(i32::MAX, None).await;
    let twinned = insert_doing(0, Some("QL")).await;
    let plain = insert_doing(0, None).await;
    let twin = insert(pool, "dawdle.noop", "{}", Some("2999-01-01T00:00:00Z")).await;
    sqlx::query("UPDATE procrastinate_jobs SET queueing_lock = 'QL' WHERE id = $1")
        .bind(twin)
        .execute(pool)
        .await
        .unwrap();

    let worker = Worker::new(
        pool.clone(),
        registry(),
        WorkerConfig::default()
            .stalled_after(Duration::from_secs(1))
            .heartbeat_interval(Duration::from_millis(200))
            .poll_interval(Duration::from_millis(200)),
    )
    .start();
    dawdle::testing::eventually(
        Duration::from_secs(30),
        "the orphaned jobs rescued",
        async || {
            status(pool, worn).await == "succeeded"
                && status(pool, plain).await == "succeeded"
                && status(pool, twinned).await == "failed"
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    let (kind, message, _) = last_error(pool, twinned).await;
    assert_eq!(kind, "Error");
    assert!(
        message.contains("putting it back to todo was refused")
            && message.contains("another job waits with the same queueing lock"),
        "{message}"
    );
    assert_eq!(status(pool, twin).await, "todo");
    check_invariants(pool).await;
}

/// Huge arguments are left out of a listing without being read: a page of
/// 25 MB rows reads in the time of any page, and says how large they are.
#[tokio::test]
async fn a_listing_leaves_huge_arguments_out_unread() {
    let db = TestDatabase::with_schema().await;
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
         SELECT 'bulk', 't', jsonb_build_object('blob', repeat(E'A\\x1b[31m', 2500000)),
                'succeeded'
         FROM generate_series(1, 20)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // Not too large stored (it compresses), but too long to list.
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('bulk', 't', jsonb_build_object('pad', repeat('p', 100000)))",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('bulk', 'small', '{\"n\": 1}')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let filter = JobFilter {
        limit: Some(50),
        ..JobFilter::default()
    };
    let started = std::time::Instant::now();
    let jobs = admin::job_listing(db.pool(), &filter).await.unwrap();
    let took = started.elapsed();
    assert_eq!(jobs.len(), 22);
    // Printing each 25 MB value on the server took about 0.25 s a row.
    assert!(took < Duration::from_secs(2), "the listing took {took:?}");
    assert_eq!(jobs[0].job.args, json!({"n": 1}));
    assert!(jobs[0].args_left_out.is_none());
    let padded = jobs[1].args_left_out.as_ref().expect("too long to list");
    assert!(padded
        .excerpt
        .as_deref()
        .unwrap()
        .starts_with("{\"pad\": \"ppp"));
    assert!(jobs[1].job.args.is_null() && jobs[1].job.args_error.is_none());
    for job in &jobs[2..] {
        let left_out = job.args_left_out.as_ref().expect("too large to list");
        assert!(left_out.stored_bytes > admin::LISTED_ARGS_STORED_BYTES.into());
        assert!(left_out.excerpt.is_none() && job.job.args.is_null());
        let summary = job.args_summary();
        assert!(summary.len() < 200, "{summary}");
        assert!(
            summary.contains(&format!("dawdle job {}", job.job.id)),
            "{summary}"
        );
    }
    // The job itself still has them whole.
    let whole = admin::get_job(db.pool(), jobs[2].job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.args["blob"].as_str().unwrap().len(), 15_000_000);
}

/// A job with a long history shows its first and last events, each field
/// bounded, and counts the ones left out.
#[tokio::test]
async fn a_long_history_is_shown_by_its_ends() {
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
         SELECT $1, 'error', 'Kind' || n, 'message ' || n,
                CASE WHEN n = 20000 THEN repeat('t', 1000000) ELSE 'tb' END
         FROM generate_series(1, 20000) AS n",
    )
    .bind(id)
    .execute(db.pool())
    .await
    .unwrap();
    let detail = admin::job_detail(db.pool(), id).await.unwrap().unwrap();
    let shown = admin::HISTORY_FIRST + admin::HISTORY_LAST;
    assert_eq!(detail.events.len(), shown);
    assert_eq!(detail.events_left_out, 20_000 - shown as i64);
    assert_eq!(detail.events[0].error.as_deref(), Some("Kind1"));
    assert_eq!(
        detail.events[admin::HISTORY_FIRST].error.as_deref(),
        Some(format!("Kind{}", 20_000 - admin::HISTORY_LAST + 1).as_str())
    );
    let last = detail.events.last().unwrap();
    let traceback = last.error_traceback.as_deref().unwrap();
    assert_eq!(traceback.chars().count(), admin::EVENT_FIELD_CHARS);
    assert!(traceback.ends_with(dawdle::text::TRUNCATED));
    // A short history is whole.
    let short: i64 = sqlx::query_scalar(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)
         VALUES ('default', 't', '{}') RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let detail = admin::job_detail(db.pool(), short).await.unwrap().unwrap();
    assert_eq!(detail.events_left_out, 0);
    assert!(detail.events.len() < 5, "{:?}", detail.events);
}

/// Infinite timestamps and heartbeats from the future: the gauges, stats
/// and healthcheck still read, agree that no worker is live, and count
/// `aborting` jobs as running.
#[tokio::test]
async fn infinite_times_neither_break_the_gauges_nor_count_as_life() {
    let db = TestDatabase::with_schema().await;
    sqlx::raw_sql(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, created_at)
         VALUES ('neg', 't', '{}', 'todo', '-infinity'), ('neg', 't', '{}', 'todo', now());
         INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
         VALUES ('neg', 't', '{}', 'aborting');
         INSERT INTO dawdle_queue_pauses (queue_name, paused_at) VALUES ('p', 'infinity');
         INSERT INTO procrastinate_workers (last_heartbeat)
         VALUES ('infinity'), (now() + interval '10 years');",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let gauges = admin::queue_gauges(db.pool(), Duration::from_secs(30))
        .await
        .expect("no row fails the gauges");
    assert_eq!(gauges.live_workers, 0);
    let neg = gauges.queues.iter().find(|q| q.queue == "neg").unwrap();
    assert_eq!(neg.todo, 2);
    assert!(neg.oldest_waiting_seconds.is_finite() && neg.oldest_waiting_seconds < 60.0);
    assert_eq!(gauges.paused[0].seconds, 0.0);

    let stats = admin::stats(db.pool(), &admin::StatsConfig::default())
        .await
        .unwrap();
    assert_eq!(stats.live_workers, 0);
    assert_eq!(stats.queues["neg"].doing, 1, "aborting counts as running");
    let report = admin::healthcheck(db.pool(), Duration::from_secs(60), true).await;
    assert_eq!(report.live_workers, 0);
    assert!(!report.is_healthy());
    let groups = admin::group_counts(db.pool(), admin::Grouping::Queue, &JobFilter::default())
        .await
        .unwrap();
    assert_eq!(groups.iter().find(|g| g.name == "neg").unwrap().doing, 1);
}
