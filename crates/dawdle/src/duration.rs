//! Durations as people write them: one syntax for every timeout, interval
//! and age that dawdle reads from a command line or an environment variable.
//!
//! `90s`, `10m`, `1h 30m`, `7d` and `500ms` mean the same to every flag and
//! setting, and a number alone counts in the unit the flag always used
//! (seconds, mostly: `30`, `1.5`), so that values written for the older
//! flags keep working. The units are `humantime`'s. Its parser is given one
//! term at a time (`1h`, then `30m`) and the terms are added here with
//! checked arithmetic: humantime 2.4 panics instead of failing on a few sums
//! that reach the largest `Duration` (chronotope/humantime#66), and input
//! from outside must never take a process down.

use std::time::Duration;

use crate::text::quote;

/// What a number written alone counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BareNumber {
    /// `30` is thirty seconds: the CLI's flags and the services' settings.
    Seconds,
    /// `30` is thirty days: `dawdle purge --older-than`, as the runbook's
    /// `purge-old.sh <days>` passes it.
    Days,
}

impl BareNumber {
    /// Nanoseconds in one.
    fn nanos(self) -> u128 {
        match self {
            BareNumber::Seconds => 1_000_000_000,
            BareNumber::Days => 86_400 * 1_000_000_000,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            BareNumber::Seconds => "or as a number of seconds (1.5)",
            BareNumber::Days => "or as a number of days (30)",
        }
    }
}

/// Why a text is not a duration, with a short quotation of it and how to
/// write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input} is not a duration: {problem}; write it like 90s, 10m, 1h 30m, 7d or 500ms, {}",
    .bare.hint()
)]
pub struct DurationError {
    /// The input, quoted and cut short ([`crate::text::quote`]).
    input: String,
    problem: DurationProblem,
    bare: BareNumber,
}

impl DurationError {
    /// What is wrong with the input.
    pub fn problem(&self) -> &DurationProblem {
        &self.problem
    }
}

/// What is wrong with a text that is not a duration. Whatever of the input a
/// variant holds is quoted and cut short already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationProblem {
    #[error("it is empty")]
    Empty,
    #[error("it is negative")]
    Negative,
    #[error("expected a number at {0}")]
    NumberExpected(String),
    #[error("unexpected {0}")]
    Unexpected(String),
    #[error("the number {0} has no unit (only a number alone needs none)")]
    MissingUnit(String),
    #[error("unknown unit {0} (the units are ms, s, m, h, d and w)")]
    UnknownUnit(String),
    #[error("it is longer than a duration can be, or finer than a nanosecond")]
    OutOfRange,
}

/// Reads a duration: `90s`, `10m`, `1h 30m`, `2h`, `7d`, `500ms` (terms
/// may be joined, `1h30m`, and have fractions, `1.5h`), or a number alone
/// meaning seconds (`30`, `1.5`). Negative, unbounded and unreadable values
/// are refused.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_with(text, BareNumber::Seconds)
}

/// The longest age a query looks back: a thousand years. PostgreSQL
/// cannot subtract much more from now (its timestamps begin in 4713 BC),
/// and nothing a queue keeps is older, so a longer age means the same.
pub const MAX_AGE: Duration = Duration::from_secs(1000 * 365 * 86_400 + 250 * 86_400);

/// `age` in seconds for a query's `now() - make_interval(secs => …)`, at
/// most [`MAX_AGE`]: `--older-than 99999999d` selects what is older than
/// anything, instead of failing with "timestamp out of range".
pub fn age_seconds(age: Duration) -> f64 {
    age.min(MAX_AGE).as_secs_f64()
}

/// [`parse`], with a number alone counted as `bare` says.
pub fn parse_with(text: &str, bare: BareNumber) -> Result<Duration, DurationError> {
    let refuse = |problem| DurationError {
        input: quote(text),
        problem,
        bare,
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(refuse(DurationProblem::Empty));
    }
    if text.starts_with('-') {
        return Err(refuse(DurationProblem::Negative));
    }
    if is_plain_number(text) {
        return plain_number(text, bare).ok_or_else(|| refuse(DurationProblem::OutOfRange));
    }
    let mut total = Duration::ZERO;
    for (start, term) in terms(text) {
        let part = humantime::parse_duration(term)
            .map_err(|error| refuse(problem_of(error, &text[start..])))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| refuse(DurationProblem::OutOfRange))?;
    }
    Ok(total)
}

/// A duration as [`parse`] reads it back, in whole units from days down to
/// nanoseconds: `0s`, `500ms`, `1h 30m`, `7d`.
pub fn format(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_string();
    }
    let seconds = duration.as_secs();
    let nanos = u64::from(duration.subsec_nanos());
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Digits with at most one decimal point: `30`, `1.5`, `.5`.
fn is_plain_number(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && text.bytes().any(|b| b.is_ascii_digit())
}

