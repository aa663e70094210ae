//! The completer over an in-memory fake of the state module, on a
//! paused clock: what goes into each write, and when.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;
use crate::task_error::TaskError;

/// Recording in memory: the job ids of every successful write, how many
/// writes were tried, writes made to fail, writes held until let through.
#[derive(Clone)]
struct FakeState(Arc<Inner>);

struct Inner {
    written: Mutex<Vec<Vec<i64>>>,
    tries: AtomicUsize,
    failures_left: AtomicUsize,
    gate: Semaphore,
    write_started: Notify,
}

impl FakeState {
    /// Writes go through at once and succeed.
    fn new() -> Self {
        Self::with(0, Semaphore::MAX_PERMITS)
    }

    /// The next `failures` writes fail.
    fn failing(failures: usize) -> Self {
        Self::with(failures, Semaphore::MAX_PERMITS)
    }

    /// Every write waits for [`let_through`](Self::let_through).
    fn gated() -> Self {
        Self::with(0, 0)
    }

    fn with(failures: usize, permits: usize) -> Self {
        Self(Arc::new(Inner {
            written: Mutex::new(Vec::new()),
            tries: AtomicUsize::new(0),
            failures_left: AtomicUsize::new(failures),
            gate: Semaphore::new(permits),
            write_started: Notify::new(),
        }))
    }

    fn let_through(&self, writes: usize) {
        self.0.gate.add_permits(writes);
    }

    fn written(&self) -> Vec<Vec<i64>> {
        self.0.written.lock().unwrap().clone()
    }

    fn tries(&self) -> usize {
        self.0.tries.load(Ordering::SeqCst)
    }
}

impl Recorder for FakeState {
    async fn record(&self, batch: &[Outcome]) -> Result<u64, sqlx::Error> {
        self.0.write_started.notify_one();
        self.0.gate.acquire().await.expect("never closed").forget();
        self.0.tries.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .0
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if fail {
            return Err(sqlx::Error::PoolTimedOut);
        }
        let ids = batch.iter().map(|outcome| outcome.job_id).collect();
        self.0.written.lock().unwrap().push(ids);
        Ok(0)
    }
}

struct Started {
    completer: Completer,
    task: tokio::task::JoinHandle<u64>,
    retries_written: Arc<RetriesWritten>,
    events: broadcast::Receiver<JobEvent>,
}

fn start(state: &FakeState, give_up_after: Duration) -> Started {
    let retries_written = Arc::new(RetriesWritten::default());
    let (events_sender, events) = broadcast::channel(10_000);
    let (completer, task) = Completer::spawn(
        state.clone(),
        give_up_after,
        retries_written.clone(),
        events_sender,
    );
    Started {
        completer,
        task,
        retries_written,
        events,
    }
}

fn outcome(job_id: i64, verdict: Verdict) -> Outcome {
    Outcome {
        job_id,
        worker_id: Some(1),
        verdict,
        error: None,
        attempted: true,
        waited: Duration::ZERO,
        delete: false,
        follow_ups: Vec::new(),
    }
}

fn succeeded(job_id: i64) -> Outcome {
    outcome(job_id, Verdict::Succeeded)
}

#[tokio::test(start_paused = true)]
async fn outcomes_sent_during_a_write_go_out_together_in_the_next() {
    let state = FakeState::gated();
    let started = start(&state, Duration::from_secs(5));
    started.completer.send(succeeded(1));
    state.0.write_started.notified().await;
    for id in 2..=6 {
        started.completer.send(succeeded(id));
    }
    state.let_through(2);
    started.completer.flush().await;
    assert_eq!(state.written(), [vec![1], vec![2, 3, 4, 5, 6]]);
}

#[tokio::test(start_paused = true)]
async fn one_write_holds_at_most_max_flush_outcomes() {
    let state = FakeState::gated();
    let started = start(&state, Duration::from_secs(5));
    started.completer.send(succeeded(0));
    state.0.write_started.notified().await;
    let more = 2 * MAX_FLUSH + 1;
    for id in 1..=more {
        started.completer.send(succeeded(id as i64));
    }
    state.let_through(10);
    started.completer.flush().await;
    let sizes: Vec<usize> = state.written().iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, MAX_FLUSH, MAX_FLUSH, 1]);
    let ids: Vec<i64> = state.written().concat();
    assert_eq!(
        ids,
        (0..=more as i64).collect::<Vec<_>>(),
        "in the order sent"
    );
}

