//! Cron schedules for periodic tasks, in the format Procrastinate's periodic
//! tasks use (Python's croniter): five fields (minute, hour, day of month,
//! month, day of week), an optional sixth for seconds, written last
//! (`*/10 * * * * 30` is "every ten minutes, at second 30"), and an optional
//! seventh for the year (1970-2099). Times are evaluated in a time zone, so
//! "every day at 09:00 Europe/Paris" follows daylight saving time.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n`, `a/n` and `a-b/n`,
//! lists `a,b,c`, and names for months (`jan`) and week days (`mon`; 0 and 7
//! are Sunday). The shorthands are `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly`. Day of month also takes
//! `L` (the last day), `a-L`, and `15W` (the weekday nearest the 15th, alone
//! in its field); day of week takes `fri#2` (the second Friday) and `L5`
//! (the last Friday), and `?` stands for `*` in both. When both day of month
//! and day of week are restricted, a day matching either runs.
//!
//! What croniter accepts beyond the classic format is kept where it means
//! something: a range whose ends are equal (`5-5`) is the whole cycle, and a
//! range that runs backwards (`fri-mon`, `50-10`) wraps around.
//!
//! Refused, with an error saying why, although croniter accepts them: a
//! wrapped range with a step (`50-10/7`, where croniter's results are not a
//! rule one can state), `#` or `L` week days beside a restricted day of month
//! and `W` beside a restricted day of week (croniter then ignores the other
//! field), `29W` to `31W` (croniter moves them into short months), and `R`
//! (a random value chosen afresh by each process).
//!
//! The expression is checked and rewritten here into the `croner` crate's
//! dialect (seconds first, numbers only), and croner finds the ticks in
//! local wall-clock time; this module then places them in the time zone.
//! `dialect.rs` does the rewriting; `tests/cron_croniter.rs` holds the ticks to croniter's own, and the
//! refusals to croniter's.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

mod dialect;
#[cfg(test)]
mod tests;

use dialect::to_croner;

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    source: String,
    /// The schedule in croner's form.
    cron: Cron,
    /// For a schedule that runs any year, its croner form less the year
    /// field: each search is then bounded to the years it may look at.
    any_year: Option<String>,
    time_zone: Tz,
}

/// Two schedules are equal when they were written the same and run in the
/// same time zone.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.time_zone == other.time_zone
    }
}

impl Eq for Schedule {}

/// The schedule as written: croner's parsed form runs to thousands of lines.
impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("source", &self.source)
            .field("time_zone", &self.time_zone)
            .finish_non_exhaustive()
    }
}

/// Why a schedule did not parse. It quotes at most a short excerpt of the
/// schedule and of the part at fault: a schedule may come from a command
/// line or a configuration file, at any length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {schedule}: {problem}")]
pub struct CronError {
    /// The schedule, quoted by `text::quote`.
    schedule: String,
    problem: String,
}

impl Schedule {
    /// Parses `schedule`, evaluated in UTC.
    pub fn parse(schedule: &str) -> Result<Self, CronError> {
        Self::parse_in(schedule, Tz::UTC)
    }

    /// Parses `schedule`, evaluated in `time_zone`.
    pub fn parse_in(schedule: &str, time_zone: Tz) -> Result<Self, CronError> {
        let error = |problem: String| CronError {
            schedule: crate::text::quote(schedule),
            problem,
        };
        let translation = to_croner(schedule).map_err(error)?;
        let year = translation.year.as_deref().unwrap_or("*");
        let cron = parse_croner(&format!("{} {year}", translation.fields)).map_err(|refused| {
            error(format!(
                "not accepted by the evaluator: {}",
                crate::text::quote(&refused.to_string())
            ))
        })?;
        Ok(Self {
            source: schedule.to_string(),
            cron,
            any_year: translation.year.is_none().then_some(translation.fields),
            time_zone,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first tick strictly after `after`, or `None` if there is none
    /// within five years (a schedule such as February 30th).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.time_zone).naive_local();
        let limit = local
            .date()
            .checked_add_signed(Duration::days(5 * 366))
            .unwrap_or(NaiveDate::MAX);
        let bounded;
        let cron = match &self.any_year {
            // croner looks as far as the year 5000 for a day that never
            // comes (February 30th): a second of a debug build, on the
            // worker's thread. The years up to the limit are enough.
            Some(fields) => {
                let last_year = limit.year().min(croner::YEAR_UPPER_LIMIT);
                bounded = parse_croner(&format!("{fields} {}-{last_year}", local.year())).ok()?;
                &bounded
            }
            None => &self.cron,
        };
        // croner walks wall-clock time handed to it as UTC, where no time is
        // skipped or repeated; which instant a wall-clock tick is in the time
        // zone is decided below. Ticks fall on whole seconds.
        let mut cursor = Utc.from_utc_datetime(&local.with_nanosecond(0)?);
        loop {
            let tick = cron.find_next_occurrence(&cursor, false).ok()?;
            let wall_clock = tick.naive_utc();
            if wall_clock.date() > limit {
                return None;
            }
            // A local time skipped by a daylight saving change does not
            // exist; one repeated runs once (earliest).
            if let Some(at) = self.time_zone.from_local_datetime(&wall_clock).earliest() {
                let at = at.with_timezone(&Utc);
                if at > after {
                    return Some(at);
                }
            }
            cursor = tick;
        }
    }

    /// The latest tick at or before `at`, looking back at most a day.
    pub fn previous_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut candidate = self.next_after(at - Duration::days(1))?;
        if candidate > at {
            return None;
        }
        while let Some(next) = self.next_after(candidate) {
            if next > at {
                break;
            }
            candidate = next;
        }
        Some(candidate)
    }
}

fn parse_croner(pattern: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build()
        .parse(pattern)
}
