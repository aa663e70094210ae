//! The claiming loop over an in-memory fake of the state module, on a
//! paused clock: when it claims, how much, and how it backs off.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant as TokioInstant;

use super::*;
use crate::context::JobContext;
use crate::state::{Outcome, Returned};
use crate::task::Task;
use crate::worker::config::WorkerConfig;
use crate::worker::floor::Announced;
use crate::worker::handle::Stop;
use crate::worker::registry::Registry;
use crate::worker::store::Recorder;
use crate::worker::store::Scheduled;

/// A task that ends at once.
#[derive(serde::Serialize, serde::Deserialize)]
struct Quick {}

impl Task for Quick {
    const NAME: &'static str = "quick";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A task that would run an hour, ignoring abort requests, stopped by its
/// 5 s timeout.
#[derive(serde::Serialize, serde::Deserialize)]
struct Slow {}

impl Task for Slow {
    const NAME: &'static str = "slow";

    fn timeout() -> Option<Duration> {
        Some(Duration::from_secs(5))
    }

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// What a test can do beside the running loop.
struct Beside {
    wake: Arc<Notify>,
    retries_written: Arc<RetriesWritten>,
    abort_requests: mpsc::UnboundedSender<Request>,
}

/// The state module in memory: jobs waiting to be claimed, every claim
/// with when it came and what it asked for, claims made to fail.
#[derive(Clone)]
struct FakeState(Arc<Mutex<Inner>>);

struct Inner {
    since: TokioInstant,
    waiting: VecDeque<Job>,
    /// When each claim came (since the start), its limit, and whether it
    /// was a full pass (no floor).
    claims: Vec<(Duration, usize, bool)>,
    failing_claims: usize,
    /// How long each claim takes to answer.
    claim_takes: Duration,
    /// When the earliest job scheduled for later, [`SCHEDULED_JOB`], is
    /// due. It lies below any floor: only a claim at or after that time,
    /// from the head or from a floor lowered to it, claims it.
    scheduled_at: Option<TokioInstant>,
    /// The scheduled job cannot run (its lock is held): it stays.
    scheduled_blocked: bool,
    /// When the scheduled job was claimed.
    scheduled_claimed: Option<Duration>,
    /// How long a look for it takes to answer, after it read the table.
    look_takes: Duration,
    /// How many looks to fail before answering again.
    failing_looks: usize,
    /// Each outcome written: job id, when (since the start), verdict and
    /// error kind.
    recorded: Vec<(i64, Duration, String)>,
    put_backs: usize,
    registrations: usize,
}

impl FakeState {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Inner {
            since: TokioInstant::now(),
            waiting: VecDeque::new(),
            claims: Vec::new(),
            failing_claims: 0,
            claim_takes: Duration::ZERO,
            scheduled_at: None,
            scheduled_blocked: false,
            scheduled_claimed: None,
            look_takes: Duration::ZERO,
            failing_looks: 0,
            recorded: Vec::new(),
            put_backs: 0,
            registrations: 0,
        })))
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        change(&mut self.0.lock().unwrap());
        self
    }

    fn add_jobs(&self, ids: impl IntoIterator<Item = i64>) {
        let mut inner = self.0.lock().unwrap();
        inner
            .waiting
            .extend(ids.into_iter().map(|id| job(id, Quick::NAME)));
    }

    fn recorded_ids(&self) -> Vec<i64> {
        self.inner(|inner| inner.recorded.iter().map(|(id, _, _)| *id).collect())
    }

    /// When each claim came, in milliseconds since the start.
    fn claim_times_ms(&self) -> Vec<u128> {
        let inner = self.0.lock().unwrap();
        inner
            .claims
            .iter()
            .map(|(at, _, _)| at.as_millis())
            .collect()
    }

    /// When each full pass came, in milliseconds since the start.
    fn full_pass_times_ms(&self) -> Vec<u128> {
        let inner = self.0.lock().unwrap();
        inner
            .claims
            .iter()
            .filter(|(_, _, full)| *full)
            .map(|(at, _, _)| at.as_millis())
            .collect()
    }

    /// When the scheduled job was claimed, in milliseconds since the start.
    fn scheduled_claimed_ms(&self) -> Option<u128> {
        self.inner(|inner| inner.scheduled_claimed.map(|at| at.as_millis()))
    }

    /// The database's clock: the wall clock at the start, then the loop's.
    fn db_time(&self, at: TokioInstant) -> DateTime<Utc> {
        let since = self.inner(|inner| inner.since);
        *DB_EPOCH + (at - since)
    }

    fn inner<T>(&self, read: impl FnOnce(&Inner) -> T) -> T {
        read(&self.0.lock().unwrap())
    }
}

