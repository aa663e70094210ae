//! Where the next claim starts reading: the claim floor.
//!
//! A claimed job leaves an entry in the claim indexes that only vacuum
//! removes, and vacuum cannot while any session holds an older snapshot (an
//! idle transaction, a long report). Claims that read from the head of the
//! claim order then step over the entries of every job claimed since, a cost
//! that grows for as long as that session stays. So the loop remembers where
//! its last claim ended, (priority, id) of the last job in claim order, and
//! the next claim leaves out the jobs of that priority below that id
//! (`dawdle_claim_jobs_v2`): every one of them was claimed or passed over.
//!
//! A job can appear below the floor afterwards: a defer that committed late
//! (ids are handed out before commit), a retry or a put-back (a job keeps its
//! id), the next job of a lock freed, a waiting job brought forward, a
//! scheduled job coming due, a queue resumed, a job whose row another
//! claimer had locked and then released. The notifications of the first
//! five name the job (a retry or a put-back only if it is runnable at once),
//! and lower the floor to it; the others
//! (and a notification that names no job) ask for a claim without a floor,
//! a full pass. A job coming due is this worker's retry or snooze (the
//! completer says which and when: the floor goes down to it) or one a look
//! at the table found (scheduled since the previous look, due or not: a
//! full pass). A full pass also runs at least every
//! [`FULL_PASS_EVERY`] for what nothing announces (a lost notification, a
//! job whose schedule fell due before its commit, a worker that does not
//! LISTEN: each of its polls is a full pass).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::job::Job;

/// The longest a worker goes without a claim from the head of the claim
/// order, whatever its notifications say.
pub(crate) const FULL_PASS_EVERY: Duration = Duration::from_secs(30);

/// Where a claim starts: the jobs of `priority` with an id below `id` are
/// left out. Jobs of other priorities are all read, in claim order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Floor {
    pub(crate) priority: i32,
    pub(crate) id: i64,
}

impl Floor {
    /// Whether `self` comes later than `other` in claim order (priority
    /// descending, then id ascending).
    fn after(self, other: Floor) -> bool {
        self.priority < other.priority || (self.priority == other.priority && self.id > other.id)
    }
}

/// The smallest job id the notifications named since the last claim was
/// sent; shared by the notifier, which writes it, and the claiming loop.
#[derive(Debug, Clone)]
pub(crate) struct Announced(Arc<AtomicI64>);

/// No notification since the last claim.
const NOTHING: i64 = i64::MAX;
/// A notification that named no job (or could not be read): a full pass.
const UNKNOWN: i64 = i64::MIN;

impl Default for Announced {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(NOTHING)))
    }
}

