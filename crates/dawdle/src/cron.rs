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
//! `tests/cron_croniter.rs` holds the ticks to croniter's own, and the
//! refusals to croniter's.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

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

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The shorthands and what they stand for.
const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Which field, for the rules only some fields have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    DayOfMonth,
    DayOfWeek,
}

/// One field of the format, in the order the fields are written.
#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    min: u32,
    /// The largest number the field takes (7 for day of week: Sunday again).
    max: u32,
    /// The last value of the field's cycle (6, Saturday, for day of week).
    cycle_end: u32,
    names: &'static [&'static str],
    /// The value of the first name.
    name_base: u32,
}

impl Field {
    const fn numbers(name: &'static str, min: u32, max: u32) -> Self {
        Self {
            name,
            kind: Kind::Plain,
            min,
            max,
            cycle_end: max,
            names: &[],
            name_base: 0,
        }
    }
}

const FIELDS: [Field; 7] = [
    Field::numbers("minute", 0, 59),
    Field::numbers("hour", 0, 23),
    Field {
        kind: Kind::DayOfMonth,
        ..Field::numbers("day of month", 1, 31)
    },
    Field {
        names: &MONTHS,
        name_base: 1,
        ..Field::numbers("month", 1, 12)
    },
    Field {
        kind: Kind::DayOfWeek,
        cycle_end: 6,
        names: &DAYS,
        ..Field::numbers("day of week", 0, 7)
    },
    Field::numbers("second", 0, 59),
    Field::numbers("year", 1970, 2099),
];

/// A field rewritten for croner.
#[derive(Debug)]
struct Translated {
    text: String,
    /// Written `*` (or `?`): the field does not restrict the day, so the
    /// other day field alone decides.
    unrestricted: bool,
    /// Day of week by `#` or `L`.
    nth_weekday: bool,
    /// Day of month by `W`.
    nearest_weekday: bool,
}

impl Translated {
    fn any() -> Self {
        Self {
            text: "*".to_string(),
            unrestricted: true,
            nth_weekday: false,
            nearest_weekday: false,
        }
    }
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

/// A schedule in croner's dialect: numbers only, every croniter spelling
/// rewritten.
#[derive(Debug)]
struct Translation {
    /// Second, minute, hour, day of month, month and day of week.
    fields: String,
    /// The year field; `None` for any year.
    year: Option<String>,
}

/// `schedule` in croner's dialect, or what is wrong with it.
fn to_croner(schedule: &str) -> Result<Translation, String> {
    let trimmed = schedule.trim();
    let schedule = if trimmed.starts_with('@') {
        SHORTHANDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
            .map(|(_, fields)| *fields)
            .ok_or_else(|| {
                format!(
                    "unknown shorthand {}; known are {}",
                    crate::text::quote(trimmed),
                    SHORTHANDS.map(|(name, _)| name).join(", ")
                )
            })?
    } else {
        trimmed
    };
    let written: Vec<&str> = schedule.split_whitespace().collect();
    if !(5..=7).contains(&written.len()) {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), an optional 6th \
             for seconds and an optional 7th for the year, got {}",
            written.len()
        ));
    }
    let mut fields = Vec::with_capacity(7);
    for (text, field) in written.iter().zip(&FIELDS) {
        fields.push(translate_field(field, text).map_err(|p| format!("{}: {p}", field.name))?);
    }
    let (day_of_month, day_of_week) = (&fields[2], &fields[4]);
    if day_of_week.nth_weekday && !day_of_month.unrestricted {
        return Err(format!(
            "day of week {} with # or L needs day of month * (croniter would ignore the day of \
             month {})",
            crate::text::quote(written[4]),
            crate::text::quote(written[2])
        ));
    }
    if day_of_month.nearest_weekday && !day_of_week.unrestricted {
        return Err(format!(
            "day of month {} with W needs day of week * (croniter would ignore the day of week \
             {})",
            crate::text::quote(written[2]),
            crate::text::quote(written[4])
        ));
    }
    let second = fields.get(5).map_or("0", |f| f.text.as_str());
    Ok(Translation {
        fields: format!(
            "{second} {} {} {} {} {}",
            fields[0].text, fields[1].text, fields[2].text, fields[3].text, fields[4].text
        ),
        year: fields
            .get(6)
            .filter(|year| !year.unrestricted)
            .map(|year| year.text.clone()),
    })
}