/// The id of the fake's job scheduled for later: older than every other.
const SCHEDULED_JOB: i64 = 0;

/// Where the fake database's clock starts.
static DB_EPOCH: std::sync::LazyLock<DateTime<Utc>> = std::sync::LazyLock::new(Utc::now);

impl Recorder for FakeState {
    async fn record(&self, batch: &[Outcome]) -> Result<u64, sqlx::Error> {
        let mut inner = self.0.lock().unwrap();
        let at = inner.since.elapsed();
        inner.recorded.extend(batch.iter().map(|outcome| {
            let kind = outcome
                .error
                .as_ref()
                .map_or(String::new(), |error| error.kind().to_string());
            (outcome.job_id, at, format!("{:?} {kind}", outcome.verdict))
        }));
        Ok(0)
    }
}

impl Store for FakeState {
    async fn claim(
        &self,
        _queues: Option<&[String]>,
        _worker_id: i64,
        limit: usize,
        floor: Option<Floor>,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let takes = {
            let mut inner = self.0.lock().unwrap();
            let at = inner.since.elapsed();
            inner.claims.push((at, limit, floor.is_none()));
            inner.claim_takes
        };
        // The claim reads the table as it comes.
        let read_at = TokioInstant::now();
        tokio::time::sleep(takes).await;
        let mut inner = self.0.lock().unwrap();
        if inner.failing_claims > 0 {
            inner.failing_claims -= 1;
            // No database error: a lost connection.
            return Err(sqlx::Error::PoolTimedOut);
        }
        let count = limit.min(inner.waiting.len());
        let mut jobs: Vec<Job> = inner.waiting.drain(..count).collect();
        let scheduled_due = inner.scheduled_at.is_some_and(|due| due <= read_at);
        let reaches = floor.is_none_or(|floor| floor.priority != 0 || floor.id <= SCHEDULED_JOB);
        if reaches && scheduled_due && !inner.scheduled_blocked && jobs.len() < limit {
            inner.scheduled_at = None;
            inner.scheduled_claimed = Some(read_at - inner.since);
            jobs.push(job(SCHEDULED_JOB, Quick::NAME));
        }
        Ok(jobs)
    }

    async fn put_back(&self, _put_back: &PutBack<'_>) -> Result<Returned, sqlx::Error> {
        self.0.lock().unwrap().put_backs += 1;
        Ok(Returned::default())
    }