#[tokio::test(start_paused = true)]
async fn flush_answers_only_once_everything_sent_before_it_is_written() {
    let state = FakeState::gated();
    let started = start(&state, Duration::from_secs(5));
    started.completer.send(succeeded(1));
    let completer = started.completer.clone();
    let flushed = tokio::spawn(async move { completer.flush().await });
    state.0.write_started.notified().await;
    // An hour of (paused) time with the write held: no answer.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!flushed.is_finished());
    state.let_through(1);
    flushed.await.unwrap();
    assert_eq!(state.written(), [vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_write_is_retried_with_growing_waits_and_loses_nothing() {
    let state = FakeState::failing(4);
    let started = start(&state, Duration::from_secs(5));
    let since = Instant::now();
    for id in 1..=3 {
        started.completer.send(succeeded(id));
    }
    started.completer.flush().await;
    assert_eq!(state.written(), [vec![1, 2, 3]]);
    assert_eq!(state.tries(), 5);
    // Waits of 100, 200, 400 and 800 ms, each within ±20 %.
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited <= Duration::from_millis(1800),
        "{waited:?}"
    );
    // Once a write succeeds, the next failure waits the shortest time again.
    state.0.failures_left.store(1, Ordering::SeqCst);
    let since = Instant::now();
    started.completer.send(succeeded(4));
    started.completer.flush().await;
    assert!(
        since.elapsed() <= Duration::from_millis(120),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(state.written(), [vec![1, 2, 3], vec![4]]);
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_writes_still_failing_are_given_up_after_the_grace_period() {
    let state = FakeState::failing(usize::MAX);
    let started = start(&state, Duration::from_secs(10));
    let since = Instant::now();
    started.completer.send(succeeded(1));
    drop(started.completer);
    started.task.await.unwrap();
    let waited = since.elapsed();
    // The last wait before giving up is at most 12.8 s × 1.2.
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(26),
        "{waited:?}"
    );
    assert!(state.tries() > 1);
    assert!(state.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_what_is_buffered_is_written_before_the_completer_ends() {
    let state = FakeState::failing(2);
    let started = start(&state, Duration::from_secs(10));
    for id in 1..=3 {
        started.completer.send(succeeded(id));
    }
    drop(started.completer);
    started.task.await.unwrap();
    assert_eq!(state.written(), [vec![1, 2, 3]]);
}

#[tokio::test(start_paused = true)]
async fn the_worker_is_told_of_written_retries_and_snoozes_only() {
    let state = FakeState::new();
    let started = start(&state, Duration::from_secs(5));
    let told = |written: Arc<RetriesWritten>| async move {
        tokio::time::timeout(Duration::from_millis(1), written.next())
            .await
            .ok()
    };
    for verdict in [Verdict::Succeeded, Verdict::Failed, Verdict::Release] {
        started.completer.send(outcome(1, verdict.clone()));
        started.completer.flush().await;
        assert_eq!(
            told(started.retries_written.clone()).await,
            None,
            "{verdict:?}"
        );
    }
    let at = Utc::now();
    for verdict in [Verdict::Retry { at }, Verdict::Snooze { at }] {
        started.completer.send(outcome(1, verdict.clone()));
        started.completer.flush().await;
        assert_eq!(
            told(started.retries_written.clone()).await,
            Some(vec![(at, 1)]),
            "{verdict:?}"
        );
    }
    // Every job of every write not yet taken, and nothing else.
    let later = at + chrono::Duration::seconds(5);
    started
        .completer
        .send(outcome(1, Verdict::Retry { at: later }));
    started.completer.send(outcome(2, Verdict::Succeeded));
    started.completer.send(outcome(3, Verdict::Snooze { at }));
    started.completer.flush().await;
    started
        .completer
        .send(outcome(4, Verdict::Retry { at: later }));
    started.completer.flush().await;
    assert_eq!(
        told(started.retries_written.clone()).await,
        Some(vec![(later, 1), (at, 3), (later, 4)])
    );
    assert_eq!(told(started.retries_written.clone()).await, None);
}

#[tokio::test(start_paused = true)]
async fn events_are_sent_once_written_in_the_order_sent() {
    let state = FakeState::gated();
    let mut started = start(&state, Duration::from_secs(5));
    let mut failed = outcome(2, Verdict::Failed);
    failed.error = Some(TaskError::validation("no such user"));
    let mut gone = succeeded(3);
    gone.delete = true;
    started.completer.send(succeeded(1));
    started.completer.send(failed);
    started.completer.send(gone);
    state.0.write_started.notified().await;
    assert!(
        started.events.try_recv().is_err(),
        "nothing before the write"
    );
    state.let_through(1);
    started.completer.flush().await;
    let mut got = Vec::new();
    while let Ok(event) = started.events.try_recv() {
        got.push(event);
    }
    assert_eq!(
        got,
        [
            JobEvent {
                job_id: 1,
                outcome: JobOutcome::Succeeded
            },
            JobEvent {
                job_id: 2,
                outcome: JobOutcome::Failed {
                    kind: crate::task_error::ErrorKind::Validation,
                    message: "no such user".into()
                }
            },
            JobEvent {
                job_id: 3,
                outcome: JobOutcome::Deleted
            },
        ]
    );
}
