//! How to connect, read from a connection string in either form, with
//! errors that show no secret.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::redact::redact_password;
use super::syntax::{has_scheme, parse_key_value, parse_url};

/// Why a connection string cannot be used. It never quotes the string,
/// only its redacted form when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConnectionString(String);

/// How to connect, from a `postgres://` (or `postgresql://`) URL or from
/// libpq's `key=value` form (`host=db port=5432 dbname=jobs user=app
/// password='…'`).
///
/// Both forms take libpq's parameters `host` (a directory for a Unix
/// socket), `hostaddr`, `port`, `dbname`, `user`, `password`, `sslmode`,
/// `sslrootcert`, `sslcert`, `sslkey`, `application_name` and `options`,
/// and the other URL parameters sqlx knows (`statement-cache-capacity`,
/// `options[name]`, …). Other parameters are ignored with a warning that
/// names them, never their values. What the string leaves unset comes from
/// the `PG*` environment variables and a missing password from
/// `~/.pgpass`, as with sqlx.
pub fn parse_connection_string(
    connection: &str,
) -> Result<PgConnectOptions, InvalidConnectionString> {
    let text = connection.trim();
    let parameters = if has_scheme(text) {
        url_parameters(text)?
    } else {
        key_value_parameters(text)?
    };
    let invalid = |problem: String| {
        InvalidConnectionString(format!("{}: {problem}", redact_password(connection)))
    };
    // sqlx reads every parameter from a URL's query string, and logs the
    // values of those it does not know: it only gets a URL of checked,
    // known parameters, hostaddr last since it wins over host in libpq.
    let mut url = url::Url::parse("postgres:///").expect("a constant URL parses");
    {
        let mut query = url.query_pairs_mut();
        let mut hostaddr = None;
        for (key, value) in &parameters {
            if !check_parameter(key, value).map_err(invalid)? {
                tracing::warn!(
                    parameter = %crate::text::quote(key),
                    "ignoring a connection parameter that sqlx does not support"
                );
            } else if key == "hostaddr" {
                hostaddr = Some(value);
            } else {
                query.append_pair(key, value);
            }
        }
        if let Some(hostaddr) = hostaddr {
            query.append_pair("hostaddr", hostaddr);
        }
    }
    // Its error could quote a value; every value was checked above anyway.
    PgConnectOptions::from_str(url.as_str())
        .map_err(|_| invalid("sqlx cannot use these connection settings".to_string()))
}

/// Whether sqlx takes parameter `key`; an error when it does but `value`
/// is not one it can use.
fn check_parameter(key: &str, value: &str) -> Result<bool, String> {
    let quoted = || crate::text::quote(value);
    match key {
        "sslmode" | "ssl-mode" => value
            .parse::<sqlx::postgres::PgSslMode>()
            .map(drop)
            .map_err(|_| {
                format!(
                    "sslmode {} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full",
                    quoted()
                )
            })?,
        "port" => value
            .parse::<u16>()
            .map(drop)
            .map_err(|_| format!("port {} is not a port number", quoted()))?,
        "hostaddr" => value
            .parse::<std::net::IpAddr>()
            .map(drop)
            .map_err(|_| format!("hostaddr {} is not an IP address", quoted()))?,
        "statement-cache-capacity" => value
            .parse::<usize>()
            .map(drop)
            .map_err(|_| format!("statement-cache-capacity {} is not a number", quoted()))?,
        "host" | "dbname" | "user" | "password" | "application_name" | "options"
        | "sslrootcert" | "ssl-root-cert" | "ssl-ca" | "sslcert" | "ssl-cert" | "sslkey"
        | "ssl-key" => {}
        key if key.starts_with("options[") && key.ends_with(']') => {}
        _ => return Ok(false),
    }
    Ok(true)
}

