//! Cron schedules for periodic tasks, in the format Procrastinate's periodic
//! tasks use: five fields (minute, hour, day of month, month, day of week),
//! and an optional sixth for seconds (`*/10 * * * * 30` is "every ten
//! minutes, at second 30"). Times are evaluated in a time zone, so "every
//! day at 09:00 Europe/Paris" follows daylight saving time.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists
//! `a,b,c`, and names for months (`jan`) and week days (`mon`; 0 and 7 are
//! Sunday). As in classic cron, when both day of month and day of week are
//! restricted, a day matching either runs.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    seconds: Vec<bool>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days_of_month: Vec<bool>,
    months: Vec<bool>,
    days_of_week: Vec<bool>,
    day_of_month_restricted: bool,
    day_of_week_restricted: bool,
    time_zone: Tz,
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
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        if fields.len() != 5 && fields.len() != 6 {
            return Err(error(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) and an optional \
                 6th for seconds, got {}",
                fields.len()
            )));
        }
        let field =
            |index: usize, name: &str, min: u32, max: u32, names: &[&str], name_base: u32| {
                parse_field(fields[index], min, max, names, name_base)
                    .map_err(|p| error(format!("{name}: {p}")))
            };
        let minutes = field(0, "minute", 0, 59, &[], 0)?;
        let hours = field(1, "hour", 0, 23, &[], 0)?;
        let days_of_month = field(2, "day of month", 1, 31, &[], 0)?;
        let months = field(3, "month", 1, 12, &MONTHS, 1)?;
        let mut days_of_week = field(4, "day of week", 0, 7, &DAYS, 0)?;
        // 7 is Sunday too.
        if days_of_week[7] {
            days_of_week[0] = true;
        }
        days_of_week.truncate(7);
        let seconds = match fields.get(5) {
            Some(text) => {
                parse_field(text, 0, 59, &[], 0).map_err(|p| error(format!("second: {p}")))?
            }
            None => {
                let mut only_zero = vec![false; 60];
                only_zero[0] = true;
                only_zero
            }
        };
        Ok(Self {
            source: schedule.to_string(),
            seconds,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_of_month_restricted: fields[2] != "*",
            day_of_week_restricted: fields[4] != "*",
            time_zone,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    fn day_matches(&self, date: chrono::NaiveDate) -> bool {
        let by_month_day = self.days_of_month[date.day() as usize];
        let by_week_day = self.days_of_week[date.weekday().num_days_from_sunday() as usize];
        match (self.day_of_month_restricted, self.day_of_week_restricted) {
            (true, true) => by_month_day || by_week_day,
            (true, false) => by_month_day,
            (false, true) => by_week_day,
            (false, false) => true,
        }
    }

    /// The first tick strictly after `after`, or `None` if there is none
    /// within five years (a schedule such as February 30th).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.time_zone).naive_local();
        let mut day = local.date();
        let limit = day + Duration::days(5 * 366);
        let mut first_day = true;
        while day <= limit {
            if self.months[day.month() as usize] && self.day_matches(day) {
                for hour in 0..24u32 {
                    if !self.hours[hour as usize] {
                        continue;
                    }
                    for minute in 0..60u32 {
                        if !self.minutes[minute as usize] {
                            continue;
                        }
                        for second in 0..60u32 {
                            if !self.seconds[second as usize] {
                                continue;
                            }
                            let naive = day.and_hms_opt(hour, minute, second)?;
                            if first_day && naive <= local {
                                continue;
                            }
                            // A local time skipped by a daylight saving change
                            // does not exist; one repeated runs once (earliest).
                            if let Some(at) = self.time_zone.from_local_datetime(&naive).earliest()
                            {
                                let at = at.with_timezone(&Utc);
                                if at > after {
                                    return Some(at);
                                }
                            }
                        }
                    }
                }
            }
            day = day.succ_opt()?;
            first_day = false;
        }
        None
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

fn value(text: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = names.iter().position(|name| *name == lower) {
        return Ok(index as u32 + name_base);
    }
    let number: u32 = text
        .parse()
        .map_err(|_| format!("{} is not a number", crate::text::quote(text)))?;
    if number < min || number > max {
        return Err(format!("{number} is out of range {min}-{max}"));
    }
    Ok(number)
}

fn parse_field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Vec<bool>, String> {
    let mut allowed = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step {} is not a number", crate::text::quote(step)))?;
                if step == 0 {
                    return Err("a step of 0 never advances".to_string());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                value(a, min, max, names, name_base)?,
                value(b, min, max, names, name_base)?,
            );
            if a > b {
                return Err(format!(
                    "range {} runs backwards",
                    crate::text::quote(range)
                ));
            }
            (a, b)
        } else {
            let a = value(range, min, max, names, name_base)?;
            // `5/15` means from 5 to the end, every 15.
            (a, if step > 1 { max } else { a })
        };
        let mut v = start;
        while v <= end {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok(allowed)
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
            "* * * * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
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
            (format!("{late}-1 * * * *"), "runs backwards"),
            (format!("* * * * * {huge}"), "second"),
            ([huge.as_str(); 7].join(" "), "got 7"),
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
}
