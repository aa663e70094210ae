//! Showing a connection string: it names a server and often carries the
//! password to it, so it is only ever shown through [`redact_password`], and
//! a string that does not parse is not shown at all: nobody can tell which
//! part of it is the secret.

use super::syntax::{has_scheme, parse_key_value, parse_url, STAND_IN_HOST};

/// What replaces a secret in a shown connection string.
const REDACTED: &str = "***";

/// Longest connection string shown, once redacted.
const MAX_SHOWN_CHARS: usize = 300;

/// What is shown for a connection string that does not parse.
pub const NOT_SHOWN: &str = "(not shown: neither a valid URL nor a key=value connection string)";

/// A connection string as it may be shown: a URL (`postgres://`, but also
/// `smtp://` or `https://`) or libpq's `key=value` form, with the password
/// of the URL's user info and the value of every parameter whose name says
/// it is a secret (`password`, `sslpassword`, `token`, `api_key`, …)
/// replaced by `***`, its fragment dropped, control characters escaped, and
/// at most 300 characters. Text that parses as neither is replaced whole by
/// [`NOT_SHOWN`].
pub fn redact_password(connection: &str) -> String {
    let text = connection.trim();
    let shown = if has_scheme(text) {
        match parse_url(text) {
            Ok((url, false)) => redact_url(url),
            // Shown as written: with no host.
            Ok((url, true)) => redact_url(url).replacen(&format!("@{STAND_IN_HOST}"), "@", 1),
            Err(_) => NOT_SHOWN.to_string(),
        }
    } else {
        match parse_key_value(text) {
            Ok(pairs) if !pairs.is_empty() => render_key_value(&pairs),
            _ => NOT_SHOWN.to_string(),
        }
    };
    crate::text::truncate(&crate::text::printable(&shown), MAX_SHOWN_CHARS).into_owned()
}

/// Whether a parameter's name says its value is a secret. Broader than
/// libpq's `password` and `sslpassword`, so that the same redaction serves
/// the URLs of other services (`?token=`, `?api_key=`).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn redact_url(mut url: url::Url) -> String {
    if url.password().is_some() {
        // Only URLs that cannot have user info refuse, and they have no password.
        let _ = url.set_password(Some(REDACTED));
    }
    if let Some(query) = url.query() {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| {
                let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
                let name = url::form_urlencoded::parse(raw_name.as_bytes())
                    .next()
                    .map(|(name, _)| name.into_owned())
                    .unwrap_or_default();
                if is_secret_name(&name) {
                    format!("{raw_name}={REDACTED}")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.set_fragment(None);
    url.into()
}

/// `key=value` pairs as libpq reads them, secrets replaced by `***`.
fn render_key_value(pairs: &[(String, String)]) -> String {
    let rendered: Vec<String> = pairs
        .iter()
        .map(|(key, value)| {
            if is_secret_name(key) {
                format!("{key}={REDACTED}")
            } else if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
            {
                let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
                format!("{key}='{escaped}'")
            } else {
                format!("{key}={value}")
            }
        })
        .collect();
    rendered.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            redact_password("postgresql://postgres:postgres@localhost:5433/jobs"),
            "postgresql://postgres:***@localhost:5433/jobs"
        );
        assert_eq!(
            redact_password("postgres://u:p%40ss@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_password("smtp://mailer:hunter2@mail.example:587?tls=required"),
            "smtp://mailer:***@mail.example:587?tls=required"
        );
        // No host after the user info, as libpq allows.
        assert_eq!(
            redact_password("postgresql://app:hunter2@/jobs?host=/run/pg&password=x"),
            "postgresql://app:***@/jobs?host=/run/pg&password=***"
        );
        assert_eq!(
            redact_password("postgresql://app@:5433/jobs"),
            "postgresql://app@:5433/jobs"
        );
    }

    #[test]
    fn secret_query_parameters_are_hidden() {
        assert_eq!(
            redact_password("postgres://u@h/db?password=hunter2&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://h/db?sslpassword=hunter2&application_name=x"),
            "postgres://h/db?sslpassword=***&application_name=x"
        );
        // The name is compared decoded, whatever its case.
        assert_eq!(
            redact_password("postgres://h/db?Pass%77ord=hunter2"),
            "postgres://h/db?Pass%77ord=***"
        );
        assert_eq!(
            redact_password("https://crm.example/hook?api_key=hunter2&x=1"),
            "https://crm.example/hook?api_key=***&x=1"
        );
        assert_eq!(
            redact_password("postgres://h/db?password"),
            "postgres://h/db?password=***"
        );
        assert_eq!(
            redact_password("postgres://h/db#hunter2"),
            "postgres://h/db"
        );
    }

    #[test]
    fn key_value_passwords_are_hidden() {
        assert_eq!(
            redact_password("host=db password=hunter2 dbname=jobs"),
            "host=db password=*** dbname=jobs"
        );
        assert_eq!(
            redact_password("password='hun ter2' host=db"),
            "password=*** host=db"
        );
        assert_eq!(
            redact_password(r"password = 'it\'s \\ secret' sslpassword=a\ b host=db"),
            "password=*** sslpassword=*** host=db"
        );
        assert_eq!(
            redact_password("host=db application_name='two words' options=''"),
            "host=db application_name='two words' options=''"
        );
    }

    #[test]
    fn unparsable_strings_are_not_shown_at_all() {
        for text in [
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2@[::1/db",
            "host=db password='hunter2",
            "host=db hunter2",
            "hunter2",
            "=hunter2",
            "",
        ] {
            assert_eq!(redact_password(text), NOT_SHOWN, "{text}");
        }
    }

    #[test]
    fn shown_strings_are_one_bounded_line() {
        let shown = redact_password("host=db application_name='a\nb\x1b[2J'");
        assert_eq!(shown, "host=db application_name='a\\nb\\u{1b}[2J'");
        let long = format!("postgres://h/{}", "x".repeat(10_000));
        assert!(redact_password(&long).chars().count() <= MAX_SHOWN_CHARS);
    }
}