/// The parameters of a URL, its user info, host, port and path as libpq's
/// `user`, `password`, `host`, `port` and `dbname`, then its query's.
fn url_parameters(text: &str) -> Result<Vec<(String, String)>, InvalidConnectionString> {
    let parsed = parse_url(text);
    let (url, stand_in) = parsed.map_err(|error| {
        InvalidConnectionString(format!(
            "not a valid postgres:// URL ({error}); not shown, as it may hold a password"
        ))
    })?;
    let invalid =
        |problem: String| InvalidConnectionString(format!("{}: {problem}", redact_password(text)));
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(
            "not a postgres:// or postgresql:// URL".to_string(),
        ));
    }
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| invalid(format!("its {what} is not UTF-8 once percent-decoded")))
    };
    let mut parameters = Vec::new();
    match url.host() {
        _ if stand_in => {}
        Some(url::Host::Domain(host)) => parameters.push(("host".into(), decode(host, "host")?)),
        Some(url::Host::Ipv4(address)) => parameters.push(("host".into(), address.to_string())),
        Some(url::Host::Ipv6(address)) => parameters.push(("host".into(), address.to_string())),
        None => {}
    }
    if let Some(port) = url.port() {
        parameters.push(("port".into(), port.to_string()));
    }
    if !url.username().is_empty() {
        parameters.push(("user".into(), decode(url.username(), "user name")?));
    }
    if let Some(password) = url.password() {
        parameters.push(("password".into(), decode(password, "password")?));
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() {
        parameters.push(("dbname".into(), decode(path, "database name")?));
    }
    parameters.extend(
        url.query_pairs()
            .map(|(key, value)| (key.into_owned(), value.into_owned())),
    );
    Ok(parameters)
}

