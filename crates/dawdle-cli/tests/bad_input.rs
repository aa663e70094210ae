//! The `dawdle` binary given bad input: a connection string's secret is
//! never printed, whatever form it takes and whether or not the database
//! answers, and malformed arguments end the command with a short error that
//! quotes at most a bounded, escaped excerpt of them.

use std::ffi::OsStr;
use std::process::{Command, Output};

use dawdle::testing::TestDatabase;
use proptest::prelude::*;

/// Nothing listens on port 1: connections are refused at once.
const UNREACHABLE: &str = "127.0.0.1:1";
/// The longest first line of stderr a bad input may produce.
const MAX_ERROR_LINE: usize = 400;

fn dawdle<I, S>(database_url: &str, args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_dawdle"))
        .args(args)
        .env("JOB_QUEUE_DATABASE_URL", database_url)
        .envs(env.iter().copied())
        .output()
        .expect("run dawdle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails unless neither output stream holds `secret`.
fn assert_hidden(output: &Output, secret: &str, what: &str) {
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = text(bytes);
        assert!(
            !text.contains(secret),
            "{what}: {stream} shows the secret {secret:?}:\n{text}"
        );
    }
}

/// Fails unless the command failed with a short first line on stderr that
/// does not hold `input` whole, and no more than a few lines in all.
fn assert_short_error(output: &Output, input: &str, what: &str) {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{what}: succeeded:\n{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(!first.is_empty(), "{what}: no error message");
    assert!(
        first.chars().count() < MAX_ERROR_LINE,
        "{what}: a first line of {} characters: {}…",
        first.chars().count(),
        first.chars().take(200).collect::<String>()
    );
    assert!(
        stderr.chars().count() < 4 * MAX_ERROR_LINE,
        "{what}: {} characters on stderr",
        stderr.chars().count()
    );
    assert!(
        !stderr.contains(input),
        "{what}: stderr quotes the input whole"
    );
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: stderr has unescaped control characters"
    );
}

/// `value` single-quoted for a libpq `key=value` string.
fn libpq_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `value` percent-encoded for a URL's user info or query.
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Every way a connection string can carry `secret`, each pointing at
/// `host:port` (or a socket directory, for `host`) and `database`.
fn secret_forms(
    host: &str,
    port: u16,
    database: &str,
    secret: &str,
) -> Vec<(&'static str, String)> {
    let encoded = url_encoded(host);
    vec![
        (
            "user info",
            format!(
                "postgresql://postgres:{}@localhost:{port}/{database}?host={encoded}",
                url_encoded(secret)
            ),
        ),
        (
            "password parameter",
            format!(
                "postgresql://postgres@localhost:{port}/{database}?password={}&host={encoded}",
                url_encoded(secret)
            ),
        ),
        (
            "sslpassword parameter",
            format!(
                "postgresql://postgres@localhost:{port}/{database}?sslpassword={}&host={encoded}",
                url_encoded(secret)
            ),
        ),
        (
            "key=value",
            format!(
                "host={} port={port} dbname={database} user=postgres password={}",
                libpq_quoted(host),
                libpq_quoted(secret)
            ),
        ),
    ]
}

/// Connection strings that do not parse, each with `secret` in it.
fn unparsable_forms(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "URL with a bad port",
            format!("postgresql://app:{secret}@127.0.0.1:notaport/jobs"),
        ),
        (
            "unterminated quote",
            format!("host=127.0.0.1 port=1 password='{secret}"),
        ),
        ("bare word", format!("host=127.0.0.1 {secret}")),
    ]
}

fn unreachable_forms(secret: &str) -> Vec<(&'static str, String)> {
    let (host, port) = UNREACHABLE.split_once(':').unwrap();
    secret_forms(host, port.parse().unwrap(), "jobs", secret)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn secrets_are_never_printed_when_the_database_is_unreachable(
        secret in "[A-Za-z0-9]{16,32}",
    ) {
        for (form, url) in unreachable_forms(&secret).into_iter().chain(unparsable_forms(&secret)) {
            let what = format!("{form}: {url}");
            let jobs = dawdle(&url, ["jobs"], &[]);
            prop_assert!(!jobs.status.success(), "{}", what);
            assert_hidden(&jobs, &secret, &what);
            assert_short_error(&jobs, &url, &what);
            let health = dawdle(&url, ["healthcheck", "--json"], &[]);
            prop_assert!(!health.status.success(), "{}", what);
            assert_hidden(&health, &secret, &what);
        }
    }
}