/// A plain number counted in `bare`'s unit, exactly (decimal, not binary,
/// fractions: `0.3` is 300 ms) and rounded down to the nanosecond; `None`
/// when it is too long for a `Duration`.
fn plain_number(text: &str, bare: BareNumber) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    // Digits past these are finer than a nanosecond of a day.
    let fraction = &fraction[..fraction.len().min(15)];
    let whole: u128 = match whole {
        "" => 0,
        digits => digits.parse().ok()?,
    };
    let (fraction, scale) = match fraction {
        "" => (0, 1),
        digits => (
            digits.parse::<u128>().ok()?,
            10u128.pow(digits.len() as u32),
        ),
    };
    let nanos = whole
        .checked_mul(bare.nanos())?
        .checked_add(fraction * bare.nanos() / scale)?;
    let seconds = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(seconds, (nanos % 1_000_000_000) as u32))
}

/// The characters humantime reads as part of a unit.
fn is_unit_char(ch: char) -> bool {
    ch.is_ascii_alphabetic() || ch == 'µ'
}

/// `text` cut before every number that follows a unit, each piece with its
/// byte offset: `1h 30m` is `1h ` and `30m`. Each piece is one number and
/// its unit to humantime, so that its sums stay within one term.
fn terms(text: &str) -> Vec<(usize, &str)> {
    let mut starts = vec![0];
    let mut after_unit = false;
    for (at, ch) in text.char_indices() {
        if ch.is_ascii_digit() {
            if after_unit {
                starts.push(at);
            }
            after_unit = false;
        } else if is_unit_char(ch) {
            after_unit = true;
        } else if !ch.is_whitespace() {
            after_unit = false;
        }
    }
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| (start, &text[start..end]))
        .collect()
}