fn key_value_parameters(text: &str) -> Result<Vec<(String, String)>, InvalidConnectionString> {
    match parse_key_value(text) {
        Ok(pairs) if !pairs.is_empty() => Ok(pairs),
        Ok(_) => Err(InvalidConnectionString(
            "the connection string is empty".to_string(),
        )),
        Err(problem) => Err(InvalidConnectionString(format!(
            "neither a postgres:// URL nor a key=value connection string ({problem}); not \
             shown, as it may hold a password"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::redact::NOT_SHOWN;
    use crate::database::syntax::{libpq_escaped, libpq_quoted};
    use proptest::prelude::*;

    #[test]
    fn both_forms_give_the_same_options() {
        let from_url = parse_connection_string(
            "postgresql://app:hunter2@db.internal:6543/jobs?sslmode=disable&application_name=x",
        )
        .unwrap();
        let from_key_value = parse_connection_string(
            "host=db.internal port=6543 dbname=jobs user=app password='hunter2' \
             sslmode=disable application_name=x",
        )
        .unwrap();
        for options in [&from_url, &from_key_value] {
            assert_eq!(options.get_host(), "db.internal");
            assert_eq!(options.get_port(), 6543);
            assert_eq!(options.get_database(), Some("jobs"));
            assert_eq!(options.get_username(), "app");
            assert!(matches!(
                options.get_ssl_mode(),
                sqlx::postgres::PgSslMode::Disable
            ));
            assert_eq!(options.get_application_name(), Some("x"));
        }
        // The password reaches sqlx (whose Debug shows it).
        assert!(format!("{from_key_value:?}").contains("hunter2"));
    }

    #[test]
    fn a_url_with_user_info_and_no_host_reaches_a_socket_as_libpq_does() {
        for url in [
            "postgresql://postgres@/jobs?host=/run/pg",
            "postgres://postgres:hunter2@/jobs?host=%2Frun%2Fpg",
            "postgresql://postgres@:5433/jobs?host=/run/pg",
        ] {
            let options = parse_connection_string(url).unwrap();
            assert_eq!(
                options.get_socket().map(|path| path.to_str().unwrap()),
                Some("/run/pg"),
                "{url}"
            );
            assert_eq!(options.get_database(), Some("jobs"), "{url}");
            assert_eq!(options.get_username(), "postgres", "{url}");
        }
        let port = parse_connection_string("postgresql://postgres@:5433/jobs").unwrap();
        assert_eq!(port.get_port(), 5433);
        // Nothing after the user info: the defaults, as with libpq.
        let bare = parse_connection_string("postgresql://app:hunter2@").unwrap();
        assert_eq!(bare.get_username(), "app");
        let error = parse_connection_string("postgresql://app:hunter2@:http/jobs").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn sockets_addresses_and_options_are_understood() {
        let socket =
            parse_connection_string("postgresql://postgres@localhost:5433/jobs?host=%2Ftmp%2Fpg")
                .unwrap();
        assert_eq!(
            socket.get_socket().map(|path| path.to_str().unwrap()),
            Some("/tmp/pg")
        );
        let socket = parse_connection_string("host=/tmp/pg dbname=jobs").unwrap();
        assert_eq!(
            socket.get_socket().map(|path| path.to_str().unwrap()),
            Some("/tmp/pg")
        );
        let ipv6 = parse_connection_string("postgres://[::1]:5/db").unwrap();
        assert_eq!(ipv6.get_host(), "::1");
        let hostaddr = parse_connection_string("hostaddr=10.0.0.1 host=db").unwrap();
        assert_eq!(hostaddr.get_host(), "10.0.0.1");
        let options = parse_connection_string("host=db options='-c statement_timeout=5s'").unwrap();
        assert_eq!(options.get_options(), Some("-c statement_timeout=5s"));
        // Parameters sqlx does not know are ignored, not sent to it.
        parse_connection_string("postgres://h/db?sslpassword=hunter2&connect_timeout=5").unwrap();
    }

    #[test]
    fn errors_say_what_is_wrong_without_the_secret() {
        let cases = [
            (
                "postgres://u:hunter2@h/db?sslmode=bogus",
                "sslmode \"bogus\"",
            ),
            ("host=h password=hunter2 port=http", "port \"http\""),
            ("host=h password=hunter2 hostaddr=h", "hostaddr \"h\""),
            (
                "mysql://u:hunter2@h/db",
                "not a postgres:// or postgresql:// URL",
            ),
            ("postgres://u:hunter2@h:99999/db", "invalid port number"),
            ("postgres://u:%FFhunter2@h/db", "password is not UTF-8"),
            ("host=h hunter2", "no \"=\""),
            ("host=h password='hunter2", "no closing quote"),
            ("  ", "empty"),
        ];
        for (text, expected) in cases {
            let error = parse_connection_string(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("hunter2"), "{text}: {error}");
        }
    }

    fn url_encoded(value: &str) -> String {
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    proptest! {
        #[test]
        fn no_form_shows_its_password(password in "\\PC{4,40}") {
            let form: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
            let cases = [
                (
                    format!("postgres://app:{}@db:5432/jobs?sslmode=require", url_encoded(&password)),
                    "postgres://app:***@db:5432/jobs?sslmode=require",
                ),
                (
                    format!("postgres://app@db/jobs?password={form}&application_name=x"),
                    "postgres://app@db/jobs?password=***&application_name=x",
                ),
                (
                    format!("postgres://app@db/jobs?sslpassword={form}"),
                    "postgres://app@db/jobs?sslpassword=***",
                ),
                (
                    format!("host=db password={} dbname=jobs", libpq_quoted(&password)),
                    "host=db password=*** dbname=jobs",
                ),
                (
                    format!("host=db password = {} dbname=jobs", libpq_escaped(&password)),
                    "host=db password=*** dbname=jobs",
                ),
            ];
            prop_assume!(cases.iter().all(|(_, expected)| !expected.contains(&password)));
            for (text, expected) in &cases {
                let shown = redact_password(text);
                prop_assert_eq!(&shown, expected);
                prop_assert!(!shown.contains(&password));
                let options = parse_connection_string(text);
                prop_assert!(options.is_ok(), "{:?}", options.err());
            }
        }

        #[test]
        fn unparsable_strings_and_their_errors_hide_everything(secret in "[^/?#@\\\\]{4,40}") {
            let url = format!("postgres://app:{secret}@db:99999/jobs");
            let key_value = format!("host=db password='{}", secret.replace('\'', ""));
            for text in [url, key_value] {
                prop_assert_eq!(redact_password(&text), NOT_SHOWN);
                let error = parse_connection_string(&text).unwrap_err().to_string();
                prop_assert!(!error.contains(&secret), "{}", error);
            }
        }
    }
}
