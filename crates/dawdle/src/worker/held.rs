//! Jobs claimed ahead of the free slots, waiting to start: in claim order,
//! each with when it was claimed. It decides how many jobs a claim asks
//! for and which held jobs waited too long, from the instants it is given,
//! so its timing is tested without a clock or a database.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::job::Job;
use crate::state::{Outcome, Verdict};

/// A claimed job not started yet.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) job: Job,
    pub(super) claimed: Instant,
}

impl Held {
    /// The outcome of a held job that ends without running: not an
    /// attempt, no error.
    pub(super) fn never_ran(&self, verdict: Verdict, delete: bool) -> Outcome {
        Outcome {
            job_id: self.job.id,
            worker_id: self.job.worker_id,
            verdict,
            error: None,
            attempted: false,
            waited: self.claimed.elapsed(),
            delete,
            follow_ups: Vec::new(),
        }
    }
}

/// The held jobs, oldest claim first.
#[derive(Debug, Default)]
pub(super) struct HeldJobs {
    queue: VecDeque<Held>,
}

impl HeldJobs {
    /// Holds `jobs`, claimed at `claimed`, after those held already.
    pub(super) fn hold(&mut self, jobs: Vec<Job>, claimed: Instant) {
        self.queue
            .extend(jobs.into_iter().map(|job| Held { job, claimed }));
    }

    /// The job to start next: the one held longest.
    pub(super) fn next(&mut self) -> Option<Held> {
        self.queue.pop_front()
    }

    /// Takes job `job_id` out, if held (its abort was requested).
    pub(super) fn take(&mut self, job_id: i64) -> Option<Held> {
        let index = self.queue.iter().position(|held| held.job.id == job_id)?;
        self.queue.remove(index)
    }

    /// Takes out the jobs of `queue` (just paused), in claim order.
    pub(super) fn take_queue(&mut self, queue: &str) -> Vec<Held> {
        let (taken, kept) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|held| held.job.queue_name == queue);
        self.queue = kept;
        taken.into()
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.queue.iter().map(|held| held.job.id)
    }

    /// When the job held longest will have waited `limit`.
    pub(super) fn expires_at(&self, limit: Duration) -> Option<Instant> {
        self.queue.front().map(|held| held.claimed + limit)
    }

    /// Takes out the jobs that have waited `limit` or longer at `now`.
    pub(super) fn take_expired(&mut self, now: Instant, limit: Duration) -> Vec<Held> {
        let waited_enough = self
            .queue
            .iter()
            .take_while(|held| now.saturating_duration_since(held.claimed) >= limit)
            .count();
        self.queue.drain(..waited_enough).collect()
    }
}

/// How many jobs to claim now, if a claim is worth its round trip: when
/// slots would otherwise stay free, or when the held jobs are down to half
/// of the `target` the pace asks to hold. It asks for the free slots and
/// the target, less what is held.
pub(super) fn claim_size(
    concurrency: usize,
    running: usize,
    held: usize,
    target: usize,
) -> Option<usize> {
    let free = concurrency.saturating_sub(running);
    let wanted = (free + target).saturating_sub(held);
    let worth = free > held || held <= target / 2;
    (wanted > 0 && worth).then_some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64) -> Job {
        Job::doing_for_tests(id, "t")
    }

    fn ids(held: &HeldJobs) -> Vec<i64> {
        held.ids().collect()
    }

    #[test]
    fn a_paused_queues_jobs_are_taken_out_and_the_others_keep_their_order() {
        let mut held = HeldJobs::default();
        let in_queue = |id: i64, queue: &str| {
            let mut job = job(id);
            job.queue_name = queue.into();
            job
        };
        let now = Instant::now();
        held.hold(
            vec![
                in_queue(1, "mail"),
                in_queue(2, "default"),
                in_queue(3, "mail"),
            ],
            now,
        );
        held.hold(vec![in_queue(4, "default"), in_queue(5, "mail")], now);
        let taken: Vec<i64> = held.take_queue("mail").iter().map(|h| h.job.id).collect();
        assert_eq!(taken, [1, 3, 5]);
        assert_eq!(ids(&held), [2, 4]);
        assert!(held.take_queue("mail").is_empty());
        assert!(held.take_queue("elsewhere").is_empty());
        assert_eq!(ids(&held), [2, 4]);
    }

    #[test]
    fn an_idle_worker_claims_its_slots_and_the_target() {
        assert_eq!(claim_size(10, 0, 0, 0), Some(10));
        assert_eq!(claim_size(10, 0, 0, 6), Some(16));
    }

    #[test]
    fn a_busy_worker_claims_only_once_held_jobs_run_low() {
        // All slots busy, six held of a target of six: nothing to do.
        assert_eq!(claim_size(10, 10, 6, 6), None);
        // Four held: still more than half the target.
        assert_eq!(claim_size(10, 10, 4, 6), None);
        // Three held: refill to the target.
        assert_eq!(claim_size(10, 10, 3, 6), Some(3));
        // No target (nothing is held ahead): claim only for free slots.
        assert_eq!(claim_size(10, 10, 0, 0), None);
        assert_eq!(claim_size(10, 9, 0, 0), Some(1));
    }

    #[test]
    fn free_slots_with_more_held_than_free_wait_for_the_held_jobs() {
        // Two slots free, five held (about to start): no claim.
        assert_eq!(claim_size(10, 8, 5, 6), None);
        // Three free, two held: claim for the rest and the target.
        assert_eq!(claim_size(10, 7, 2, 6), Some(7));
    }

    #[test]
    fn more_running_than_slots_never_underflows() {
        // A stop_now or a lowered concurrency can leave more running.
        assert_eq!(claim_size(2, 5, 0, 0), None);
    }

    #[test]
    fn jobs_start_in_claim_order() {
        let t0 = Instant::now();
        let mut held = HeldJobs::default();
        held.hold(vec![job(3), job(1)], t0);
        held.hold(vec![job(2)], t0 + Duration::from_millis(5));
        assert_eq!(ids(&held), [3, 1, 2]);
        assert_eq!(held.next().map(|h| h.job.id), Some(3));
        assert_eq!(held.take(2).map(|h| h.job.id), Some(2));
        assert!(held.take(2).is_none());
        assert_eq!(ids(&held), [1]);
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn the_oldest_claim_expires_first_and_exactly_at_the_limit() {
        let limit = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut held = HeldJobs::default();
        assert_eq!(held.expires_at(limit), None);
        held.hold(vec![job(1), job(2)], t0);
        held.hold(vec![job(3)], t0 + Duration::from_millis(300));
        assert_eq!(held.expires_at(limit), Some(t0 + limit));

        let early = held.take_expired(t0 + Duration::from_millis(999), limit);
        assert!(early.is_empty());
        let due: Vec<i64> = held
            .take_expired(t0 + limit, limit)
            .iter()
            .map(|h| h.job.id)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(
            held.expires_at(limit),
            Some(t0 + Duration::from_millis(1300))
        );
        let rest = held.take_expired(t0 + Duration::from_secs(60), limit);
        assert_eq!(rest.len(), 1);
        assert!(held.is_empty());
    }

    #[test]
    fn an_instant_before_the_claim_expires_nothing_but_a_zero_limit() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut held = HeldJobs::default();
        held.hold(vec![job(1)], t0);
        let before = t0 - Duration::from_secs(1);
        assert!(held
            .take_expired(before, Duration::from_millis(1))
            .is_empty());
        assert_eq!(held.take_expired(before, Duration::ZERO).len(), 1);
        assert!(held.is_empty());
    }
}