impl Announced {
    /// A notification that woke the loop, naming `job_id` if it did.
    pub(crate) fn job(&self, job_id: Option<i64>) {
        self.0
            .fetch_min(job_id.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// What was announced, starting afresh: a notification that arrives
    /// from here on is for the next claim.
    fn take(&self) -> i64 {
        self.0.swap(NOTHING, Ordering::Relaxed)
    }
}

/// The claiming loop's floor and when it last claimed without one.
#[derive(Debug)]
pub(crate) struct ClaimFloor {
    floor: Option<Floor>,
    last_full_pass: Option<Instant>,
    full_pass_wanted: bool,
    announced: Announced,
    /// The smallest job id the loop found waiting again since the last
    /// claim was sent: applied when the next one is, so that the answer of
    /// a claim in flight (which moves the floor on) cannot undo it.
    lowered: Option<i64>,
}

impl ClaimFloor {
    pub(crate) fn new(announced: Announced) -> Self {
        Self {
            floor: None,
            last_full_pass: None,
            full_pass_wanted: false,
            announced,
            lowered: None,
        }
    }

    /// The floor for the claim about to be sent, `None` for a full pass.
    /// Takes in what was announced since the last claim was sent: the claim
    /// sent now reads the table after those jobs committed.
    pub(crate) fn for_claim(&mut self, now: Instant) -> Option<Floor> {
        match self.announced.take() {
            NOTHING => {}
            UNKNOWN => self.full_pass_wanted = true,
            id => self.lower_to(id),
        }
        if let (Some(floor), Some(id)) = (&mut self.floor, self.lowered.take()) {
            floor.id = floor.id.min(id);
        }
        let due = self
            .last_full_pass
            .is_none_or(|at| now.saturating_duration_since(at) >= FULL_PASS_EVERY);
        if self.floor.is_none() || self.full_pass_wanted || due {
            self.full_pass_wanted = false;
            self.last_full_pass = Some(now);
            return None;
        }
        self.floor
    }

    /// Takes in the jobs a claim returned: the floor moves to just after
    /// the last of them in claim order, unless it already lies beyond.
    pub(crate) fn claimed(&mut self, jobs: &[Job]) {
        let Some(last) = jobs
            .iter()
            .min_by(|a, b| a.priority.cmp(&b.priority).then(b.id.cmp(&a.id)))
        else {
            return;
        };
        let after_last = Floor {
            priority: last.priority,
            id: last.id.saturating_add(1),
        };
        match self.floor {
            Some(floor) if floor.after(after_last) => {}
            _ => self.floor = Some(after_last),
        }
    }

    /// Job `id` may be waiting again (put back, announced, a retry come
    /// due): the next claim sent reads from it on.
    pub(crate) fn lower_to(&mut self, id: i64) {
        self.lowered = Some(self.lowered.map_or(id, |lowered| lowered.min(id)));
    }

    /// The next claim reads from the head of the claim order.
    pub(crate) fn want_full_pass(&mut self) {
        self.full_pass_wanted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, priority: i32) -> Job {
        let mut job = Job::doing_for_tests(id, "t");
        job.priority = priority;
        job
    }

    fn floor(priority: i32, id: i64) -> Option<Floor> {
        Some(Floor { priority, id })
    }

    #[test]
    fn the_first_claim_and_one_every_interval_are_full_passes() {
        let start = Instant::now();
        let mut claims = ClaimFloor::new(Announced::default());
        assert_eq!(claims.for_claim(start), None, "no floor yet");
        claims.claimed(&[job(5, 0), job(9, 0), job(7, 0)]);
        assert_eq!(claims.for_claim(start), floor(0, 10));
        let later = start + FULL_PASS_EVERY;
        assert_eq!(claims.for_claim(later), None, "the interval passed");
        assert_eq!(claims.for_claim(later), floor(0, 10));
    }

    #[test]
    fn the_floor_follows_the_last_job_in_claim_order_and_never_moves_back() {
        let now = Instant::now();
        let mut claims = ClaimFloor::new(Announced::default());
        claims.for_claim(now);
        // Priority first: the last job in claim order has the lowest.
        claims.claimed(&[job(3, 5), job(8, 1), job(4, 1)]);
        assert_eq!(claims.for_claim(now), floor(1, 9));
        // A job of a higher priority comes before the floor: it stays.
        claims.claimed(&[job(20, 5)]);
        assert_eq!(claims.for_claim(now), floor(1, 9));
        claims.claimed(&[]);
        assert_eq!(claims.for_claim(now), floor(1, 9));
        claims.claimed(&[job(30, 0)]);
        assert_eq!(claims.for_claim(now), floor(0, 31));
    }

    #[test]
    fn announced_jobs_lower_the_floor_and_unnamed_ones_ask_for_a_full_pass() {
        let now = Instant::now();
        let announced = Announced::default();
        let mut claims = ClaimFloor::new(announced.clone());
        claims.for_claim(now);
        claims.claimed(&[job(100, 0)]);
        // A job above the floor changes nothing; one below lowers it.
        announced.job(Some(150));
        assert_eq!(claims.for_claim(now), floor(0, 101));
        announced.job(Some(60));
        announced.job(Some(80));
        assert_eq!(claims.for_claim(now), floor(0, 60));
        // Taken once: the next claim has nothing new.
        assert_eq!(claims.for_claim(now), floor(0, 60));
        announced.job(None);
        assert_eq!(claims.for_claim(now), None);
        assert_eq!(claims.for_claim(now), floor(0, 60));
        claims.lower_to(10);
        assert_eq!(claims.for_claim(now), floor(0, 10));
        claims.want_full_pass();
        assert_eq!(claims.for_claim(now), None);
    }

    #[test]
    fn a_floor_lowered_while_a_claim_is_in_flight_stays_lowered_after_its_answer() {
        let now = Instant::now();
        let mut claims = ClaimFloor::new(Announced::default());
        claims.for_claim(now);
        claims.claimed(&[job(100, 0)]);
        assert_eq!(claims.for_claim(now), floor(0, 101));
        // Job 50 comes due while that claim is in flight; its answer then
        // moves the floor on past job 120.
        claims.lower_to(50);
        claims.lower_to(70);
        claims.claimed(&[job(120, 0)]);
        assert_eq!(claims.for_claim(now), floor(0, 50));
        claims.claimed(&[job(50, 0)]);
        assert_eq!(claims.for_claim(now), floor(0, 51));
    }
}
