//! Schedules and their ticks; croniter's own ticks are in tests/cron_croniter.rs.

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