    async fn next_scheduled(
        &self,
        _queues: Option<&[String]>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Scheduled, sqlx::Error> {
        let now = TokioInstant::now();
        let (due, takes) = self.inner(|inner| (inner.scheduled_at, inner.look_takes));
        let found = due.filter(|due| since.is_none_or(|since| self.db_time(*due) > since));
        let looked = Scheduled {
            now: self.db_time(now),
            wait: found.map(|due| due.saturating_duration_since(now)),
        };
        tokio::time::sleep(takes).await;
        let mut inner = self.0.lock().unwrap();
        if inner.failing_looks > 0 {
            inner.failing_looks -= 1;
            return Err(sqlx::Error::PoolTimedOut);
        }
        Ok(looked)
    }

    async fn register(&self) -> Result<i64, sqlx::Error> {
        self.0.lock().unwrap().registrations += 1;
        Ok(2)
    }
}

fn job(id: i64, task: &str) -> Job {
    Job::doing_for_tests(id, task)
}

/// A worker whose pool never connects: everything goes to the fake.
fn worker(config: WorkerConfig) -> Worker {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@unreachable.invalid/none")
        .expect("a lazy pool");
    let mut registry = Registry::new();
    registry.register::<Quick>().register::<Slow>();
    Worker::new(pool, registry, config)
}

/// What a loop run gave.
struct Ran {
    ended: Result<(), WorkerError>,
    report: WorkerReport,
}

/// Runs the claiming loop over `state` until `run_for` has passed on the
/// paused clock (or the loop ends by itself), with `during` running beside
/// it (to send wake-ups), then waits for outcomes to be recorded.
async fn run_loop<D>(
    state: &FakeState,
    config: WorkerConfig,
    run_for: Duration,
    during: impl FnOnce(Beside) -> D,
) -> Ran
where
    D: Future<Output = ()> + Send + 'static,
{
    run_loop_holding(state, config, Vec::new(), run_for, during).await
}

/// [`run_loop`], with `held` claimed and held before the loop starts.
async fn run_loop_holding<D>(
    state: &FakeState,
    config: WorkerConfig,
    held: Vec<Job>,
    run_for: Duration,
    during: impl FnOnce(Beside) -> D,
) -> Ran
where
    D: Future<Output = ()> + Send + 'static,
{
    let worker = worker(config);
    let wake = Arc::new(Notify::new());
    let retries_written = Arc::new(RetriesWritten::default());
    let (events, _) = broadcast::channel(16);
    let (completer, completer_task) = Completer::spawn(
        state.clone(),
        Duration::from_secs(5),
        retries_written.clone(),
        events,
    );
    let (abort_sender, mut abort_requests) = mpsc::unbounded_channel();
    let beside = tokio::spawn(during(Beside {
        wake: wake.clone(),
        retries_written: retries_written.clone(),
        abort_requests: abort_sender,
    }));
    let mut state_loop = Loop {
        worker: &worker,
        store: state.clone(),
        worker_id: Arc::new(AtomicI64::new(1)),
        completer: completer.clone(),
        running: JoinSet::new(),
        by_task: HashMap::new(),
        queues: Arc::new(None),
        held: HeldJobs::default(),
        pace: Pace::new(worker.config.prefetch, Instant::now()),
        report: WorkerReport::default(),
        labels: Labeller::new(worker.registry.clone(), None),
        reconcile: false,
        floor: ClaimFloor::new(Announced::default()),
    };
    state_loop.hold(held);
    let shutdown = tokio::time::sleep(run_for);
    tokio::pin!(shutdown);
    let ended = state_loop
        .main_loop(&mut shutdown, &wake, &retries_written, &mut abort_requests)
        .await;
    let (_stop, stop) = watch::channel(Stop::Running);
    state_loop.drain(Duration::from_secs(1), stop).await;
    let report = std::mem::take(&mut state_loop.report);
    drop(state_loop);
    drop(completer);
    completer_task.await.unwrap();
    beside.abort();
    Ran { ended, report }
}

async fn nothing(_beside: Beside) {}

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .concurrency(10)
        .prefetch(0)
        .poll_interval(Duration::from_secs(2))
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_claims_once_per_poll_interval() {
    let state = FakeState::new();
    let ran = run_loop(&state, config(), Duration::from_millis(9_500), nothing).await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 2_000, 4_000, 6_000, 8_000]);
}

#[tokio::test(start_paused = true)]
async fn a_notification_claims_at_once() {
    let state = FakeState::new();
    let ran = run_loop(
        &state,
        config().poll_interval(Duration::from_secs(60)),
        Duration::from_secs(10),
        |beside| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            beside.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(700)).await;
            beside.wake.notify_one();
        },
    )
    .await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 500, 1_200]);
}

#[tokio::test(start_paused = true)]
async fn a_notification_during_a_claim_is_not_lost_when_the_claim_comes_back() {
    // The claim in flight may have read the database before what the
    // notification announces was committed: it must be claimed again.
    let state = FakeState::new().with(|inner| inner.claim_takes = Duration::from_millis(100));
    let ran = run_loop(
        &state,
        config().poll_interval(Duration::from_secs(60)),
        Duration::from_secs(10),
        |beside| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            beside.wake.notify_one();
        },
    )
    .await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 100]);
}

#[tokio::test(start_paused = true)]
async fn a_full_claim_is_followed_by_another_without_waiting_for_the_poll() {
    let state = FakeState::new();
    state.add_jobs(1..=25);
    let ran = run_loop(&state, config(), Duration::from_millis(1_000), nothing).await;
    ran.ended.unwrap();
    // 10, 10, 5 (not full: the loop then waits for the poll).
    let claims = state.inner(|inner| inner.claims.clone());
    assert!(claims.len() >= 3, "{claims:?}");
    assert!(
        claims[..3].iter().all(|(at, _, _)| at.is_zero()),
        "{claims:?}"
    );
    assert_eq!(ran.report.succeeded, 25);
    let mut recorded = state.recorded_ids();
    recorded.sort_unstable();
    assert_eq!(recorded, (1..=25).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_job_scheduled_for_later_is_claimed_when_due_not_at_the_next_poll() {
    let state = FakeState::new().with(|inner| {
        inner.scheduled_at = Some(inner.since + Duration::from_millis(3_500));
    });
    let ran = run_loop(
        &state,
        config().poll_interval(Duration::from_secs(60)),
        Duration::from_secs(10),
        nothing,
    )
    .await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 3_500]);
    assert_eq!(state.full_pass_times_ms(), [0, 3_500]);
    assert_eq!(state.scheduled_claimed_ms(), Some(3_500));
}

