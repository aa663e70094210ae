//! Batched completion: outcomes of finished attempts are buffered and written
//! with one statement per flush, error events included.
//!
//! The completer is a task of its own so that running jobs never wait on the
//! database to report: a job's outcome is handed over through a channel, and
//! whatever accumulated while the previous flush was in flight goes out in
//! the next one. A flush that fails is retried with backoff until it
//! succeeds; outcomes are never dropped while the worker runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tracing::warn;

use super::metrics;
use super::store::Recorder;
use crate::state::{Outcome, Verdict};
use crate::worker::backoff::Backoff;
use crate::worker::handle::{JobEvent, JobOutcome};

/// Most outcomes written by one statement.
const MAX_FLUSH: usize = 2000;

#[derive(Debug)]
enum Message {
    Outcome(Outcome),
    /// Answered once every outcome sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// Retries and snoozes the completer wrote, told to the claiming loop once
/// they are committed: each job, and when it comes due. A retried job keeps
/// its id, so it usually lies below the loop's claim floor; when its time
/// comes the loop lowers the floor to it, whatever its looks at the table
/// say, rather than reading the whole claim order from its head.
#[derive(Debug, Default)]
pub(crate) struct RetriesWritten {
    notify: Notify,
    /// When each job written since the loop last took them comes due, and
    /// its id.
    written: Mutex<Vec<(DateTime<Utc>, i64)>>,
}

impl RetriesWritten {
    /// These jobs, runnable again at the times given, are committed.
    pub(crate) fn written(&self, jobs: impl IntoIterator<Item = (DateTime<Utc>, i64)>) {
        // Most writes hold no retry: they take no lock and wake no one.
        let mut jobs = jobs.into_iter().peekable();
        if jobs.peek().is_none() {
            return;
        }
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(jobs);
        self.notify.notify_one();
    }

    /// Waits for a write, then takes everything written since the last
    /// call. Cancel-safe: what was written stays for the next call.
    pub(crate) async fn next(&self) -> Vec<(DateTime<Utc>, i64)> {
        self.notify.notified().await;
        std::mem::take(
            &mut *self
                .written
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// The sending side, held by the worker loop.
#[derive(Debug, Clone)]
pub(crate) struct Completer {
    sender: mpsc::UnboundedSender<Message>,
}

impl Completer {
    /// Starts the completer task, which returns how many outcomes the
    /// database refused even alone (their jobs failed instead). It ends once every `Completer` is dropped
    /// and the remaining outcomes are written, or `give_up_after` has passed
    /// since the channel closed with writes still failing. `retries_written`
    /// is told of each write that scheduled a retry or a snooze, so the
    /// worker can set its timer for it.
    pub(crate) fn spawn(
        recorder: impl Recorder,
        give_up_after: Duration,
        retries_written: Arc<RetriesWritten>,
        events: broadcast::Sender<JobEvent>,
    ) -> (Self, tokio::task::JoinHandle<u64>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            recorder,
            receiver,
            give_up_after,
            retries_written,
            events,
        ));
        (Self { sender }, task)
    }

    pub(crate) fn send(&self, outcome: Outcome) {
        // The completer only stops after every sender is gone.
        let _ = self.sender.send(Message::Outcome(outcome));
    }

    /// Waits until every outcome sent so far is in the database.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.sender.send(Message::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(
    recorder: impl Recorder,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    give_up_after: Duration,
    retries_written: Arc<RetriesWritten>,
    events: broadcast::Sender<JobEvent>,
) -> u64 {
    let mut failed_instead = 0;
    let mut batch: Vec<Outcome> = Vec::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Backoff::new();
    let mut closed_at: Option<tokio::time::Instant> = None;
    loop {
        if batch.is_empty() && acks.is_empty() {
            match receiver.recv().await {
                Some(message) => take(message, &mut batch, &mut acks),
                None => return failed_instead,
            }
        }
        while batch.len() < MAX_FLUSH {
            match receiver.try_recv() {
                Ok(message) => take(message, &mut batch, &mut acks),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(tokio::time::Instant::now);
                    break;
                }
            }
        }
        if batch.is_empty() {
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            continue;
        }
        let sent = tokio::time::Instant::now();
        match recorder.record(&batch).await {
            Ok(refused) => {
                failed_instead += refused;
                metrics::recorded(batch.len(), sent.elapsed());
                backoff.reset();
                retries_written.written(batch.iter().filter_map(|outcome| match outcome.verdict {
                    Verdict::Retry { at } | Verdict::Snooze { at } => Some((at, outcome.job_id)),
                    _ => None,
                }));
                if events.receiver_count() > 0 {
                    for outcome in &batch {
                        let _ = events.send(event(outcome));
                    }
                }
                batch.clear();
                // An ack waits for everything sent before it, which may span
                // several flushes: answer only once nothing is left buffered.
                if receiver.is_empty() {
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                }
            }
            Err(error) => {
                metrics::database_error("record");
                let wait = backoff.next_wait();
                warn!(
                    jobs = batch.len(),
                    retry_in_ms = wait.as_millis() as u64,
                    error = %error,
                    "failed to record job outcomes; retrying"
                );
                if closed_at.is_some_and(|at| at.elapsed() > give_up_after) {
                    // Which jobs will run again, for whoever reads the log.
                    let job_ids: Vec<i64> = batch
                        .iter()
                        .take(100)
                        .map(|outcome| outcome.job_id)
                        .collect();
                    warn!(
                        jobs = batch.len(),
                        ?job_ids,
                        "giving up recording job outcomes at shutdown; the jobs stay in doing, \
                         will be found as stalled and run again (job_ids lists up to 100)"
                    );
                    return failed_instead;
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn take(message: Message, batch: &mut Vec<Outcome>, acks: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Outcome(outcome) => batch.push(outcome),
        Message::Flush(ack) => acks.push(ack),
    }
}

/// The event telling subscribers that `outcome` is recorded.
fn event(outcome: &Outcome) -> JobEvent {
    let error = || {
        outcome.error.as_ref().map_or(
            (crate::task_error::ErrorKind::Generic, String::new()),
            |error| (error.error_kind(), error.message().to_string()),
        )
    };
    let outcome_kind = if outcome.delete {
        JobOutcome::Deleted
    } else {
        match outcome.verdict {
            Verdict::Succeeded => JobOutcome::Succeeded,
            Verdict::Retry { at } => {
                let (kind, message) = error();
                JobOutcome::Retrying { kind, message, at }
            }
            Verdict::Failed => {
                let (kind, message) = error();
                JobOutcome::Failed { kind, message }
            }
            Verdict::Snooze { at } => JobOutcome::Snoozed { at },
            Verdict::Cancelled => JobOutcome::Cancelled { reason: error().1 },
            Verdict::Aborted => JobOutcome::Aborted,
            Verdict::Release => JobOutcome::PutBack,
        }
    };
    JobEvent {
        job_id: outcome.job_id,
        outcome: outcome_kind,
    }
}

#[cfg(test)]
mod tests;