#[test]
fn secrets_with_quotes_spaces_and_escapes_stay_hidden() {
    // Each half is long enough to recognise on its own.
    let secret = r"Fj3kq9Zp' \x2Yt8Wn\\rHv6Lm";
    let halves = ["Fj3kq9Zp", "2Yt8Wn", "rHv6Lm"];
    for (form, url) in unreachable_forms(secret) {
        for args in [&["jobs"][..], &["schema", "check", "--json"]] {
            let output = dawdle(&url, args, &[]);
            assert!(!output.status.success(), "{form}");
            for half in halves {
                assert_hidden(&output, half, form);
            }
        }
        // The same string given as --database-url.
        let output = dawdle("", ["--database-url", url.as_str(), "stats", "--json"], &[]);
        assert!(!output.status.success(), "{form}");
        for half in halves {
            assert_hidden(&output, half, form);
        }
    }
}

#[test]
fn an_unparsable_connection_string_is_reported_without_its_text() {
    let secret = "Vq8rTz2LmN4pXw6s";
    for (form, url) in unparsable_forms(secret) {
        let output = dawdle(&url, ["jobs"], &[]);
        assert_eq!(output.status.code(), Some(1), "{form}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("not shown, as it may hold a password"),
            "{form}: {stderr}"
        );
        assert_hidden(&output, secret, form);
    }
    // A huge one is not echoed either.
    let huge = format!("postgresql://app:{}@h:x/db", "y".repeat(20_000));
    let output = dawdle(&huge, ["jobs"], &[]);
    assert_short_error(&output, &huge, "huge URL");
}

/// A connection string typed where a command or a flag was expected, or
/// held by a variable `--help` shows, is not quoted back with its secret.
#[test]
fn a_connection_string_in_the_wrong_place_is_not_echoed_with_its_secret() {
    let secret = "Vq8rTz2LmN4pXw6s";
    let url = format!("postgresql://app:{secret}@db.internal/jobs");
    for args in [
        vec![url.clone()],
        vec!["jobs".to_string(), url.clone()],
        vec![format!("--database-ur={url}"), "jobs".to_string()],
    ] {
        let output = dawdle(&format!("postgresql://{UNREACHABLE}/jobs"), &args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_hidden(&output, secret, &format!("{args:?}"));
    }
    let help = dawdle(
        &format!("postgresql://{UNREACHABLE}/jobs"),
        ["worker", "--help"],
        &[("JOB_QUEUE_LISTEN_URL", url.as_str())],
    );
    assert_eq!(help.status.code(), Some(0));
    assert_hidden(&help, secret, "worker --help");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_never_printed_when_the_database_answers() {
    let db = TestDatabase::with_schema().await;
    let options = db.connect_options();
    let socket = options
        .get_socket()
        .expect("the test cluster listens on a socket");
    let socket = socket.to_str().unwrap().to_string();
    let port = options.get_port();
    let name = db.name().to_string();
    let secret = "Kd7wQp3ZrX9mTb2N";
    tokio::task::spawn_blocking(move || {
        for (form, url) in secret_forms(&socket, port, &name, secret) {
            // The test cluster trusts local connections, so every form
            // connects: what is printed on success must not show it either.
            for args in [
                &["jobs", "--json"][..],
                &["schema", "check", "--json"],
                &["healthcheck", "--json", "--no-worker"],
            ] {
                let output = dawdle(&url, args, &[]);
                assert!(
                    output.status.success(),
                    "{form} {args:?}: {}",
                    text(&output.stderr)
                );
                assert_hidden(&output, secret, form);
            }
            // Unhealthy without a worker, which is beside the point here.
            assert_hidden(&dawdle(&url, ["stats", "--json"], &[]), secret, form);
            // The worker logs, sqlx's connection logs included.
            let output = dawdle(
                &url,
                ["worker", "--one-shot", "--log-format", "json"],
                &[("RUST_LOG", "debug")],
            );
            assert!(output.status.success(), "{form}: {}", text(&output.stderr));
            assert_hidden(&output, secret, form);
        }
        // A database that does not exist: the server answers with an error.
        let url = format!(
            "host={} port={port} dbname=missing_db user=postgres password={secret}",
            libpq_quoted(&socket)
        );
        let output = dawdle(&url, ["jobs"], &[]);
        assert!(!output.status.success());
        assert!(text(&output.stderr).contains("password=***"));
        assert_hidden(&output, secret, "missing database");
    })
    .await
    .unwrap();
}

#[test]
fn defer_quotes_at_most_an_excerpt_of_bad_input() {
    let url = format!("postgresql://app@{UNREACHABLE}/jobs");
    let huge = "x".repeat(10_000);
    let longest_name = "x".repeat(128);
    let bad_json = format!("{{\"a\": \"{huge}");
    let big_array = format!("[{}]", vec!["1"; 5_000].join(","));
    let big_string = format!("\"{huge}\"");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("huge task name", vec!["defer", &huge], "task name"),
        ("bad JSON", vec!["defer", "t", &bad_json], "not valid JSON"),
        (
            "huge array",
            vec!["defer", "t", &big_array],
            "must be a JSON object",
        ),
        (
            "huge string",
            vec!["defer", &huge, &big_string],
            "must be a JSON object",
        ),
        (
            "huge queue",
            vec!["defer", "t", "--queue", &huge],
            "queue name",
        ),
        (
            "empty lock",
            vec!["defer", &longest_name, "--lock", ""],
            "lock of task",
        ),
        ("negative delay", vec!["defer", "t", "--in=-5"], "--in"),
        (
            "bad time",
            vec!["defer", "t", "--at", &huge],
            "invalid value",
        ),
    ];
    for (what, args, expected) in cases {
        let output = dawdle(&url, &args, &[]);
        // Rejected before any connection: the error is about the input.
        assert_short_error(&output, &huge, what);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains(&"x".repeat(100)), "{what}: {stderr}");
    }
}

