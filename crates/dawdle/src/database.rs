//! Where the jobs database is: `JOB_QUEUE_DATABASE_URL`, or the embedded local
//! PostgreSQL under `.dawdle/` when it is unset.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::local_pg::{LocalCluster, LocalClusterConfig, LocalPgError};

/// The environment variable the runbook's scripts and services read.
pub const DATABASE_URL_ENV: &str = "JOB_QUEUE_DATABASE_URL";
/// Overrides where the embedded cluster lives (default `.dawdle` in the
/// working directory).
pub const HOME_ENV: &str = "DAWDLE_HOME";
/// Name of the jobs database on the embedded cluster, as in the runbook's URL.
pub const EMBEDDED_JOBS_DATABASE: &str = "jobs";

/// Failures to reach the jobs database, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("read the database URL: {0}")]
    BadUrl(#[from] InvalidConnectionString),
    #[error("connect to the jobs database at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Embedded(#[from] LocalPgError),
}

/// A resolved jobs database: how to connect and how to name it to a person.
#[derive(Clone)]
pub struct JobsDatabase {
    options: PgConnectOptions,
    /// The URL with any password hidden, for messages.
    display_url: String,
    /// A URL other programs (psql, Python) can use; for the embedded
    /// cluster, the socket URL.
    url: String,
    embedded: Option<LocalCluster>,
}

// By hand: the connect options and the URL hold the password.
impl std::fmt::Debug for JobsDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsDatabase")
            .field("display_url", &self.display_url)
            .field("embedded", &self.embedded)
            .finish_non_exhaustive()
    }
}

impl JobsDatabase {
    /// From an explicit connection string: a `postgres://` URL or libpq's
    /// `key=value` form (see [`parse_connection_string`]).
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let options = parse_connection_string(url)?;
        Ok(Self {
            options: options.application_name("dawdle"),
            display_url: redact_password(url),
            url: url.to_string(),
            embedded: None,
        })
    }

    /// The embedded cluster under `base_dir`, started (and created) if needed,
    /// with its `jobs` database created if needed. Blocking: it may run initdb.
    pub async fn embedded(base_dir: PathBuf) -> Result<Self, ConnectError> {
        let cluster = LocalCluster::new(LocalClusterConfig::persistent(base_dir))?;
        let started = cluster.clone();
        tokio::task::spawn_blocking(move || started.ensure_running())
            .await
            .expect("starting the local PostgreSQL panicked")?;
        let url = cluster.url(EMBEDDED_JOBS_DATABASE);
        cluster
            .ensure_database(EMBEDDED_JOBS_DATABASE)
            .await
            .map_err(|source| ConnectError::Unreachable {
                url: url.clone(),
                source,
            })?;
        Ok(Self {
            options: cluster.connect_options(EMBEDDED_JOBS_DATABASE),
            display_url: url.clone(),
            url,
            embedded: Some(cluster),
        })
    }

    /// `JOB_QUEUE_DATABASE_URL` (or `explicit_url`, which wins) when set,
    /// else the embedded default.
    pub async fn resolve(explicit_url: Option<&str>) -> Result<Self, ConnectError> {
        let from_env = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty());
        match explicit_url.map(str::to_string).or(from_env) {
            Some(url) => Self::from_url(&url),
            None => Self::embedded(default_home()).await,
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    pub fn embedded_cluster(&self) -> Option<&LocalCluster> {
        self.embedded.as_ref()
    }

    /// The URL as [`redact_password`] shows it.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// A URL for other programs (psql, the Python library).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A pool of up to `max_connections`, with the first connection opened
    /// now so that a wrong URL fails here, with the URL in the message.
    pub async fn connect(&self, max_connections: u32) -> Result<PgPool, ConnectError> {
        // One direct connection first: a pool retries a refused connection
        // until its acquire timeout, and a typo in a URL should fail at once.
        let unreachable = |source| ConnectError::Unreachable {
            url: self.display_url.clone(),
            source,
        };
        let probe = sqlx::PgConnection::connect_with(&self.options)
            .await
            .map_err(unreachable)?;
        let _ = probe.close().await;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(self.options.clone()))
    }
}

