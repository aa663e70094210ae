//! Retry strategies: whether a failed attempt is retried, and after how long.
//!
//! The wait follows Procrastinate's formula so that a task retried by a Python
//! worker and one retried by a Rust worker keep the same schedule:
//!
//! ```text
//! wait + linear_wait × attempts + exponential_wait ^ (attempts + 1)   seconds
//! ```
//!
//! where `attempts` is the number of attempts made before the one that just
//! failed (0 after the first run). dawdle adds an optional cap, jitter (to
//! spread a thundering herd of retries after an outage) and a filter on the
//! error kind.

use std::time::Duration;

/// Longest wait ever returned, whatever the formula says (about a year): an
/// exponential wait overflows quickly, and a schedule further out is a bug.
const LONGEST_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// How a task's failed attempts are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryStrategy {
    /// How many times a job is retried after its first run; `None` retries
    /// forever. Procrastinate's `max_attempts`: a job runs at most
    /// `max_retries + 1` times.
    pub max_retries: Option<u32>,
    /// Constant part of the wait.
    pub wait: Duration,
    /// Added once per previous attempt.
    pub linear_wait: Duration,
    /// Base, in seconds, raised to the power `attempts + 1`; 0 disables it.
    pub exponential_wait: f64,
    /// Upper bound of the wait (applied before jitter is added, and again after).
    pub max_wait: Option<Duration>,
    /// Spread as a fraction of the wait: 0.2 picks uniformly within ±20 %.
    pub jitter: f64,
    /// Retry only errors of these kinds (`ConnectionError`, …); `None` retries any.
    pub retry_on: Option<Vec<String>>,
}

impl Default for RetryStrategy {
    fn default() -> Self {
        Self::never()
    }
}

impl RetryStrategy {
    /// Never retry: the first failure fails the job.
    pub fn never() -> Self {
        Self {
            max_retries: Some(0),
            wait: Duration::ZERO,
            linear_wait: Duration::ZERO,
            exponential_wait: 0.0,
            max_wait: None,
            jitter: 0.0,
            retry_on: None,
        }
    }

    /// Retry up to `max_retries` times with the same wait each time.
    pub fn constant(max_retries: u32, wait: Duration) -> Self {
        Self {
            max_retries: Some(max_retries),
            wait,
            ..Self::never()
        }
    }

    /// Retry up to `max_retries` times, waiting `step × attempts`.
    pub fn linear(max_retries: u32, step: Duration) -> Self {
        Self {
            max_retries: Some(max_retries),
            linear_wait: step,
            ..Self::never()
        }
    }

    /// Retry up to `max_retries` times, waiting `base ^ (attempts + 1)` seconds:
    /// with base 2, 2 s, 4 s, 8 s, …
    pub fn exponential(max_retries: u32, base_seconds: f64) -> Self {
        Self {
            max_retries: Some(max_retries),
            exponential_wait: base_seconds,
            ..Self::never()
        }
    }

    /// Retry forever (until someone cancels the job).
    pub fn forever(mut self) -> Self {
        self.max_retries = None;
        self
    }

    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// `fraction` is clamped to 0..=1.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    pub fn retry_on<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.retry_on = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// The wait before the next attempt, or `None` to give up. `attempts` is
    /// the number of attempts made before the one that failed with an error
    /// of kind `error_kind`.
    pub fn next_wait(&self, attempts: u32, error_kind: &str) -> Option<Duration> {
        self.next_wait_with(attempts, error_kind, rand::random::<f64>())
    }

