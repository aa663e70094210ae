//! Decoding rows that anyone may have written.
//!
//! The jobs database is shared: the Python library, a person at `psql` or a
//! bug can store values Rust cannot represent. Reading them must never fail
//! a whole query, let alone panic, so the types here decode every value
//! PostgreSQL can hold:
//!
//! - timestamps outside chrono's range, `infinity` and `-infinity` become
//!   [`DateTime::<Utc>::MAX_UTC`] / [`DateTime::<Utc>::MIN_UTC`] (the driver's own
//!   decoder panics on them);
//! - job arguments are read as text and parsed per job, so arguments
//!   serde_json cannot represent (a number beyond f64, nesting deeper than
//!   128) fail that job alone (see [`crate::job::Job::args_error`]).

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Type, ValueRef};

/// A `timestamptz` (or `timestamp`, read as UTC) that decodes whatever the
/// column holds: NULL, infinities, and years chrono cannot represent, which
/// are clamped to chrono's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTime(pub Option<DateTime<Utc>>);

/// 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in Unix microseconds.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl DbTime {
    /// From PostgreSQL's binary form: microseconds since 2000-01-01 UTC,
    /// with `i64::MAX` for `infinity` and `i64::MIN` for `-infinity`.
    fn from_postgres_micros(micros: i64) -> DateTime<Utc> {
        match micros.checked_add(POSTGRES_EPOCH_UNIX_MICROS) {
            Some(unix) if micros != i64::MAX && micros != i64::MIN => {
                Utc.timestamp_micros(unix).single().unwrap_or(if unix < 0 {
                    DateTime::<Utc>::MIN_UTC
                } else {
                    DateTime::<Utc>::MAX_UTC
                })
            }
            _ if micros < 0 => DateTime::<Utc>::MIN_UTC,
            _ => DateTime::<Utc>::MAX_UTC,
        }
    }

    /// From PostgreSQL's text form (simple-protocol queries).
    fn from_text(text: &str) -> DateTime<Utc> {
        match text.trim() {
            "infinity" => DateTime::<Utc>::MAX_UTC,
            "-infinity" => DateTime::<Utc>::MIN_UTC,
            text => DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
                .map(|at| at.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                        .map(|at| at.and_utc())
                })
                // Years beyond 9999, BC dates: outside what a text
                // timestamp here can say; keep the direction.
                .unwrap_or(if text.ends_with(" BC") {
                    DateTime::<Utc>::MIN_UTC
                } else {
                    DateTime::<Utc>::MAX_UTC
                }),
        }
    }
}

/// Whether `at` stands for a time beyond chrono's range (an infinity or a
/// clamped year), for displays that would rather say so.
pub fn is_clamped(at: DateTime<Utc>) -> bool {
    at == DateTime::<Utc>::MIN_UTC || at == DateTime::<Utc>::MAX_UTC
}

/// Serializes a timestamp as JSON does everywhere in dawdle: chrono's RFC
/// 3339 form, except PostgreSQL's infinities (and years beyond chrono's
/// range, see [`is_clamped`]), which are the strings `"infinity"` and
/// `"-infinity"` rather than a year no RFC 3339 parser accepts. For
/// `#[serde(serialize_with = "crate::rows::serialize_time")]`.
pub fn serialize_time<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    if *at == DateTime::<Utc>::MAX_UTC {
        serializer.serialize_str("infinity")
    } else if *at == DateTime::<Utc>::MIN_UTC {
        serializer.serialize_str("-infinity")
    } else {
        at.serialize(serializer)
    }
}

/// [`serialize_time`] for an optional timestamp (null when `None`).
pub fn serialize_optional_time<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize_time(at, serializer),
        None => serializer.serialize_none(),
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
            || <chrono::NaiveDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if value.is_null() {
            return Ok(DbTime(None));
        }
        let at = match value.format() {
            PgValueFormat::Binary => {
                Self::from_postgres_micros(<i64 as Decode<Postgres>>::decode(value)?)
            }
            PgValueFormat::Text => Self::from_text(value.as_str()?),
        };
        Ok(DbTime(Some(at)))
    }
}

impl From<DbTime> for Option<DateTime<Utc>> {
    fn from(time: DbTime) -> Self {
        time.0
    }
}

impl TryFrom<DbTime> for DateTime<Utc> {
    type Error = &'static str;

    fn try_from(time: DbTime) -> Result<Self, Self::Error> {
        time.0.ok_or("unexpected NULL timestamp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinities_and_far_years_clamp_instead_of_panicking() {
        assert_eq!(
            DbTime::from_postgres_micros(i64::MAX),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            DbTime::from_postgres_micros(i64::MIN),
            DateTime::<Utc>::MIN_UTC
        );
        // 294276 AD, PostgreSQL's last year, is beyond chrono's.
        assert_eq!(
            DbTime::from_postgres_micros(i64::MAX - 1),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            DbTime::from_postgres_micros(0),
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(DbTime::from_text("-infinity"), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            DbTime::from_text("2026-12-03 10:00:00.5+00"),
            Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap()
                + chrono::Duration::milliseconds(500)
        );
    }
}
