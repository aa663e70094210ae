//! The claiming loop: one per worker. It asks for its free slots' worth of
//! jobs plus a few held ready (see `pace`), starts them as slots free up,
//! puts back held jobs that waited too long, and decides when to claim
//! again: a full claim, a notification, the earliest scheduled job coming
//! due, the poll interval. Claims run while the loop goes on.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::completion::{Completer, RetriesWritten};
use super::config::{WorkerError, WorkerReport};
use super::executor::Running;
use super::floor::{ClaimFloor, Floor};
use super::held::{claim_size, Held, HeldJobs};
use super::metrics::{self, Labeller};
use super::notifier::Request;
use super::pace::Pace;
use super::store::Store;
use super::Worker;
use crate::job::Job;
use crate::state::{PutBack, Selection, Verdict};
use crate::task_error::TaskError;
use crate::text::printable;

/// The claiming loop's state.
pub(super) struct Loop<'w, S> {
    pub(super) worker: &'w Worker,
    /// The jobs database: the worker's pool, or a fake in unit tests.
    pub(super) store: S,
    pub(super) worker_id: Arc<AtomicI64>,
    pub(super) completer: Completer,
    pub(super) running: JoinSet<Result<(), TaskError>>,
    pub(super) by_task: HashMap<tokio::task::Id, Running>,
    /// The queues claims take from, shared with each claim in flight.
    pub(super) queues: Arc<Option<Vec<String>>>,
    /// Claimed jobs waiting for a free slot, in claim order.
    pub(super) held: HeldJobs,
    pub(super) pace: Pace,
    pub(super) report: WorkerReport,
    /// Bounded label values for the job metrics.
    pub(super) labels: Labeller,
    /// Set when a claim failed for lack of a connection: the claim may have
    /// committed without us seeing its rows, leaving jobs in `doing` that
    /// nobody runs. The next claim first puts those back.
    pub(super) reconcile: bool,
    /// Where the next claim starts reading.
    pub(super) floor: ClaimFloor,
}

/// What a claim statement returns, with what it asked for.
struct Claimed {
    jobs: Result<Vec<Job>, sqlx::Error>,
    limit: usize,
    worker_id: i64,
    round_trip: Duration,
    /// It read the claim order from its head (no floor).
    from_head: bool,
}

type ClaimFuture = std::pin::Pin<Box<dyn Future<Output = Claimed> + Send>>;

/// Claims up to `limit` jobs for `worker_id` with one statement.
fn claim_jobs<S: Store>(
    store: S,
    queues: Arc<Option<Vec<String>>>,
    worker_id: i64,
    limit: usize,
    floor: Option<Floor>,
) -> ClaimFuture {
    Box::pin(async move {
        let sent = Instant::now();
        let jobs = store
            .claim(queues.as_deref(), worker_id, limit, floor)
            .await;
        Claimed {
            jobs,
            limit,
            worker_id,
            round_trip: sent.elapsed(),
            from_head: floor.is_none(),
        }
    })
}

/// What one look at the table for jobs scheduled for later found: the
/// database's time when it read the table, and when the earliest job
/// scheduled after the look before it becomes runnable (at once if it
/// already is; `None`: there is none).
struct Looked {
    now: DateTime<Utc>,
    due: Option<tokio::time::Instant>,
}

/// One look, or the database's error.
type LookFuture = std::pin::Pin<Box<dyn Future<Output = Result<Looked, sqlx::Error>> + Send>>;

/// Looks up when the earliest job of `queues` scheduled after `since` (the
/// time the previous look read the table) becomes runnable. A job that came
/// due since then is found even if no look saw it coming (it was written
/// after that look, or looks failed meanwhile): it may lie below the floor.
fn look_ahead<S: Store>(
    store: S,
    queues: Arc<Option<Vec<String>>>,
    since: Option<DateTime<Utc>>,
) -> LookFuture {
    Box::pin(async move {
        let scheduled = store.next_scheduled(queues.as_deref(), since).await?;
        // Counted from the answer, so the timer fires a little late, never
        // early.
        Ok(Looked {
            now: scheduled.now,
            due: scheduled
                .wait
                .and_then(|wait| tokio::time::Instant::now().checked_add(wait)),
        })
    })
}