    /// [`next_wait`](Self::next_wait) with the random draw (in 0..1) given,
    /// so the jitter is testable.
    pub fn next_wait_with(&self, attempts: u32, error_kind: &str, draw: f64) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| attempts >= max) {
            return None;
        }
        if let Some(kinds) = &self.retry_on {
            if !kinds.iter().any(|kind| kind == error_kind) {
                return None;
            }
        }
        let cap = self.max_wait.unwrap_or(LONGEST_WAIT).min(LONGEST_WAIT);
        let base = self.formula_seconds(attempts).min(cap.as_secs_f64());
        let spread = base * self.jitter * (2.0 * draw.clamp(0.0, 1.0) - 1.0);
        let seconds = (base + spread).clamp(0.0, cap.as_secs_f64());
        Some(Duration::from_secs_f64(seconds))
    }

    /// Procrastinate's formula, in seconds, saturating instead of overflowing.
    fn formula_seconds(&self, attempts: u32) -> f64 {
        let exponential = if self.exponential_wait > 0.0 {
            self.exponential_wait.powf(f64::from(attempts) + 1.0)
        } else {
            0.0
        };
        let total = self.wait.as_secs_f64()
            + self.linear_wait.as_secs_f64() * f64::from(attempts)
            + exponential;
        if total.is_finite() {
            total
        } else {
            f64::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn never_gives_up_at_once() {
        assert_eq!(RetryStrategy::never().next_wait(0, "ConnectionError"), None);
    }

    #[test]
    fn max_retries_counts_attempts_before_the_failed_one() {
        let strategy = RetryStrategy::constant(3, secs(5));
        let waits: Vec<_> = (0..5).map(|a| strategy.next_wait(a, "X")).collect();
        assert_eq!(
            waits,
            [Some(secs(5)), Some(secs(5)), Some(secs(5)), None, None]
        );
    }

    #[test]
    fn exponential_matches_procrastinate_examples() {
        // Procrastinate documents exponential_wait=3 as 3, 9, 27, 81, 243 s.
        let strategy = RetryStrategy::exponential(10, 3.0);
        let waits: Vec<_> = (0..5)
            .map(|a| strategy.next_wait(a, "X").unwrap().as_secs())
            .collect();
        assert_eq!(waits, [3, 9, 27, 81, 243]);
    }

    #[test]
    fn linear_waits_grow_by_the_step() {
        let strategy = RetryStrategy::linear(10, secs(3));
        let waits: Vec<_> = (0..5)
            .map(|a| strategy.next_wait(a, "X").unwrap().as_secs())
            .collect();
        assert_eq!(waits, [0, 3, 6, 9, 12]);
    }

    #[test]
    fn retry_on_filters_error_kinds() {
        let strategy = RetryStrategy::constant(3, secs(1)).retry_on(["ConnectionError"]);
        assert_eq!(strategy.next_wait(0, "ConnectionError"), Some(secs(1)));
        assert_eq!(strategy.next_wait(0, "ValidationError"), None);
    }

    #[test]
    fn forever_retries_past_any_count_and_stays_bounded() {
        let strategy = RetryStrategy::exponential(0, 2.0).forever();
        assert_eq!(strategy.next_wait(10_000, "X"), Some(LONGEST_WAIT));
    }

    #[test]
    fn an_exponential_base_below_one_shrinks_the_wait_as_the_formula_says() {
        let strategy = RetryStrategy::exponential(10, 0.5);
        let waits: Vec<_> = (0..3)
            .map(|a| strategy.next_wait(a, "X").unwrap().as_secs_f64())
            .collect();
        assert_eq!(waits, [0.5, 0.25, 0.125]);
    }

    #[test]
    fn jitter_extremes_are_plus_and_minus_the_fraction() {
        let strategy = RetryStrategy::constant(1, secs(100)).with_jitter(0.2);
        assert_eq!(strategy.next_wait_with(0, "X", 0.0), Some(secs(80)));
        assert_eq!(strategy.next_wait_with(0, "X", 1.0), Some(secs(120)));
        assert_eq!(strategy.next_wait_with(0, "X", 0.5), Some(secs(100)));
    }

    fn any_strategy() -> impl Strategy<Value = RetryStrategy> {
        (
            0u64..100,
            0u64..100,
            // A base below 1 makes Procrastinate's formula shrink with each
            // attempt; the properties here are about bases of 0 (off) or ≥ 1.
            prop_oneof![Just(0.0f64), 1.0f64..10.0],
            proptest::option::of(1u64..10_000),
            0.0f64..1.0,
        )
            .prop_map(|(wait, linear, exponential, cap, jitter)| RetryStrategy {
                max_retries: None,
                wait: secs(wait),
                linear_wait: secs(linear),
                exponential_wait: exponential,
                max_wait: cap.map(secs),
                jitter,
                retry_on: None,
            })
    }

    proptest! {
        #[test]
        fn wait_equals_the_formula_without_cap_or_jitter(
            wait in 0u64..1000, linear in 0u64..1000, exponential in 0u32..20, attempts in 0u32..10,
        ) {
            let strategy = RetryStrategy {
                max_retries: None,
                wait: secs(wait),
                linear_wait: secs(linear),
                exponential_wait: f64::from(exponential),
                max_wait: None,
                jitter: 0.0,
                retry_on: None,
            };
            let expected = wait + linear * u64::from(attempts)
                + if exponential == 0 { 0 } else { u64::from(exponential).pow(attempts + 1) };
            let expected = Duration::from_secs(expected).min(LONGEST_WAIT);
            let got = strategy.next_wait(attempts, "X").unwrap();
            prop_assert!(got.abs_diff(expected) < Duration::from_millis(1), "{got:?} != {expected:?}");
        }

        #[test]
        fn wait_never_exceeds_the_cap(strategy in any_strategy(), attempts in 0u32..200, draw in 0.0f64..1.0) {
            let got = strategy.next_wait_with(attempts, "X", draw).unwrap();
            prop_assert!(got <= strategy.max_wait.unwrap_or(LONGEST_WAIT));
        }

        #[test]
        fn without_jitter_waits_never_shrink(mut strategy in any_strategy(), attempts in 0u32..200) {
            strategy.jitter = 0.0;
            let now = strategy.next_wait(attempts, "X").unwrap();
            let next = strategy.next_wait(attempts + 1, "X").unwrap();
            prop_assert!(next >= now);
        }

        #[test]
        fn jitter_stays_within_its_fraction(strategy in any_strategy(), attempts in 0u32..50, draw in 0.0f64..1.0) {
            let plain = RetryStrategy { jitter: 0.0, ..strategy.clone() };
            let base = plain.next_wait(attempts, "X").unwrap().as_secs_f64();
            let got = strategy.next_wait_with(attempts, "X", draw).unwrap().as_secs_f64();
            prop_assert!((got - base).abs() <= base * strategy.jitter + 1e-6);
        }

        #[test]
        fn gives_up_exactly_after_max_retries(max in 0u32..50, attempts in 0u32..100) {
            let strategy = RetryStrategy::constant(max, secs(1));
            prop_assert_eq!(strategy.next_wait(attempts, "X").is_some(), attempts < max);
        }
    }
}