#[test]
fn malformed_arguments_get_a_short_usage_error() {
    let url = format!("postgresql://app@{UNREACHABLE}/jobs");
    let huge = "z".repeat(10_000);
    let flag = format!("--{huge}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("bogus status", vec!["jobs", "--status", "bogus"]),
        ("huge status", vec!["jobs", "--status", &huge]),
        ("non-numeric limit", vec!["jobs", "--limit", &huge]),
        ("non-numeric retry id", vec!["retry", "notanumber"]),
        ("huge retry id", vec!["retry", &huge]),
        ("huge job id", vec!["job", &huge]),
        ("huge cancel id", vec!["cancel", &huge]),
        ("negative purge age", vec!["purge", "--older-than", "-1"]),
        ("huge purge age", vec!["purge", "--older-than", &huge]),
        ("huge subcommand", vec![&huge]),
        ("huge flag", vec!["jobs", &flag]),
        ("huge extra argument", vec!["stats", &huge]),
        ("huge retention", vec!["worker", "--delete-finished", &huge]),
        ("huge concurrency", vec!["worker", "--concurrency", &huge]),
        ("empty queue name", vec!["worker", "--queues", ","]),
        ("huge queue name", vec!["worker", "--queues", &huge]),
        ("huge time", vec!["defer", "t", "--at", &huge]),
    ];
    for (what, args) in cases {
        let output = dawdle(&url, &args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{what}: {}",
            text(&output.stderr)
        );
        assert_short_error(&output, &huge, what);
    }
    let output = dawdle(&url, ["purge", "--older-than=-1"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_short_error(&output, "-1 days", "negative purge age");
    assert!(text(&output.stderr).contains("is negative"));
    // A negative number after a space is the flag's value, judged by it,
    // not an unknown flag.
    for args in [
        &["purge", "--older-than", "-1"][..],
        &["defer", "t", "--in", "-5"],
        &["jobs", "--limit", "-1"],
        &["failed", "--limit=0"],
        &["worker", "--concurrency", "-1"],
    ] {
        let output = dawdle(&url, args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("invalid value") && !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn worker_settings_quote_at_most_an_excerpt() {
    let url = format!("postgresql://app@{UNREACHABLE}/jobs");
    let huge = "w".repeat(10_000);
    let periodic_task = format!("{huge}=* * * * *");
    let huge_unit = format!("5{huge}");
    let negative = format!("--stalled-after=-{huge}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "huge time zone",
            vec!["worker", "--time-zone", &huge],
            "time zone",
        ),
        (
            "huge periodic",
            vec!["worker", "--periodic", &huge],
            "TASK=CRON",
        ),
        (
            "huge periodic task",
            vec!["worker", "--periodic", &periodic_task],
            "task name",
        ),
        (
            "huge poll interval",
            vec!["worker", "--poll-interval", &huge],
            "not a duration",
        ),
        (
            "huge shutdown timeout unit",
            vec!["worker", "--shutdown-timeout", &huge_unit],
            "unknown unit",
        ),
        (
            "negative stalled-after",
            vec!["worker", &negative],
            "is negative",
        ),
    ];
    for (what, args, expected) in cases {
        let output = dawdle(&url, &args, &[]);
        assert_short_error(&output, &huge, what);
        assert!(text(&output.stderr).contains(expected), "{what}");
    }
}

#[test]
fn operations_quote_at_most_an_excerpt() {
    let url = format!("postgresql://app@{UNREACHABLE}/jobs");
    let huge = "d".repeat(10_000);
    // A number with a huge unit, and a huge number with no unit.
    let huge_unit = format!("5{huge}");
    let huge_number = "9".repeat(10_000);
    let cases: Vec<(&str, Vec<&str>, i32)> = vec![
        ("huge stuck-after", vec!["stats", "--stuck-after", &huge], 2),
        (
            "huge stuck-after unit",
            vec!["stats", "--stuck-after", &huge_unit],
            2,
        ),
        (
            "huge stuck-after number",
            vec!["stats", "--stuck-after", &huge_number],
            2,
        ),
        (
            "huge reset age",
            vec!["reset-stalled", "--older-than", &huge],
            2,
        ),
        (
            "huge worker-within",
            vec!["healthcheck", "--worker-within", &huge],
            2,
        ),
        ("huge since", vec!["failed", "--since", &huge], 2),
        ("huge since unit", vec!["failed", "--since", &huge_unit], 2),
        (
            "huge since number",
            vec!["failed", "--since", &huge_number],
            2,
        ),
        ("huge check", vec!["check", &huge], 2),
        ("huge status", vec!["jobs", "--status", &huge], 2),
    ];
    for (what, args, code) in cases {
        let output = dawdle(&url, &args, &[]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{what}: {}",
            text(&output.stderr)
        );
        for input in [&huge, &huge_unit, &huge_number] {
            assert_short_error(&output, input, what);
        }
        let stderr = text(&output.stderr);
        for run in ["d", "9"] {
            assert!(!stderr.contains(&run.repeat(100)), "{what}: {stderr}");
        }
    }
    // A duration ago further back than any date is refused, not a panic.
    let output = dawdle(&url, ["failed", "--since", "1000000000d"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("too long ago"));
    // The start of the input is quoted, escaped, so that one can tell it.
    let output = dawdle(&url, ["check", "no\"such\u{1b}[2J"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains(r#"no check named "no\"such\u{1b}[2J""#),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn periodic_schedules_quote_at_most_an_excerpt() {
    let url = format!("postgresql://app@{UNREACHABLE}/jobs");
    let huge = "c".repeat(10_000);
    let number = "7".repeat(10_000);
    let cases: Vec<(&str, String)> = vec![
        ("huge schedule", format!("dawdle.noop={huge}")),
        ("huge minute", format!("dawdle.noop={huge} * * * *")),
        ("huge number", format!("dawdle.noop={number} * * * *")),
        ("huge step", format!("dawdle.noop=*/{number} * * * *")),
        ("huge seconds", format!("dawdle.noop=* * * * * {huge}")),
    ];
    for (what, periodic) in cases {
        let output = dawdle(&url, ["worker", "--one-shot", "--periodic", &periodic], &[]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{what}: {}",
            text(&output.stderr)
        );
        assert_short_error(&output, &periodic, what);
        let stderr = text(&output.stderr);
        assert!(stderr.contains("invalid cron schedule"), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        for run in ["c", "7"] {
            assert!(!stderr.contains(&run.repeat(100)), "{what}: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_commands_quote_at_most_an_excerpt() {
    let db = TestDatabase::with_schema().await;
    let url = db.url();
    tokio::task::spawn_blocking(move || {
        let huge = "s".repeat(10_000);
        let status = format!("status={huge}");
        let filter = format!("{huge}=1");
        let id = format!("id={huge}");
        let escape = "\u{1b}[2J\u{1b}[H";
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("huge command", vec!["shell", &huge]),
            ("huge status", vec!["shell", "list_jobs", &status]),
            ("huge filter", vec!["shell", "list_jobs", &filter]),
            ("huge id filter", vec!["shell", "list_jobs", &id]),
            ("huge job id", vec!["shell", "job", &huge]),
            ("huge check", vec!["shell", "check", &huge]),
            ("huge help topic", vec!["shell", "help", &huge]),
            ("terminal escape", vec!["shell", escape]),
        ];
        for (what, args) in cases {
            let output = dawdle(&url, &args, &[]);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{what}: {}",
                text(&output.stderr)
            );
            assert_short_error(&output, &huge, what);
        }
    })
    .await
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn any_overlong_task_name_gets_a_short_error(
        name in proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 129..3000)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
    ) {
        let url = format!("postgresql://app@{UNREACHABLE}/jobs");
        let output = dawdle(&url, ["defer", "--", name.as_str()], &[]);
        assert_short_error(&output, &name, "random task name");
    }
}
