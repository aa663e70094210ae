//! dawdle's cron schedules tick when Procrastinate's do. The real croniter,
//! from the virtual environment the test command creates (the version
//! procrastinate 3.10.0 pins), computes the next ticks of each schedule from
//! fixed starts, the way procrastinate.periodic asks it (UTC, unix seconds);
//! `Schedule::next_after` must give the same instants. Schedules croniter
//! refuses, dawdle refuses too; the few croniter accepts and dawdle refuses
//! on purpose are pinned here, so a change on either side is seen.

mod common;

use chrono::{DateTime, Utc};
use dawdle::cron::Schedule;
use serde::Deserialize;
use serde_json::json;

/// Ticks asked of each schedule from each start.
const TICKS: usize = 5;

/// 2030-01-01T00:00:00Z (a Tuesday), 2031-02-27T23:59:58Z (two seconds
/// before the last day of a short February), 2032-02-28T23:59:59Z (one
/// second before a leap day) and 2030-06-30T12:34:56Z (mid-second-field,
/// the last day of a 30-day month).
const STARTS: [i64; 4] = [1_893_456_000, 1_930_003_198, 1_961_625_599, 1_909_053_296];

/// Schedules both accept, with what each one exercises.
const ACCEPTED: &[(&str, &str)] = &[
    ("@yearly", "shorthand"),
    ("@annually", "shorthand"),
    ("@monthly", "shorthand"),
    ("@weekly", "shorthand: Sundays"),
    ("@daily", "shorthand"),
    ("@midnight", "shorthand, as @daily"),
    ("@hourly", "shorthand"),
    ("@Daily", "shorthands ignore case"),
    ("* * * * *", "every minute"),
    ("*/15 * * * *", "*/n"),
    ("5/15 * * * *", "a/n: from a to the end"),
    ("1-30/5 * * * *", "range with a step"),
    ("0 9-17/2 * * mon-fri", "stepped hours on weekdays by name"),
    ("30 6 1 jan,apr,jul,oct *", "list of month names"),
    ("0 0 * * MON,wed,Fri", "day names in any case"),
    ("0 0 * JAN-MAR *", "range of month names"),
    ("0 12 * * 0", "Sunday as 0"),
    ("0 12 * * 7", "Sunday as 7"),
    ("0 0 * * 5-7", "range ending on Sunday as 7"),
    ("0 0 * * 1-7/2", "stepped range ending on 7"),
    ("0 0 * * */2", "stepped week days"),
    ("0 0 * * 1/2", "a/n in day of week stops at Saturday"),
    ("0 0 */10 * *", "stepped days of month"),
    ("0 0 13 * fri", "day of month OR day of week"),
    ("0 0 1-7 * 2", "OR again: not the first Tuesday"),
    ("0 0 1-31 * mon", "a full range still restricts: every day"),
    ("0 0 1 * 0-6", "a full week still restricts: every day"),
    ("0 0 *,5 * mon", "a list holding * does not restrict"),
    ("0 0 ? * mon", "? in day of month"),
    ("0 0 1 * ?", "? in day of week"),
    ("* * * * * */10", "seconds last"),
    ("*/10 * * * * 30", "every ten minutes at second 30"),
    ("0 12 * * * 15,45", "list of seconds"),
    ("* * * * * 50-10", "seconds wrapping around the minute"),
    ("0 0 1 1 * 0 2033/2", "year seventh"),
    ("0 0 1 * * 0 2031-2032", "year range"),
    ("0 0 L 2 * 0 2032/4", "leap days by year step and L"),
    ("0 0 L * *", "last day of each month"),
    ("0 0 L 2 *", "last day of February, leap or not"),
    ("0 0 1,L * *", "first and last day"),
    ("0 0 15,L * *", "L in a list"),
    ("0 0 25-L 2 *", "range to the last day"),
    ("0 0 L * fri", "L OR Fridays"),
    ("0 0 29 2 *", "leap days only"),
    ("0 12 29 feb *", "leap days by name"),
    ("0 0 29,30,31 * *", "month ends that some months lack"),
    ("59 23 31 * *", "31-day months only"),
    ("0 9 15W * *", "weekday nearest the 15th"),
    (
        "0 9 1W * *",
        "nearest weekday never leaves the month (start)",
    ),
    (
        "0 9 28W * *",
        "nearest weekday never leaves the month (end)",
    ),
    ("0 9 W10 * *", "W before the day"),
    ("0 0 * * fri#2", "second Friday"),
    ("0 0 * * 1#5", "fifth Monday, when there is one"),
    ("0 0 * * L5", "last Friday"),
    ("0 0 * * L0", "last Sunday as 0"),
    ("0 0 * * L7", "last Sunday as 7"),
    ("0 0 * * 5#3,L5", "third and last Friday"),
    ("5-5 * * * *", "equal ends: the whole cycle"),
    ("0 0 * * 3-3/2", "equal ends with a step"),
    ("0 0 * * sat-mon", "week days wrapping around"),
    ("50-10 * * * *", "minutes wrapping around"),
    ("0 0 * nov-feb *", "months wrapping around the year"),
    ("0 0 28-3 * *", "days wrapping around the month"),
    ("*/90 * * * *", "a step longer than the cycle"),
    ("007 * * * *", "leading zeros"),
    ("  0   0  * * *  ", "extra spaces"),
];

