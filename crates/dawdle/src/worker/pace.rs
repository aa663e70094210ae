//! How many jobs a worker claims ahead of its free slots.
//!
//! A claim is a round trip and a commit. When jobs finish faster than that,
//! slots that free up while a claim is in flight sit idle until it answers,
//! and a worker that only ever claims for its free slots runs at a few jobs
//! per round trip whatever its concurrency. So the worker keeps a small
//! local buffer of claimed jobs, refilled while it runs the previous ones,
//! sized to cover one claim round trip at the rate jobs are being started:
//! `2 × rate × round trip`, capped by `WorkerConfig::prefetch`.
//!
//! The estimate is what keeps this safe for slow jobs: ten one-second jobs
//! at a time start ten per second, and ten per second times a millisecond
//! rounds to nothing, so such a worker claims exactly its free slots. Only
//! jobs that finish within a few round trips are ever held back, and only for
//! about a round trip.

use std::time::{Duration, Instant};

/// Weight of the newest sample in the moving averages: recent enough to
/// follow a change of workload within a few claims.
const SMOOTHING: f64 = 0.5;

/// Shortest span a rate is measured over; claims answered closer together
/// than this add their jobs to the next sample.
const MIN_SAMPLE: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub(crate) struct Pace {
    max: usize,
    /// Jobs started per second, smoothed.
    rate: f64,
    /// Claim round trip in seconds, smoothed.
    round_trip: f64,
    started_since: u64,
    since: Instant,
}

impl Pace {
    pub(crate) fn new(max: usize, now: Instant) -> Self {
        Self {
            max,
            rate: 0.0,
            round_trip: 0.0,
            started_since: 0,
            since: now,
        }
    }

    pub(crate) fn job_started(&mut self) {
        self.started_since += 1;
    }

    /// A claim was answered after `round_trip`.
    pub(crate) fn claim_answered(&mut self, round_trip: Duration, now: Instant) {
        self.round_trip = smooth(self.round_trip, round_trip.as_secs_f64());
        let span = now.saturating_duration_since(self.since);
        if span >= MIN_SAMPLE {
            let rate = self.started_since as f64 / span.as_secs_f64();
            self.rate = smooth(self.rate, rate);
            self.started_since = 0;
            self.since = now;
        }
    }

    /// Forget the rate: held jobs waited too long for a slot, so the jobs
    /// now running are slower than the rate says.
    pub(crate) fn slow_down(&mut self, now: Instant) {
        self.rate = 0.0;
        self.started_since = 0;
        self.since = now;
    }

    /// Jobs to hold beyond the free slots.
    pub(crate) fn target(&self) -> usize {
        let wanted = (2.0 * self.rate * self.round_trip).round();
        if wanted.is_finite() && wanted > 0.0 {
            (wanted as usize).min(self.max)
        } else {
            0
        }
    }
}

fn smooth(previous: f64, sample: f64) -> f64 {
    if previous == 0.0 {
        sample
    } else {
        previous + SMOOTHING * (sample - previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From `start`, answers `claims` claims of `round_trip` each, one
    /// every `every`, starting `per_claim` jobs between two answers.
    fn run_claims(
        pace: &mut Pace,
        start: Instant,
        claims: u32,
        per_claim: u64,
        every: Duration,
        round_trip: Duration,
    ) {
        let mut now = start;
        for _ in 0..claims {
            for _ in 0..per_claim {
                pace.job_started();
            }
            now += every;
            pace.claim_answered(round_trip, now);
        }
    }

    /// Claims back to back: each answered one round trip after the last.
    fn settle(pace: &mut Pace, start: Instant, claims: u32, per_claim: u64, round_trip: Duration) {
        run_claims(pace, start, claims, per_claim, round_trip, round_trip);
    }

    #[test]
    fn a_new_worker_holds_nothing_back() {
        assert_eq!(Pace::new(1000, Instant::now()).target(), 0);
    }

    #[test]
    fn fast_jobs_hold_about_two_round_trips_of_work() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, start);
        // 50 jobs per millisecond: 50,000 jobs/s.
        settle(&mut pace, start, 20, 50, Duration::from_millis(1));
        assert_eq!(pace.target(), 100);
    }

    #[test]
    fn the_target_never_exceeds_the_configured_maximum() {
        let start = Instant::now();
        let mut pace = Pace::new(64, start);
        settle(&mut pace, start, 20, 500, Duration::from_millis(1));
        assert_eq!(pace.target(), 64);
        let mut off = Pace::new(0, start);
        settle(&mut off, start, 20, 500, Duration::from_millis(1));
        assert_eq!(off.target(), 0);
    }

    #[test]
    fn slow_jobs_are_never_held_back() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, start);
        // Ten one-second jobs at a time: ten starts per second, claims of
        // a millisecond each second.
        let (second, millisecond) = (Duration::from_secs(1), Duration::from_millis(1));
        run_claims(&mut pace, start, 20, 10, second, millisecond);
        assert_eq!(pace.target(), 0);
    }

    #[test]
    fn the_target_falls_when_jobs_slow_down() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, start);
        settle(&mut pace, start, 20, 50, Duration::from_millis(1));
        assert!(pace.target() > 0);
        let later = start + Duration::from_secs(1);
        let half_a_second = Duration::from_millis(500);
        run_claims(
            &mut pace,
            later,
            10,
            1,
            half_a_second,
            Duration::from_millis(1),
        );
        assert_eq!(pace.target(), 0);
    }

    #[test]
    fn slowing_down_forgets_the_rate_at_once() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, start);
        settle(&mut pace, start, 20, 50, Duration::from_millis(1));
        pace.slow_down(start + Duration::from_secs(1));
        assert_eq!(pace.target(), 0);
    }
}