/// Polls a minute apart for 10 s; at 1 s, this worker's retry due at 3 s
/// (and a millisecond: the loop counts on the wall clock, which has moved
/// on a little by the time it reads it) is written, after `waiting` others
/// due in an hour.
async fn retry_written_at_1_s_due_at_3_s(state: &FakeState, waiting: usize) {
    let ran = run_loop(
        state,
        config().poll_interval(Duration::from_secs(60)),
        Duration::from_secs(10),
        {
            let state = state.clone();
            |beside| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let far = Utc::now() + chrono::Duration::hours(1);
                beside.retries_written.written(
                    (0..waiting as i64).map(|n| (far + chrono::Duration::milliseconds(n), 100 + n)),
                );
                let mut inner = state.0.lock().unwrap();
                inner.scheduled_at = Some(inner.since + Duration::from_secs(3));
                drop(inner);
                beside.retries_written.written([(
                    Utc::now() + chrono::Duration::milliseconds(2_001),
                    SCHEDULED_JOB,
                )]);
            }
        },
    )
    .await;
    ran.ended.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_written_retry_is_claimed_from_its_own_id_when_due() {
    // The floor goes down to the retried job, not to the head of the claim
    // order: a claim from the head steps over every entry vacuum could not
    // yet remove.
    let state = FakeState::new();
    state.add_jobs(1..=3);
    retry_written_at_1_s_due_at_3_s(&state, 0).await;
    assert_eq!(state.claim_times_ms(), [0, 3_001]);
    assert_eq!(state.full_pass_times_ms(), [0]);
    assert_eq!(state.scheduled_claimed_ms(), Some(3_001));
}

#[tokio::test(start_paused = true)]
async fn retries_past_the_ones_timed_one_by_one_are_claimed_from_the_head_when_due() {
    let state = FakeState::new();
    state.add_jobs(1..=3);
    retry_written_at_1_s_due_at_3_s(&state, MAX_OWN_RETRIES).await;
    // Timed on the wall clock, which moved on while the 10,000 were taken
    // in: a claim a little early finds nothing, and the look after it sets
    // the timer again.
    let claimed = state.scheduled_claimed_ms().expect("the retry was claimed");
    assert!(
        (2_900..=3_100).contains(&claimed),
        "claimed at {claimed} ms"
    );
    assert!(
        state.full_pass_times_ms().contains(&claimed),
        "not from the head: {:?}",
        state.full_pass_times_ms()
    );
}

#[tokio::test(start_paused = true)]
async fn a_written_retry_is_claimed_when_due_whatever_the_looks_say() {
    // Every look fails, or reads the table long before the retry commits
    // and answers after: the loop has the retry's time from the completer.
    for change in [
        (|inner: &mut Inner| inner.failing_looks = usize::MAX) as fn(&mut Inner),
        |inner: &mut Inner| inner.look_takes = Duration::from_secs(5),
    ] {
        let state = FakeState::new().with(change);
        retry_written_at_1_s_due_at_3_s(&state, 0).await;
        assert_eq!(state.scheduled_claimed_ms(), Some(3_001));
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_that_came_due_unseen_by_any_look_is_claimed_after_the_next_short_claim() {
    // Another client schedules a job below the floor at 0.5 s, due at 1 s;
    // nothing announces it. The look after the poll's claim at 2 s finds
    // it due since the look before: a full pass at once, not in 30 s.
    let state = FakeState::new();
    // Their claim sets the floor.
    state.add_jobs(1..=3);
    let ran = run_loop(&state, config(), Duration::from_millis(4_500), {
        let state = state.clone();
        |_beside| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut inner = state.0.lock().unwrap();
            inner.scheduled_at = Some(inner.since + Duration::from_secs(1));
        }
    })
    .await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 2_000, 2_000, 4_000]);
    assert_eq!(state.full_pass_times_ms(), [0, 2_000]);
    assert_eq!(state.scheduled_claimed_ms(), Some(2_000));
}

