//! croniter's format rewritten into croner's dialect: field by field, names
//! to numbers, shorthands expanded, croniter's readings of wrapped ranges,
//! `L`, `W` and `#` kept, and what croner would read differently refused.

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

/// A schedule in croner's dialect: numbers only, every croniter spelling
/// rewritten.
#[derive(Debug)]
pub(super) struct Translation {
    /// Second, minute, hour, day of month, month and day of week.
    pub(super) fields: String,
    /// The year field; `None` for any year.
    pub(super) year: Option<String>,
}

/// `schedule` in croner's dialect, or what is wrong with it.
pub(super) fn to_croner(schedule: &str) -> Result<Translation, String> {
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