/// `$DAWDLE_HOME`, else `.dawdle` in the working directory.
pub fn default_home() -> PathBuf {
    std::env::var_os(HOME_ENV)
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".dawdle"))
        .join("postgres")
}

// ---------------------------------------------------------------- connection strings
//
// A connection string names a server and often carries the password to it,
// so it is only ever shown through `redact_password`, and a string that
// does not parse is not shown at all: nobody can tell which part of it is
// the secret.

/// What replaces a secret in a shown connection string.
const REDACTED: &str = "***";

/// Longest connection string shown, once redacted.
const MAX_SHOWN_CHARS: usize = 300;

/// What is shown for a connection string that does not parse.
pub const NOT_SHOWN: &str = "(not shown: neither a valid URL nor a key=value connection string)";

/// Why a connection string cannot be used. It never quotes the string,
/// only its redacted form when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConnectionString(String);

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
        match url::Url::parse(text) {
            Ok(url) => redact_url(url),
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

/// Whether `text` starts with a URL scheme and `://`, which a `key=value`
/// string never does (a scheme has no `=` and no space).
fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
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

/// The pairs of a libpq `key=value` connection string, values unquoted and
/// unescaped, by libpq's rules: pairs separated by whitespace, optional
/// whitespace around `=`, a value either single-quoted or ending at the
/// next whitespace, a backslash taking the next character literally. The
/// error says what is wrong without quoting anything.
fn parse_key_value(text: &str) -> Result<Vec<(String, String)>, &'static str> {
    // C's isspace, which libpq uses: Rust's ASCII whitespace lacks \v.
    fn is_space(c: &char) -> bool {
        matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
    }
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(is_space).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !is_space(c)) {
            key.push(c);
        }
        while chars.next_if(is_space).is_some() {}
        if key.is_empty() {
            return Err("a parameter has no name before its \"=\"");
        }
        if chars.next() != Some('=') {
            return Err("a parameter has no \"=\" after its name");
        }
        while chars.next_if(is_space).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err("a quoted value has no closing quote"),
                    },
                    Some(c) => value.push(c),
                    None => return Err("a quoted value has no closing quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !is_space(c)) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
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
    let url = url::Url::parse(text).map_err(|error| {
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
    use proptest::prelude::*;

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
            "postgres://u:hunter2@/db",
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

    #[test]
    fn key_value_strings_parse_as_libpq_reads_them() {
        let pairs =
            parse_key_value(r" host = db  password='it\'s a\\b'dbname=jobs user=a\ b ").unwrap();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("host", "db"),
                ("password", r"it's a\b"),
                ("dbname", "jobs"),
                ("user", "a b"),
            ]
        );
        assert_eq!(
            parse_key_value("password= host=db").unwrap(),
            [("password".to_string(), "host=db".to_string())]
        );
        assert!(parse_key_value("host").is_err());
        assert!(parse_key_value("host='db").is_err());
        assert!(parse_key_value(r"host='db\").is_err());
    }

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
        let error = JobsDatabase::from_url("postgres://u:hunter2@h:x/db").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("read the database URL: not a valid"));
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let database = JobsDatabase::from_url("host=h password=hunter2").unwrap();
        let debug = format!("{database:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("password=***"), "{debug}");
    }

    /// `value` quoted for a key=value string.
    fn libpq_quoted(value: &str) -> String {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }

    /// `value` unquoted for a key=value string, every character escaped
    /// that would end or quote it.
    fn libpq_escaped(value: &str) -> String {
        let mut out = String::new();
        for c in value.chars() {
            if c == '\\' || c == '\'' || c.is_ascii_whitespace() || c == '\x0b' {
                out.push('\\');
            }
            out.push(c);
        }
        out
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
        fn key_value_values_round_trip(password in "\\PC{0,40}", quoted in any::<bool>()) {
            let written = if quoted { libpq_quoted(&password) } else { libpq_escaped(&password) };
            prop_assume!(quoted || !password.is_empty());
            let pairs = parse_key_value(&format!("host=db password={written} dbname=jobs")).unwrap();
            prop_assert_eq!(pairs.len(), 3);
            prop_assert_eq!(&pairs[1].1, &password);
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
