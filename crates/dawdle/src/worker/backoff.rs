//! Exponential backoff with jitter for reconnecting to the database.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const LONGEST: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { next: FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The wait before the next try: doubles up to 30 s, with ±20 % jitter
    /// so that many workers do not reconnect in lockstep.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(LONGEST);
        base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_limit_and_reset() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(80) && waits[0] <= Duration::from_millis(120));
        assert!(waits[11] <= LONGEST.mul_f64(1.2) && waits[11] >= LONGEST.mul_f64(0.8));
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(120));
    }
}