/// Schedules croniter refuses; dawdle must refuse them too.
const REFUSED: &[&str] = &[
    "",
    "* * * *",
    "* * * * * * * *",
    "61 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 8",
    "* * * * * 60",
    "* * * * * 0 1969",
    "* * * * * 0 2100",
    "*/0 * * * *",
    "-1 * * * *",
    "1- * * * *",
    ",1 * * * *",
    "1,, * * * *",
    "/5 * * * *",
    "1/ * * * *",
    "1-2-3 * * * *",
    "1/2/3 * * * *",
    "a * * * *",
    "+5 * * * *",
    "0x5 * * * *",
    "٣ * * * *",
    "mon * * * *",
    "* * * mon *",
    "* * * * jan",
    "* * * * monday",
    "0 0 * * 5L",
    "0 0 * * 5#L",
    "0 0 * * L",
    "0 0 * * Lsun",
    "0 0 * * L8",
    "0 0 * * 1#6",
    "0 0 * * 1#0",
    "0 0 * * 1-5#2",
    "0 0 * * mon#2,fri",
    "0 0 * * L5,1",
    "0 0 1W,15 * *",
    "0 0 0W * *",
    "0 0 LW * *",
    "0 0 W * *",
    "0 0 L-2 * *",
    "0 0 L/2 * *",
    "? * * * *",
    "* * * * * ?",
    "0 0 ?,1 * *",
    "0 0 ?/2 * *",
    "@reboot",
    "@daily 5",
    "@ daily",
    "H * * * *",
    // croniter takes it, then finds no tick: it ignores the day of month
    // beside L5 and looks for last Fridays on the 1st.
    "0 0 1 * L5",
];

/// Schedules croniter accepts and dawdle refuses on purpose, with why.
const REFUSED_ON_PURPOSE: &[(&str, &str)] = &[
    // croniter's steps over a wrapped range follow no stated rule
    // (50-10/7 gives 5, 50, 57).
    ("50-10/7 * * * *", "wraps around and cannot take a step"),
    ("0 0 * * sat-mon/2", "wraps around and cannot take a step"),
    // croniter then ignores the day of month or the day of week.
    ("0 0 L * L5", "needs day of month *"),
    ("0 0 1 * 5#1", "needs day of month *"),
    ("0 0 15W * mon", "needs day of week *"),
    // croniter moves them to the last weekday of a shorter month.
    ("0 0 31W * *", "31W is not supported"),
    ("0 0 29W 2 *", "29W is not supported"),
    // A random minute and hour, chosen again by each process.
    ("R R * * *", "random or hashed"),
];

/// Schedules that never fire: croniter gives up, dawdle finds no tick.
const NEVER: &[&str] = &["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 1 1 * 0 1999"];

/// Schedules croniter 7.0.0 gives up on although they fire, with dawdle's
/// first tick after the first start: a list of years, a leap day in a
/// given year.
const CRONITER_GIVES_UP: &[(&str, &str)] = &[
    ("0 0 1 1 * 0 2031,2033", "2031-01-01T00:00:00+00:00"),
    ("0 0 29 2 * 0 2032", "2032-02-29T00:00:00+00:00"),
    ("0 0 29 2 * 0 2032-2040", "2032-02-29T00:00:00+00:00"),
];

#[derive(Debug, Deserialize)]
struct Answer {
    croniter: String,
    results: Vec<Outcome>,
}

#[derive(Debug, Deserialize)]
struct Outcome {
    schedule: String,
    start: i64,
    ticks: Option<Vec<i64>>,
    error: Option<String>,
}

/// What croniter says of each schedule from each start, in that order.
async fn croniter(schedules: &[&str]) -> Vec<Outcome> {
    let request = json!({"schedules": schedules, "starts": STARTS, "count": TICKS});
    let run = common::run_script("", "croniter_ticks.py", &[], &request.to_string())
        .await
        .expect_success();
    let answer: Answer = serde_json::from_value(run.json()).expect("croniter's answer");
    assert_eq!(answer.croniter, "7.0.0", "the pinned croniter");
    assert_eq!(answer.results.len(), schedules.len() * STARTS.len());
    answer.results
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).expect("a start in range")
}