fn translate_field(field: &Field, text: &str) -> Result<Translated, String> {
    let lower = text.to_ascii_lowercase();
    if lower == "?" {
        return match field.kind {
            Kind::DayOfMonth | Kind::DayOfWeek => Ok(Translated::any()),
            Kind::Plain => Err("? only stands for * in day of month and day of week".to_string()),
        };
    }
    if field.kind == Kind::DayOfMonth && lower.contains('w') {
        return nearest_weekday(&lower);
    }
    let mut parts = Vec::new();
    let (mut any, mut nth, mut plain) = (false, false, false);
    for item in lower.split(',') {
        if item.is_empty() {
            return Err(format!(
                "empty entry in the list {}",
                crate::text::quote(text)
            ));
        }
        if item == "*" {
            any = true;
            continue;
        }
        if item.contains('?') {
            return Err(format!(
                "? must stand alone in its field, not in {}",
                crate::text::quote(text)
            ));
        }
        if item.starts_with('r') || item.starts_with('h') {
            return Err(format!(
                "{} is a random or hashed value, which dawdle does not support",
                crate::text::quote(item)
            ));
        }
        if field.kind == Kind::DayOfMonth && item == "l" {
            plain = true;
            parts.push("L".to_string());
            continue;
        }
        match nth_weekday(field, item)? {
            Some(part) => {
                nth = true;
                parts.push(part);
            }
            None => {
                plain = true;
                translate_item(field, item, &mut parts)?;
            }
        }
    }
    if nth && (plain || any) {
        return Err(format!(
            "{} mixes # or L week days with plain ones, which croniter refuses",
            crate::text::quote(text)
        ));
    }
    if any {
        // Every value, whatever else the list says.
        return Ok(Translated::any());
    }
    Ok(Translated {
        text: parts.join(","),
        unrestricted: false,
        nth_weekday: nth,
        nearest_weekday: false,
    })
}

/// `15W` or `W15`: the weekday nearest a day of the month, within the month.
fn nearest_weekday(lower: &str) -> Result<Translated, String> {
    let day = lower
        .strip_suffix('w')
        .or_else(|| lower.strip_prefix('w'))
        .filter(|day| !day.is_empty() && day.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!(
                "{} is not a nearest weekday (15W or W15, alone in its field)",
                crate::text::quote(lower)
            )
        })?;
    let day = number(&FIELDS[2], day)?;
    if day > 28 {
        // croniter moves them to the month's last weekday when the month is
        // shorter; croner skips those months.
        return Err(format!(
            "{day}W is not supported: only the 1st to the 28th have a nearest weekday in every \
             month"
        ));
    }
    Ok(Translated {
        text: format!("{day}W"),
        unrestricted: false,
        nth_weekday: false,
        nearest_weekday: true,
    })
}

/// `fri#2` (the second Friday of the month) and `L5` (the last Friday) in
/// day of week, as croner writes them; `None` for anything else.
fn nth_weekday(field: &Field, item: &str) -> Result<Option<String>, String> {
    if field.kind != Kind::DayOfWeek {
        return Ok(None);
    }
    if let Some((day, nth)) = item.split_once('#') {
        let day = value(field, day)?;
        let nth = match nth {
            "1" | "2" | "3" | "4" | "5" => nth,
            _ => {
                return Err(format!(
                    "{} is not an occurrence in the month (1 to 5)",
                    crate::text::quote(nth)
                ))
            }
        };
        return Ok(Some(format!("{}#{nth}", day % 7)));
    }
    if let Some(day) = item.strip_prefix('l') {
        if day.is_empty() || !day.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{} is not a last week day (L0 to L7)",
                crate::text::quote(item)
            ));
        }
        return Ok(Some(format!("{}#L", number(field, day)? % 7)));
    }
    Ok(None)
}

/// One entry of a list: `a`, `a-b`, `*/n`, `a/n` or `a-b/n`.
fn translate_item(field: &Field, item: &str, parts: &mut Vec<String>) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step_of(field, step)?)),
        None => (item, None),
    };
    let (start, end) = if range == "*" {
        (field.min, field.cycle_end)
    } else if let Some((start, end)) = range.split_once('-') {
        let start = value(field, start)?;
        let end = if field.kind == Kind::DayOfMonth && end == "l" {
            field.max
        } else {
            value(field, end)?
        };
        // 7 is Sunday, the start of the week.
        let start = if field.kind == Kind::DayOfWeek && start == 7 {
            0
        } else {
            start
        };
        if start == end {
            // croniter reads a range whose ends are equal as the whole cycle.
            (field.min, field.cycle_end)
        } else if start > end {
            if step.is_some() {
                return Err(format!(
                    "the range {} wraps around and cannot take a step",
                    crate::text::quote(range)
                ));
            }
            parts.push(format!("{start}-{}", field.cycle_end));
            parts.push(format!("{}-{end}", field.min));
            return Ok(());
        } else {
            (start, end)
        }
    } else {
        let start = value(field, range)?;
        let start = if field.kind == Kind::DayOfWeek {
            start % 7
        } else {
            start
        };
        match step {
            // `5/15` means from 5 to the end, every 15.
            Some(_) => (start, field.cycle_end),
            None => {
                parts.push(start.to_string());
                return Ok(());
            }
        }
    };
    parts.push(match step {
        Some(step) => format!("{start}-{end}/{step}"),
        None => format!("{start}-{end}"),
    });
    Ok(())
}