#[tokio::test(start_paused = true)]
async fn under_a_steady_stream_of_notifications_each_poll_still_looks() {
    // Claims take 20 ms and a notification comes every 5 ms, so every claim
    // answers with the next one already due and none is followed by a look.
    // A job brought forward below the floor (due at 1 s, unannounced) is
    // found by the look the poll at 2 s starts: read from the head once the
    // claim in flight answers.
    let state = FakeState::new().with(|inner| inner.claim_takes = Duration::from_millis(20));
    state.add_jobs(1..=3);
    let ran = run_loop(&state, config(), Duration::from_millis(2_500), {
        let state = state.clone();
        |beside| async move {
            let mut notifications = tokio::time::interval(Duration::from_millis(5));
            let brought_forward = tokio::time::Instant::now() + Duration::from_millis(500);
            loop {
                notifications.tick().await;
                if tokio::time::Instant::now() >= brought_forward {
                    let mut inner = state.0.lock().unwrap();
                    if inner.scheduled_at.is_none() && inner.scheduled_claimed.is_none() {
                        inner.scheduled_at = Some(inner.since + Duration::from_secs(1));
                    }
                }
                beside.wake.notify_one();
            }
        }
    })
    .await;
    ran.ended.unwrap();
    let claimed = state
        .scheduled_claimed_ms()
        .expect("the job brought forward was claimed");
    assert!(
        (2_000..=2_040).contains(&claimed),
        "claimed at {claimed} ms"
    );
    assert_eq!(state.full_pass_times_ms()[..2], [0, claimed]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_look_is_made_good_by_the_next_one() {
    // A job due at 1 s; the look after the first claim fails. The one after
    // the poll's claim at 2 s still finds it, though it is no longer ahead.
    let state = FakeState::new().with(|inner| {
        inner.scheduled_at = Some(inner.since + Duration::from_secs(1));
        inner.failing_looks = 1;
    });
    state.add_jobs(1..=3);
    let ran = run_loop(&state, config(), Duration::from_millis(2_500), nothing).await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 2_000, 2_000]);
    assert_eq!(state.full_pass_times_ms(), [0, 2_000]);
    assert_eq!(state.scheduled_claimed_ms(), Some(2_000));
}

#[tokio::test(start_paused = true)]
async fn a_failed_look_keeps_the_time_an_earlier_look_found() {
    // The first look (after the claim at 0 s) finds a job due at 3.5 s.
    // A notification at 1 s makes a claim and another look, which fails:
    // the job due at 3.5 s is still claimed then, not at the poll a minute
    // later.
    let state = FakeState::new().with(|inner| {
        inner.scheduled_at = Some(inner.since + Duration::from_millis(3_500));
    });
    let ran = run_loop(
        &state,
        config().poll_interval(Duration::from_secs(60)),
        Duration::from_secs(10),
        {
            let state = state.clone();
            |beside| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                state.0.lock().unwrap().failing_looks = 1;
                beside.wake.notify_one();
            }
        },
    )
    .await;
    ran.ended.unwrap();
    assert_eq!(state.claim_times_ms(), [0, 1_000, 3_500]);
    assert_eq!(state.scheduled_claimed_ms(), Some(3_500));
    assert_eq!(
        state.inner(|inner| inner.failing_looks),
        0,
        "the look failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_due_job_that_cannot_run_asks_for_few_full_passes() {
    // Due at 1 s, but its lock is held for the whole run: it is claimed
    // from the head when it comes due, and once more for the look that
    // then finds it due, never again, whatever the polls' looks see.
    let state = FakeState::new().with(|inner| {
        inner.scheduled_at = Some(inner.since + Duration::from_secs(1));
        inner.scheduled_blocked = true;
    });
    state.add_jobs(1..=3);
    let ran = run_loop(&state, config(), Duration::from_millis(9_500), nothing).await;
    ran.ended.unwrap();
    assert_eq!(state.full_pass_times_ms(), [0, 1_000, 1_000]);
    assert_eq!(
        state.claim_times_ms(),
        [0, 1_000, 1_000, 2_000, 4_000, 6_000, 8_000]
    );
    assert_eq!(state.scheduled_claimed_ms(), None);
}