/// dawdle's next ticks, as unix seconds, or why it refused.
fn dawdle_ticks(schedule: &str, start: i64) -> Result<Vec<i64>, String> {
    let schedule = Schedule::parse(schedule).map_err(|error| error.to_string())?;
    let mut now = at(start);
    let mut ticks = Vec::new();
    for _ in 0..TICKS {
        match schedule.next_after(now) {
            Some(tick) => {
                ticks.push(tick.timestamp());
                now = tick;
            }
            None => break,
        }
    }
    Ok(ticks)
}

fn show(ticks: &[i64]) -> String {
    let shown: Vec<String> = ticks.iter().map(|t| at(*t).to_rfc3339()).collect();
    shown.join(", ")
}

#[tokio::test]
async fn dawdle_ticks_when_croniter_does() {
    assert!(ACCEPTED.len() >= 30);
    let schedules: Vec<&str> = ACCEPTED.iter().map(|(schedule, _)| *schedule).collect();
    let mut differences = Vec::new();
    for outcome in croniter(&schedules).await {
        let (schedule, start) = (&outcome.schedule, outcome.start);
        let Some(expected) = outcome.ticks else {
            differences.push(format!(
                "{schedule:?}: croniter refused it: {:?}",
                outcome.error
            ));
            continue;
        };
        match dawdle_ticks(schedule, start) {
            Ok(ticks) if ticks == expected => {}
            Ok(ticks) => differences.push(format!(
                "{schedule:?} after {}:\n  croniter: {}\n  dawdle:   {}",
                at(start).to_rfc3339(),
                show(&expected),
                show(&ticks)
            )),
            Err(error) => differences.push(format!("{schedule:?}: dawdle refused it: {error}")),
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[tokio::test]
async fn dawdle_refuses_what_croniter_refuses() {
    let mut accepted = Vec::new();
    for outcome in croniter(REFUSED).await {
        assert!(
            outcome.error.is_some(),
            "{:?}: croniter accepted it",
            outcome.schedule
        );
        match Schedule::parse(&outcome.schedule) {
            Ok(_) => accepted.push(outcome.schedule),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with("invalid cron schedule \"") && message.len() < 400,
                    "{message}"
                );
            }
        }
    }
    assert!(accepted.is_empty(), "dawdle accepted {accepted:?}");
}

#[tokio::test]
async fn what_dawdle_refuses_on_purpose_croniter_accepts() {
    let schedules: Vec<&str> = REFUSED_ON_PURPOSE.iter().map(|(s, _)| *s).collect();
    for outcome in croniter(&schedules).await {
        assert!(
            outcome.ticks.is_some(),
            "{:?}: croniter refuses it now ({:?}); dawdle can refuse it as one of the ordinary \
             refusals",
            outcome.schedule,
            outcome.error
        );
        let (_, why) = REFUSED_ON_PURPOSE
            .iter()
            .find(|(schedule, _)| *schedule == outcome.schedule)
            .expect("a schedule asked for");
        let message = Schedule::parse(&outcome.schedule)
            .expect_err("dawdle refuses it")
            .to_string();
        assert!(message.contains(why), "{message}");
    }
}

#[tokio::test]
async fn schedules_that_never_fire() {
    for outcome in croniter(NEVER).await {
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("CroniterBadDateError"),
            "{:?}: {error}",
            outcome.schedule
        );
        assert_eq!(
            dawdle_ticks(&outcome.schedule, outcome.start),
            Ok(Vec::new()),
            "{:?}",
            outcome.schedule
        );
    }
}

#[tokio::test]
async fn schedules_croniter_gives_up_on_fire_in_dawdle() {
    let schedules: Vec<&str> = CRONITER_GIVES_UP.iter().map(|(s, _)| *s).collect();
    for outcome in croniter(&schedules).await {
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("CroniterBadDateError"),
            "{:?}: croniter finds ticks now; move it to the table of schedules both accept",
            outcome.schedule
        );
        if outcome.start != STARTS[0] {
            continue;
        }
        let (_, first) = CRONITER_GIVES_UP
            .iter()
            .find(|(schedule, _)| *schedule == outcome.schedule)
            .expect("a schedule asked for");
        let ticks = dawdle_ticks(&outcome.schedule, outcome.start).expect("dawdle accepts it");
        assert_eq!(show(&ticks[..1]), *first, "{:?}", outcome.schedule);
    }
}