/// A step; one longer than the field's cycle is cut to it, as it gives the
/// same single value and keeps the number small.
fn step_of(field: &Field, text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step {} is not a number", crate::text::quote(text)));
    }
    let step: u32 = text
        .parse()
        .map_err(|_| format!("step {} is too large", crate::text::quote(text)))?;
    if step == 0 {
        return Err("a step of 0 never advances".to_string());
    }
    Ok(step.min(field.cycle_end - field.min + 1))
}

/// A number or, in month and day of week, a name.
fn value(field: &Field, text: &str) -> Result<u32, String> {
    if let Some(index) = field.names.iter().position(|name| *name == text) {
        return Ok(index as u32 + field.name_base);
    }
    number(field, text)
}

fn number(field: &Field, text: &str) -> Result<u32, String> {
    let number: u32 = text
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "{} is not a number from {} to {}",
                crate::text::quote(text),
                field.min,
                field.max
            )
        })?;
    if number < field.min || number > field.max {
        return Err(format!(
            "{number} is out of range {}-{}",
            field.min, field.max
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn every_minute_and_every_few_seconds() {
        let minutely = Schedule::parse("* * * * *").unwrap();
        assert_eq!(
            minutely.next_after(utc("2030-01-01T10:00:00Z")),
            Some(utc("2030-01-01T10:01:00Z"))
        );
        assert_eq!(
            minutely.next_after(utc("2030-01-01T10:00:30Z")),
            Some(utc("2030-01-01T10:01:00Z"))
        );
        let every_ten_seconds = Schedule::parse("* * * * * */10").unwrap();
        assert_eq!(
            every_ten_seconds.next_after(utc("2030-01-01T10:00:05Z")),
            Some(utc("2030-01-01T10:00:10Z"))
        );
        assert_eq!(
            every_ten_seconds.next_after(utc("2030-01-01T10:00:50Z")),
            Some(utc("2030-01-01T10:01:00Z"))
        );
    }

    #[test]
    fn ranges_lists_steps_and_names() {
        let weekdays_at_nine = Schedule::parse("0 9 * * mon-fri").unwrap();
        // 2030-01-05 is a Saturday: next is Monday the 7th.
        assert_eq!(
            weekdays_at_nine.next_after(utc("2030-01-04T09:00:00Z")),
            Some(utc("2030-01-07T09:00:00Z"))
        );
        let quarterly = Schedule::parse("30 6 1 jan,apr,jul,oct *").unwrap();
        assert_eq!(
            quarterly.next_after(utc("2030-02-10T00:00:00Z")),
            Some(utc("2030-04-01T06:30:00Z"))
        );
        let odd_minutes = Schedule::parse("1-59/2 * * * *").unwrap();
        assert_eq!(
            odd_minutes.next_after(utc("2030-01-01T10:01:00Z")),
            Some(utc("2030-01-01T10:03:00Z"))
        );
        let sunday = Schedule::parse("0 0 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(utc("2030-01-01T00:00:00Z")),
            Some(utc("2030-01-06T00:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday.
        let schedule = Schedule::parse("0 0 13 * fri").unwrap();
        assert_eq!(
            schedule.next_after(utc("2030-01-01T00:00:00Z")),
            Some(utc("2030-01-04T00:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(utc("2030-01-11T00:00:00Z")),
            Some(utc("2030-01-13T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones_follow_daylight_saving_time() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let nine_in_paris = Schedule::parse_in("0 9 * * *", paris).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            nine_in_paris.next_after(utc("2030-01-15T00:00:00Z")),
            Some(utc("2030-01-15T08:00:00Z"))
        );
        assert_eq!(
            nine_in_paris.next_after(utc("2030-07-15T00:00:00Z")),
            Some(utc("2030-07-15T07:00:00Z"))
        );
        // 02:30 does not exist on the spring-forward day (2030-03-31 in Paris).
        let half_past_two = Schedule::parse_in("30 2 * * *", paris).unwrap();
        assert_eq!(
            half_past_two.next_after(utc("2030-03-30T12:00:00Z")),
            Some(utc("2030-04-01T00:30:00Z"))
        );
    }

    #[test]
    fn impossible_and_malformed_schedules() {
        assert_eq!(
            Schedule::parse("0 0 30 feb *")
                .unwrap()
                .next_after(utc("2030-01-01T00:00:00Z")),
            None
        );
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * * * * *",
            "*/0 * * * *",
            "5-1/2 * * * *",
            "x * * * *",
        ] {
            let error = Schedule::parse(bad).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn a_huge_schedule_is_quoted_in_short() {
        let huge = "7".repeat(10_000);
        // 59, written with ten thousand leading zeros.
        let late = format!("{}59", "0".repeat(10_000));
        for (schedule, problem) in [
            (format!("{huge} * * * *"), "is not a number"),
            (format!("x{huge} * * * *"), "is not a number"),
            (format!("*/{huge} * * * *"), "step"),
            (format!("{late}-1/2 * * * *"), "wraps around"),
            (format!("* * * * * {huge}"), "second"),
            ([huge.as_str(); 8].join(" "), "got 8"),
        ] {
            let message = Schedule::parse(&schedule).unwrap_err().to_string();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
            assert!(message.contains(problem), "{message}");
            for run in ["7", "0"] {
                assert!(!message.contains(&run.repeat(100)), "{message}");
            }
        }
        // What is quoted is escaped, so where it ends is clear.
        let message = Schedule::parse("\"\u{1b}[2J\\ * * * *")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(r#"invalid cron schedule "\"\u{1b}[2J\\ * * * *": "#),
            "{message}"
        );
    }

    #[test]
    fn previous_tick() {
        let schedule = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            schedule.previous_at_or_before(utc("2030-01-01T10:20:00Z")),
            Some(utc("2030-01-01T10:15:00Z"))
        );
        assert_eq!(
            schedule.previous_at_or_before(utc("2030-01-01T10:15:00Z")),
            Some(utc("2030-01-01T10:15:00Z"))
        );
    }

    /// The next `count` ticks after `start`, as RFC 3339 text.
    fn ticks(schedule: &str, start: &str, count: usize) -> Vec<String> {
        let schedule = Schedule::parse(schedule).unwrap();
        let mut at = utc(start);
        let mut out = Vec::new();
        for _ in 0..count {
            at = schedule.next_after(at).unwrap();
            out.push(at.to_rfc3339());
        }
        out
    }

    #[test]
    fn croniter_spellings() {
        let start = "2030-01-01T00:00:00Z";
        for (schedule, first) in [
            ("@midnight", "2030-01-02T00:00:00+00:00"),
            ("@HOURLY", "2030-01-01T01:00:00+00:00"),
            ("@weekly", "2030-01-06T00:00:00+00:00"),
            ("@monthly", "2030-02-01T00:00:00+00:00"),
            ("@annually", "2031-01-01T00:00:00+00:00"),
            // Seconds come sixth.
            ("0 12 * * * 30", "2030-01-01T12:00:30+00:00"),
            // The year comes seventh.
            ("0 0 1 1 * 0 2033", "2033-01-01T00:00:00+00:00"),
            ("0 0 L 2 *", "2030-02-28T00:00:00+00:00"),
            ("0 0 25-L 2 *", "2030-02-25T00:00:00+00:00"),
            // 2030-06-15 is a Saturday.
            ("0 0 15W 6 *", "2030-06-14T00:00:00+00:00"),
            ("0 0 W15 6 *", "2030-06-14T00:00:00+00:00"),
            ("0 0 * * FRI#2", "2030-01-11T00:00:00+00:00"),
            ("0 0 * * L5", "2030-01-25T00:00:00+00:00"),
            ("0 0 ? * mon", "2030-01-07T00:00:00+00:00"),
            // Backwards ranges wrap around; equal ends are the whole cycle.
            ("0 0 * * sat-mon", "2030-01-05T00:00:00+00:00"),
            ("50-10 * * * *", "2030-01-01T00:01:00+00:00"),
            ("5-5 * * * *", "2030-01-01T00:01:00+00:00"),
            ("0 0 * * 7-7", "2030-01-02T00:00:00+00:00"),
            // A step longer than the cycle keeps only the start.
            ("*/90 * * * *", "2030-01-01T01:00:00+00:00"),
            ("007 * * * *", "2030-01-01T00:07:00+00:00"),
        ] {
            assert_eq!(ticks(schedule, start, 1), [first], "{schedule}");
        }
        assert_eq!(
            ticks("0 0 29 2 *", start, 2),
            ["2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00"]
        );
        // A list holding `*` leaves the day to the other day field.
        assert_eq!(
            ticks("0 0 *,5 * mon", start, 1),
            ["2030-01-07T00:00:00+00:00"]
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (schedule, problem) in [
            ("", "got 0"),
            ("@reboot", "unknown shorthand \"@reboot\""),
            ("@daily 5", "unknown shorthand"),
            (
                "mon * * * *",
                "minute: \"mon\" is not a number from 0 to 59",
            ),
            ("* jan * * *", "hour: \"jan\""),
            ("* * * * jan", "day of week: \"jan\""),
            ("1,,2 * * * *", "empty entry"),
            ("+5 * * * *", "not a number"),
            ("-1 * * * *", "not a number"),
            ("1-2-3 * * * *", "not a number"),
            ("1/2/3 * * * *", "step \"2/3\""),
            ("? * * * *", "? only stands for *"),
            ("0 0 ?,1 * *", "? must stand alone"),
            ("* * * * * 60", "second: 60 is out of range 0-59"),
            ("* * * * * 0 1969", "year: 1969 is out of range 1970-2099"),
            ("* * 0 * *", "day of month: 0 is out of range 1-31"),
            ("* * * * 8", "day of week: 8 is out of range 0-7"),
            ("0 0 * * 1#6", "not an occurrence"),
            ("0 0 * * 5L", "not a number"),
            ("0 0 * * L", "not a last week day"),
            ("0 0 * * 1,L5", "mixes"),
            ("0 0 1 * L5", "needs day of month *"),
            ("0 0 1 * fri#1", "needs day of month *"),
            ("0 0 15W * mon", "needs day of week *"),
            ("0 0 1W,15 * *", "not a nearest weekday"),
            ("0 0 LW * *", "not a nearest weekday"),
            ("0 0 31W * *", "31W is not supported"),
            ("0 0 L-2 * *", "not a number"),
            ("R * * * *", "random or hashed"),
            ("H * * * *", "random or hashed"),
            ("* 22-2/2 * * *", "wraps around and cannot take a step"),
            ("٣ * * * *", "not a number"),
        ] {
            let message = Schedule::parse(schedule).unwrap_err().to_string();
            assert!(message.contains(problem), "{schedule}: {message}");
        }
    }

    #[test]
    fn debug_shows_the_schedule_not_the_evaluator() {
        let debug = format!("{:?}", Schedule::parse("* * * * * * *").unwrap());
        assert!(debug.len() < 100, "{debug}");
        assert!(debug.contains("* * * * * * *"), "{debug}");
    }

    /// Parsing and, when parsed, finding the next tick, of text anyone may
    /// have written: neither panics, and a refusal is short.
    fn survives(schedule: &str) {
        match Schedule::parse(schedule) {
            Ok(parsed) => {
                parsed.next_after(utc("2030-01-01T00:00:00Z"));
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.len() < 600, "{} bytes: {message}", message.len());
            }
        }
    }

    #[test]
    fn hostile_schedules_are_refused_without_panicking() {
        let long = "1,".repeat(50_000) + "1";
        for schedule in [
            "\0 * * * *",
            "* * * * * * * * * * * * * * * * * * * *",
            "ß * * * *",
            "İ * * * *",
            "＊ * * * *",
            "*\u{3000}*\u{3000}*\u{3000}*\u{3000}*",
            "1\u{301}-5 * * * *",
            "0 0 * * mon#\u{1F600}",
            "0 0 \u{1F600}W * *",
            "@\u{1F600}",
            "@",
            "/ / / / /",
            "- - - - -",
            ", , , , ,",
            "# # # # #",
            "*/ * * * *",
            "*/4294967296 * * * *",
            "4294967296 * * * *",
            "0-4294967296 * * * *",
            "0 0 * * 1#4294967296",
            "0 0 * * L4294967296",
            "0 0 4294967296W * *",
            &long,
            &format!("{long} {long} * * *"),
            &"é".repeat(100_000),
            &format!("* * * * {}", "mon,".repeat(20_000) + "mon"),
        ] {
            survives(schedule);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_or_refused(schedule in "\\PC{0,80}") {
            survives(&schedule);
        }

        #[test]
        fn cron_like_text_is_parsed_or_refused(
            fields in proptest::collection::vec(
                "([0-9]{1,3}|[*?LlWw#/,-]|mon|jan|fri|dec|sun){1,6}",
                4..=8,
            ),
        ) {
            survives(&fields.join(" "));
        }
    }
}