/// The looks for jobs scheduled for later.
#[derive(Default)]
struct Looks {
    /// The look running beside the loop (no claim waits for it).
    in_flight: Option<LookFuture>,
    /// Another is wanted once it answers: something may have been
    /// scheduled after it read the table.
    again: bool,
    /// When the last look that answered read the table: the next looks for
    /// what was scheduled after it.
    since: Option<DateTime<Utc>>,
    /// One started since the last poll.
    since_poll: bool,
}

/// Most retries and snoozes of its own a worker times one by one; past
/// that, one comes due with a claim from the head of the claim order.
const MAX_OWN_RETRIES: usize = 10_000;

/// The earlier of two times, either of which may be unknown.
fn earliest(
    a: Option<tokio::time::Instant>,
    b: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When `at`, a time on the wall clock, comes on the loop's clock (now if
/// it has passed).
fn instant_at(at: DateTime<Utc>) -> tokio::time::Instant {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    let now = tokio::time::Instant::now();
    // Past what the clock can hold: as good as never.
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl<S: Store> Loop<'_, S> {
    pub(super) async fn main_loop<F: Future<Output = ()>>(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut F>,
        wake: &Notify,
        retries_written: &RetriesWritten,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Result<(), WorkerError> {
        let config = &self.worker.config;
        // Since when claims have failed without a success in between.
        let mut failing_since: Option<tokio::time::Instant> = None;
        // The loop claims at once on its own; the first poll is one
        // interval later.
        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + config.poll_interval,
            config.poll_interval,
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut claim_due = true;
        let mut in_flight: Option<ClaimFuture> = None;
        // After a failed claim, no other before this.
        let mut retry_at: Option<tokio::time::Instant> = None;
        // When the earliest job scheduled for later that a look found (or
        // an own retry past MAX_OWN_RETRIES) becomes runnable: the claim
        // then reads from the head, as the job may lie anywhere below the
        // floor.
        let mut next_scheduled: Option<tokio::time::Instant> = None;
        // This worker's retries and snoozes waiting to come due: when, and
        // the smallest job id due then. Each lowers the floor to its job.
        let mut own_retries: BTreeMap<tokio::time::Instant, i64> = BTreeMap::new();
        let mut looks = Looks::default();
        let mut backoff = Backoff::new();
        loop {
            self.start_held();
            self.labels.occupancy(self.held.len(), self.running.len());
            if config.one_shot {
                if let Some(since) = failing_since {
                    if since.elapsed() >= config.stalled_after {
                        error!(
                            failing_s = since.elapsed().as_secs_f64(),
                            "one-shot worker: the jobs database keeps failing; giving up"
                        );
                        return Err(WorkerError::Unreachable {
                            waited: since.elapsed(),
                        });
                    }
                }
            }
            if in_flight.is_none() && claim_due && retry_at.is_none() {
                if let Some(limit) = self.claim_size() {
                    let checked = if self.reconcile {
                        self.put_back_orphans().await
                    } else {
                        Ok(())
                    };
                    if let Err(why) = checked {
                        warn!(error = %why, "failed to check for jobs claimed while the connection was lost; retrying");
                        failing_since.get_or_insert_with(tokio::time::Instant::now);
                        retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                        continue;
                    }
                    in_flight = Some(self.claim(limit));
                    // What asks for a claim from now on (a notification, the
                    // poll) asks for one after this: the claim in flight may
                    // have read the table before what it announces committed.
                    claim_due = false;
                }
            }
            let hold_expires = self
                .held
                .expires_at(config.hold_limit)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => {
                    // A claim in flight may commit: keep its jobs, to be put
                    // back with the others held. If the database does not
                    // answer in time, jobs it claimed are found as stalled
                    // once this worker is gone.
                    if let Some(claim) = in_flight.take() {
                        let answered = tokio::time::timeout(config.shutdown_timeout, claim).await;
                        if let Ok(Claimed { jobs: Ok(jobs), .. }) = answered {
                            self.hold(jobs);
                        }
                    }
                    return Ok(());
                }
                claimed = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    match self.claimed(claimed).await {
                        Ok((count, limit)) => {
                            backoff.reset();
                            failing_since = None;
                            // A full claim suggests there is more.
                            claim_due |= count == limit;
                            if count == 0 && config.one_shot && self.idle() {
                                // Outcomes not yet written may be retries
                                // runnable now: write them, then look once more.
                                self.completer.flush().await;
                                self.floor.want_full_pass();
                                let again = self.claim(config.concurrency).await;
                                match self.claimed(again).await {
                                    Ok((0, _)) => return Ok(()),
                                    Ok((count, limit)) => claim_due |= count == limit,
                                    Err(_) => {
                                        failing_since.get_or_insert_with(tokio::time::Instant::now);
                                        retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                                    }
                                }
                            } else if !claim_due {
                                self.look_ahead(&mut looks);
                            }
                        }
                        Err(_) => {
                            failing_since.get_or_insert_with(tokio::time::Instant::now);
                            retry_at = Some(tokio::time::Instant::now() + backoff.next_wait());
                        }
                    }
                }
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.finished(joined);
                    while let Some(joined) = self.running.try_join_next_with_id() {
                        self.finished(joined);
                    }
                    // Idle in one-shot mode: find out now whether we are done.
                    if config.one_shot && self.idle() {
                        claim_due = true;
                    }
                }
                Some(request) = requests.recv() => match request {
                    Request::Abort(job_id) => self.request_abort(job_id),
                    Request::Paused(queue) => self.release_paused(&queue),
                },
                _ = wake.notified() => claim_due = true,
                _ = poll.tick() => {
                    // Without notifications nothing lowers the floor: each
                    // poll reads from the head of the claim order.
                    if !self.worker.listens() {
                        self.floor.want_full_pass();
                    }
                    claim_due = true;
                    // At least one look per poll: under a steady stream of
                    // notifications no claim comes back with none due,
                    // and only a look finds a job below the floor that
                    // someone brought forward.
                    if !looks.since_poll {
                        self.look_ahead(&mut looks);
                    }
                    looks.since_poll = false;
                }
                // This worker's retries and snoozes are committed: each
                // comes due at its time, below the floor.
                written = retries_written.next() => {
                    for (at, job_id) in written {
                        let at = instant_at(at);
                        if own_retries.len() < MAX_OWN_RETRIES || own_retries.contains_key(&at) {
                            own_retries
                                .entry(at)
                                .and_modify(|id| *id = (*id).min(job_id))
                                .or_insert(job_id);
                        } else {
                            next_scheduled = earliest(next_scheduled, Some(at));
                        }
                    }
                }
                // A look answered: the timer fires for what it found, or
                // earlier for what was known before. A failed look leaves
                // `looks.since` as it was, so the next one (at the latest
                // the next poll's) still finds what came due meanwhile.
                looked = async { looks.in_flight.as_mut().expect("guarded").await }, if looks.in_flight.is_some() => {
                    looks.in_flight = None;
                    match looked {
                        Ok(looked) => {
                            looks.since = Some(looked.now);
                            next_scheduled = earliest(next_scheduled, looked.due);
                        }
                        Err(error) => {
                            metrics::database_error("look_ahead");
                            warn!(
                                error = %error,
                                "failed to look for jobs scheduled for later; looking again after the next claim"
                            );
                        }
                    }
                    if std::mem::take(&mut looks.again) {
                        self.look_ahead(&mut looks);
                    }
                }
                _ = sleep_until_some(earliest(next_scheduled, own_retries.keys().next().copied())),
                    if next_scheduled.is_some() || !own_retries.is_empty() => {
                    let now = tokio::time::Instant::now();
                    if next_scheduled.is_some_and(|at| at <= now) {
                        next_scheduled = None;
                        self.floor.want_full_pass();
                    }
                    // Own retries that came due: the floor goes down to
                    // them, the claim reads on from there.
                    while let Some(entry) = own_retries.first_entry() {
                        if *entry.key() > now {
                            break;
                        }
                        self.floor.lower_to(entry.remove());
                    }
                    claim_due = true;
                }
                _ = sleep_until_some(retry_at), if retry_at.is_some() => {
                    retry_at = None;
                    self.floor.want_full_pass();
                    claim_due = true;
                }
                _ = sleep_until_some(hold_expires), if hold_expires.is_some() => {
                    self.release_expired();
                }
            }
        }
    }

    /// Nothing running and nothing held.
    pub(super) fn idle(&self) -> bool {
        self.running.is_empty() && self.held.is_empty()
    }

    /// How many jobs to claim now, if any (see [`claim_size`]).
    fn claim_size(&self) -> Option<usize> {
        claim_size(
            self.worker.config.concurrency,
            self.running.len(),
            self.held.len(),
            self.pace.target(),
        )
    }

    /// Starts a look for the earliest job scheduled after the last look,
    /// or asks for another once the one in flight answers.
    fn look_ahead(&self, looks: &mut Looks) {
        looks.since_poll = true;
        if looks.in_flight.is_some() {
            looks.again = true;
        } else {
            looks.in_flight = Some(look_ahead(
                self.store.clone(),
                self.queues.clone(),
                looks.since,
            ));
        }
    }

    /// Takes in what a claim returned: the jobs are held in claim order and
    /// started as slots allow. `Ok((claimed, asked for))`; the database's
    /// error, logged, when the claim failed.
    async fn claimed(&mut self, claimed: Claimed) -> Result<(usize, usize), sqlx::Error> {
        let Claimed {
            jobs,
            limit,
            worker_id,
            round_trip,
            from_head,
        } = claimed;
        let mut jobs = match jobs {
            Ok(jobs) => jobs,
            Err(error) => {
                use sqlx::error::ErrorKind;
                self.floor.want_full_pass();
                metrics::database_error("claim");
                match error.as_database_error().map(|e| e.kind()) {
                    // Another claimer took the last job of a lock between our
                    // snapshot and our update: nothing is wrong, claim again.
                    Some(ErrorKind::UniqueViolation) => return Ok((0, 0)),
                    // This worker was pruned as stalled: register anew.
                    Some(ErrorKind::ForeignKeyViolation) => {
                        warn!(
                            worker_id,
                            "the worker was pruned as stalled; registering again"
                        );
                        if let Ok(id) = self.store.register().await {
                            self.worker_id.store(id, Ordering::Relaxed);
                        }
                    }
                    Some(_) => warn!(error = %error, "failed to claim jobs; retrying"),
                    None => {
                        warn!(error = %error, "failed to claim jobs (connection); retrying");
                        self.reconcile = true;
                    }
                }
                return Err(error);
            }
        };
        self.floor.claimed(&jobs);
        self.pace.claim_answered(round_trip, Instant::now());
        metrics::claimed(jobs.len(), round_trip, from_head);
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        let count = jobs.len();
        self.hold(jobs);
        self.start_held();
        Ok((count, limit))
    }

    /// Claims up to `limit` jobs for this worker, from the floor on or
    /// from the head of the claim order (see [`ClaimFloor::for_claim`]).
    fn claim(&mut self, limit: usize) -> ClaimFuture {
        let floor = self.floor.for_claim(Instant::now());
        claim_jobs(
            self.store.clone(),
            self.queues.clone(),
            self.worker_id.load(Ordering::Relaxed),
            limit,
            floor,
        )
    }

    /// Queues claimed jobs for the next free slots, in the order given.
    pub(super) fn hold(&mut self, jobs: Vec<Job>) {
        self.held.hold(jobs, Instant::now());
    }

    /// Starts held jobs while slots are free.
    pub(super) fn start_held(&mut self) {
        while self.running.len() < self.worker.config.concurrency {
            let Some(Held { job, claimed }) = self.held.next() else {
                break;
            };
            self.pace.job_started();
            self.start(job, claimed.elapsed());
        }
    }

    /// Puts back held jobs that waited longer than the hold limit for a
    /// slot: the jobs running are slower than the pace assumed, and other
    /// workers may have room for them.
    fn release_expired(&mut self) {
        let limit = self.worker.config.hold_limit;
        let now = Instant::now();
        let expired = self.held.take_expired(now, limit);
        let released = expired.len();
        for held in expired {
            self.release(held);
        }
        if released > 0 {
            self.pace.slow_down(now);
            info!(
                jobs = released,
                hold_limit_s = limit.as_secs_f64(),
                "put back jobs held ready that found no free slot in time"
            );
        }
    }

    /// Puts back the held jobs of `queue`, just paused: no worker may start
    /// them until it is resumed.
    fn release_paused(&mut self, queue: &str) {
        let paused = self.held.take_queue(queue);
        let released = paused.len();
        for held in paused {
            self.release(held);
        }
        info!(queue = %printable(queue), put_back = released, "queue paused; its jobs wait until it is resumed");
    }

    /// Hands a held job back to the queue: not an attempt, no error.
    pub(super) fn release(&mut self, held: Held) {
        let job = &held.job;
        // Waiting again, below where the next claim would start.
        self.floor.lower_to(job.id);
        info!(job_id = job.id, task = %printable(&job.task_name), queue = %printable(&job.queue_name),
              attempt = job.attempt(),
              held_ms = held.claimed.elapsed().as_secs_f64() * 1000.0,
              "job put back unstarted");
        self.labels
            .job(&job.task_name, &job.queue_name)
            .ended(metrics::outcome(&Verdict::Release));
        self.completer.send(held.never_ran(Verdict::Release, false));
    }

    /// Puts back `doing` jobs of this worker that it neither runs, holds nor
    /// has an outcome for: claimed by a statement whose answer was lost.
    /// Fails when the outcomes still buffered cannot be written within 5 s,
    /// or the database refuses.
    async fn put_back_orphans(&mut self) -> Result<(), OrphansUnchecked> {
        // Outcomes still buffered belong to jobs that are legitimately doing.
        if tokio::time::timeout(Duration::from_secs(5), self.completer.flush())
            .await
            .is_err()
        {
            return Err(OrphansUnchecked::OutcomesUnwritten);
        }
        let ours: Vec<i64> = self
            .by_task
            .values()
            .map(|running| running.job.id)
            .chain(self.held.ids())
            .collect();
        let orphans = PutBack {
            which: Selection {
                worker_id: Some(self.worker_id.load(Ordering::Relaxed)),
                except: Some(&ours),
                ..Selection::default()
            },
            count_attempt: false,
            note: None,
        };
        let result = self.store.put_back(&orphans).await;
        match result {
            Ok(done) => {
                self.reconcile = false;
                if let Some(lowest) = done.back.iter().map(|(id, _)| *id).min() {
                    self.floor.lower_to(lowest);
                }
                if !done.back.is_empty() {
                    warn!(
                        jobs = done.back.len(),
                        "put back jobs claimed while the connection was lost"
                    );
                }
                Ok(())
            }
            Err(error) => Err(OrphansUnchecked::Database(error)),
        }
    }
}

/// Why jobs claimed by a lost statement could not be looked for yet.
#[derive(Debug)]
enum OrphansUnchecked {
    /// Buffered outcomes (of jobs legitimately `doing`) are not written yet.
    OutcomesUnwritten,
    Database(sqlx::Error),
}

impl std::fmt::Display for OrphansUnchecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OutcomesUnwritten => f.write_str("job outcomes are not being written"),
            Self::Database(error) => error.fmt(f),
        }
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