#[tokio::test(start_paused = true)]
async fn failed_claims_back_off_and_check_for_lost_claims_before_the_next() {
    let state = FakeState::new().with(|inner| inner.failing_claims = 4);
    let ran = run_loop(&state, config(), Duration::from_millis(1_900), nothing).await;
    ran.ended.unwrap();
    let times = state.claim_times_ms();
    assert!(times.len() >= 5, "{times:?}");
    // Waits of 100, 200, 400 and 800 ms, each within ±20 %.
    let gaps: Vec<u128> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (gap, base) in gaps.iter().zip([100, 200, 400, 800]) {
        assert!(
            *gap >= base * 8 / 10 && *gap <= base * 12 / 10,
            "gaps {gaps:?}"
        );
    }
    // Each failed claim may have committed unseen: the loop looks for such
    // jobs (put back) before it claims again.
    assert_eq!(state.inner(|inner| inner.put_backs), 4);
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_worker_ends_when_a_claim_finds_nothing_left() {
    let state = FakeState::new();
    state.add_jobs(1..=3);
    let ran = run_loop(
        &state,
        config().one_shot(true),
        Duration::from_secs(3600),
        nothing,
    )
    .await;
    ran.ended.unwrap();
    assert_eq!(ran.report.succeeded, 3);
    // It ended at once, not at the hour's end nor at a poll.
    assert!(state.claim_times_ms().iter().all(|at| *at == 0));
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_worker_gives_up_once_claims_fail_for_the_stall_time() {
    let state = FakeState::new().with(|inner| inner.failing_claims = usize::MAX);
    let since = TokioInstant::now();
    let ran = run_loop(
        &state,
        config()
            .one_shot(true)
            .stalled_after(Duration::from_secs(10)),
        Duration::from_secs(3600),
        nothing,
    )
    .await;
    assert!(
        matches!(ran.ended, Err(WorkerError::Unreachable { .. })),
        "{:?}",
        ran.ended.err()
    );
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_stopped_at_the_timeout() {
    let state = FakeState::new();
    state
        .0
        .lock()
        .unwrap()
        .waiting
        .push_back(job(1, Slow::NAME));
    let ran = run_loop(&state, config(), Duration::from_secs(60), nothing).await;
    ran.ended.unwrap();
    let recorded = state.inner(|inner| inner.recorded.clone());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (id, at, what) = &recorded[0];
    assert_eq!(*id, 1);
    assert_eq!(*at, Duration::from_secs(5), "stopped at its timeout");
    assert_eq!(what, "Failed TimeoutError");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_ignores_its_abort_request_is_cancelled_after_the_grace() {
    let state = FakeState::new();
    state
        .0
        .lock()
        .unwrap()
        .waiting
        .push_back(job(7, Slow::NAME));
    let ran = run_loop(
        &state,
        config()
            .abort_grace(Duration::from_secs(2))
            .poll_interval(Duration::from_secs(60)),
        Duration::from_secs(60),
        |beside| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            beside.abort_requests.send(Request::Abort(7)).unwrap();
        },
    )
    .await;
    ran.ended.unwrap();
    let recorded = state.inner(|inner| inner.recorded.clone());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (id, at, what) = &recorded[0];
    assert_eq!(*id, 7);
    assert_eq!(
        *at,
        Duration::from_secs(3),
        "requested at 1 s, 2 s of grace"
    );
    assert_eq!(what, "Aborted Aborted");
}

#[tokio::test(start_paused = true)]
async fn pausing_a_queue_puts_back_its_held_jobs_at_once_and_only_those() {
    let state = FakeState::new();
    let in_queue = |id: i64, task: &str, queue: &str| {
        let mut job = job(id, task);
        job.queue_name = queue.into();
        job
    };
    let held = vec![
        in_queue(1, Slow::NAME, "default"),
        in_queue(2, Quick::NAME, "mail"),
        in_queue(3, Quick::NAME, "default"),
        in_queue(4, Quick::NAME, "mail"),
    ];
    let ran = run_loop_holding(
        &state,
        config()
            .concurrency(1)
            .hold_limit(Duration::from_secs(60))
            .poll_interval(Duration::from_secs(60)),
        held,
        Duration::from_secs(30),
        |beside| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            beside
                .abort_requests
                .send(Request::Paused("mail".into()))
                .unwrap();
        },
    )
    .await;
    ran.ended.unwrap();
    let recorded = state.inner(|inner| inner.recorded.clone());
    let of = |id: i64| {
        recorded
            .iter()
            .find(|(job, _, _)| *job == id)
            .map(|(_, at, what)| (*at, what.trim().to_string()))
    };
    // The slot is busy with job 1 until its 5 s timeout: the mail jobs
    // held behind it go back when the pause arrives, job 3 waits its turn.
    assert_eq!(of(2), Some((Duration::from_secs(1), "Release".into())));
    assert_eq!(of(4), Some((Duration::from_secs(1), "Release".into())));
    assert_eq!(
        of(1),
        Some((Duration::from_secs(5), "Failed TimeoutError".into()))
    );
    assert_eq!(of(3).map(|(_, what)| what), Some("Succeeded".into()));
}