/// humantime's error about `term` (and what follows it), told with
/// quotations of the input rather than byte offsets.
fn problem_of(error: humantime::DurationError, term: &str) -> DurationProblem {
    // The word at an offset, or the end of the input when there is none.
    let word_at = |offset: usize| {
        let word: String = term
            .get(offset..)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if word.is_empty() {
            "the end".to_string()
        } else {
            quote(&word)
        }
    };
    match error {
        humantime::DurationError::Empty => DurationProblem::Empty,
        humantime::DurationError::NumberExpected(offset) => {
            DurationProblem::NumberExpected(word_at(offset))
        }
        humantime::DurationError::InvalidCharacter(offset) => {
            match term.get(offset..).and_then(|rest| rest.chars().next()) {
                Some(ch) => DurationProblem::Unexpected(quote(&ch.to_string())),
                None => DurationProblem::Unexpected("end".to_string()),
            }
        }
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            DurationProblem::MissingUnit(value.to_string())
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            DurationProblem::UnknownUnit(quote(&unit))
        }
        humantime::DurationError::NumberOverflow => DurationProblem::OutOfRange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3_600);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, Duration)] = &[
            ("30s", 30 * SECOND),
            ("90s", 90 * SECOND),
            ("10m", 10 * MINUTE),
            ("2h", 2 * HOUR),
            ("7d", 7 * DAY),
            ("1w", 7 * DAY),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("1h 30m", 90 * MINUTE),
            ("1h30m", 90 * MINUTE),
            ("1d 2h 3m 4s", DAY + 2 * HOUR + 3 * MINUTE + 4 * SECOND),
            ("1.5h", 90 * MINUTE),
            ("0.5s", Duration::from_millis(500)),
            ("90 s", 90 * SECOND),
            ("  10m  ", 10 * MINUTE),
            // The spellings of the CLI's earlier parser.
            ("90sec", 90 * SECOND),
            ("5mins", 5 * MINUTE),
            ("2hours", 2 * HOUR),
            ("7days", 7 * DAY),
            // A number alone is seconds, as the flags that took seconds did.
            ("30", 30 * SECOND),
            ("1.5", Duration::from_millis(1_500)),
            ("0.3", Duration::from_millis(300)),
            (".5", Duration::from_millis(500)),
            ("2.", 2 * SECOND),
            ("0", Duration::ZERO),
            ("9484943.254", Duration::from_millis(9_484_943_254)),
            ("1.500000000000000000000", Duration::from_millis(1_500)),
            ("0.0000000001", Duration::ZERO),
            ("18446744073709551615.999999999", Duration::MAX),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(*expected), "{text:?}");
        }
    }

    #[test]
    fn a_number_alone_counts_in_the_unit_asked_for() {
        assert_eq!(parse_with("30", BareNumber::Days), Ok(30 * DAY));
        assert_eq!(parse_with("0.5", BareNumber::Days), Ok(12 * HOUR));
        assert_eq!(
            parse_with("0.3333", BareNumber::Days),
            Ok(Duration::from_micros(28_797_120_000))
        );
        // A unit says what it means, whatever a bare number would.
        assert_eq!(parse_with("12h", BareNumber::Days), Ok(12 * HOUR));
        let error = parse_with("-1", BareNumber::Days).unwrap_err();
        assert!(error.to_string().contains("number of days"), "{error}");
    }

    #[test]
    fn refused_forms_say_why() {
        use DurationProblem::*;
        let quoted = |text: &str| quote(text);
        let many_nines = "9".repeat(500);
        let cases: Vec<(&str, DurationProblem)> = vec![
            ("", Empty),
            ("   ", Empty),
            ("-5", Negative),
            ("-5s", Negative),
            (" -1h", Negative),
            ("NaN", NumberExpected(quoted("NaN"))),
            ("inf", NumberExpected(quoted("inf"))),
            ("-inf", Negative),
            ("abc", NumberExpected(quoted("abc"))),
            ("s", NumberExpected(quoted("s"))),
            ("+5s", NumberExpected(quoted("+5s"))),
            ("5 m s", NumberExpected(quoted("s"))),
            ("1h -30m", NumberExpected(quoted("-30m"))),
            ("1.5.5s", Unexpected(quoted("."))),
            ("5s!", Unexpected(quoted("!"))),
            ("1h 30", MissingUnit("30".to_string())),
            ("5x", UnknownUnit(quoted("x"))),
            ("10 parsecs", UnknownUnit(quoted("parsecs"))),
            ("1e3", UnknownUnit(quoted("e"))),
            ("1e400", UnknownUnit(quoted("e"))),
            ("99999999999999999999999s", OutOfRange),
            ("18446744073709551615s 1s", OutOfRange),
            (&many_nines, OutOfRange),
            ("18446744073709551616", OutOfRange),
            ("1.3333h", OutOfRange),
            ("0.5ns", OutOfRange),
        ];
        for (text, expected) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.problem(), &expected, "{text:?}: {error}");
        }
    }

    /// Regression: humantime 2.4 panics on `…s 500ms 500ms` when the
    /// seconds reach `u64::MAX` and the nanoseconds exactly a second.
    #[test]
    fn a_sum_that_reaches_the_largest_duration_is_refused_not_a_panic() {
        for text in [
            "18446744073709551615s 500ms 500ms",
            "18446744073709551615s 1000000000ns",
            "18446744073709551615s 999999999ns 1ns",
        ] {
            assert_eq!(
                parse(text).unwrap_err().problem(),
                &DurationProblem::OutOfRange
            );
        }
        assert_eq!(
            parse("18446744073709551615s 999999999ns"),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn the_message_quotes_a_bounded_excerpt_and_says_how_to_write_it() {
        let huge = format!("5{}", "x".repeat(10_000));
        let message = parse(&huge).unwrap_err().to_string();
        assert!(message.chars().count() < 300, "{message}");
        assert!(!message.contains(&"x".repeat(61)), "{message}");
        assert!(message.contains("write it like 90s"), "{message}");
        assert!(message.contains("number of seconds"), "{message}");
        let message = parse("1\u{1b}[2Jm").unwrap_err().to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
        assert_eq!(
            parse("ten minutes").unwrap_err().to_string(),
            "\"ten minutes\" is not a duration: expected a number at \"ten\"; write it like \
             90s, 10m, 1h 30m, 7d or 500ms, or as a number of seconds (1.5)"
        );
    }

    #[test]
    fn formats_read_back_in_whole_units() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(90 * MINUTE), "1h 30m");
        assert_eq!(format(7 * DAY), "7d");
        assert_eq!(format(Duration::new(61, 5)), "1m 1s 5ns");
    }

    /// What a person might type: numbers, units, spaces and stray signs.
    fn durationish() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[0-9 .a-zµ+-]{0,30}").unwrap()
    }

    proptest! {
        #[test]
        fn no_input_panics(text in any::<String>()) {
            let _ = parse(&text);
            let _ = parse_with(&text, BareNumber::Days);
        }

        #[test]
        fn no_durationish_input_panics(text in durationish()) {
            if let Err(error) = parse(&text) {
                let message = error.to_string();
                prop_assert!(message.contains("write it like"));
            }
        }

        #[test]
        fn huge_numbers_and_sums_are_refused_not_a_panic(
            terms in proptest::collection::vec((any::<u64>(), 0u32..1_000_000_000, "(ns|us|ms|s|m|h|d|w|y)"), 1..6)
        ) {
            let text: Vec<String> = terms
                .iter()
                .map(|(whole, fraction, unit)| format!("{whole}.{fraction:09}{unit}"))
                .collect();
            let _ = parse(&text.join(" "));
        }

        #[test]
        fn a_formatted_duration_reads_back(seconds in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let duration = Duration::new(seconds, nanos);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn terms_mean_what_humantime_says_they_mean(
            terms in proptest::collection::vec((0u64..100_000, "(ms|s|m|h|d|w)"), 1..5),
            joined in any::<bool>(),
        ) {
            let words: Vec<String> = terms.iter().map(|(n, unit)| format!("{n}{unit}")).collect();
            let text = words.join(if joined { "" } else { " " });
            let expected = humantime::parse_duration(&text).unwrap();
            prop_assert_eq!(parse(&text), Ok(expected));
        }

        #[test]
        fn a_number_alone_is_seconds_to_the_nanosecond(seconds in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let text = format!("{seconds}.{nanos:09}");
            prop_assert_eq!(parse(&text), Ok(Duration::new(seconds, nanos)));
        }
    }
}
