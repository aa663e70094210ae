//! The service's settings: every one comes from an environment variable (the
//! way docker-compose and the runbook configure it) and can be overridden by
//! the flag of the same name.
//!
//! Validation happens here, at startup, so that a typo in a URL or a negative
//! timeout stops the process with a message naming the variable instead of
//! failing the first job an hour later. Durations are read here too, as
//! text, for the same reason: `dawdle::duration` reads `10s`, `1m`, `1h 30m`,
//! and a number alone as seconds (what the `_SECONDS` variables always took),
//! and a value it refuses is reported with its variable's name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

/// Settings shared by `serve`, `worker` and `migrate`.
#[derive(Debug, Clone, Args)]
pub(crate) struct Settings {
    /// The jobs database. Unset: the embedded PostgreSQL under `.dawdle/`
    /// (or `$DAWDLE_HOME`), database `jobs`.
    #[arg(
        long,
        env = "JOB_QUEUE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) jobs_database_url: Option<String>,

    /// The application's own database (users, orders, outbox). Unset: the
    /// database `app` on the same embedded PostgreSQL.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// Run the worker inside `serve`. `false` (or `0`) starts the API alone;
    /// it keeps deferring jobs, which wait in `todo` until a worker runs.
    #[arg(
        long,
        env = "JOB_QUEUE_ENABLED",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        action = ArgAction::Set,
        value_name = "BOOL"
    )]
    pub(crate) job_queue_enabled: bool,

    /// Address the API listens on (port 0 picks a free port; the chosen
    /// address is logged as `api_listening`).
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8000")]
    pub(crate) bind: SocketAddr,

    /// Development mail transport: every email becomes an `.eml` file here.
    /// Ignored when `SMTP_URL` is set.
    #[arg(
        long,
        env = "EMAIL_DIR",
        default_value = ".dawdle/mail",
        value_name = "DIR"
    )]
    pub(crate) email_dir: PathBuf,

    /// Send email through this SMTP server instead: `smtp://host:port`
    /// (plain), `smtp://host:587?tls=required` (STARTTLS) or `smtps://host:465`.
    #[arg(long, env = "SMTP_URL", value_name = "URL", hide_env_values = true)]
    pub(crate) smtp_url: Option<String>,

    /// How long one SMTP delivery may take, connection included (10s, 1m;
    /// a number alone is seconds).
    #[arg(
        long,
        env = "SMTP_TIMEOUT_SECONDS",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub(crate) smtp_timeout_seconds: String,

    /// The `From:` of every email.
    #[arg(
        long,
        env = "EMAIL_FROM",
        default_value = "Dawdle Shop <no-reply@shop.example>"
    )]
    pub(crate) email_from: String,

    /// The external CRM API that domain events are posted to. The default
    /// points at the discard port of this machine, where nothing listens, so
    /// an unconfigured service fails those jobs visibly as `ConnectionError`.
    #[arg(
        long,
        env = "CRM_WEBHOOK_URL",
        default_value = "http://127.0.0.1:9/crm",
        value_name = "URL"
    )]
    pub(crate) crm_webhook_url: String,

    /// How long one CRM call may take, connection included (10s, 1m; a
    /// number alone is seconds).
    #[arg(
        long,
        env = "CRM_TIMEOUT_SECONDS",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub(crate) crm_timeout_seconds: String,

    /// Write domain events to a transactional outbox in the main database,
    /// relayed to the jobs database, instead of deferring after commit.
    #[arg(
        long,
        env = "OUTBOX_ENABLED",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
        action = ArgAction::Set,
        value_name = "BOOL"
    )]
    pub(crate) outbox_enabled: bool,

    /// Time between outbox scans when no notification arrives (5s, 500ms;
    /// a number alone is seconds).
    #[arg(
        long,
        env = "OUTBOX_POLL_INTERVAL_SECONDS",
        default_value = "5s",
        value_name = "DURATION"
    )]
    pub(crate) outbox_poll_interval_seconds: String,

    /// Log format on stdout.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub(crate) log_format: LogFormat,

    /// Retries of a failed email or CRM job before it fails for good.
    #[arg(
        long,
        env = "JOB_MAX_RETRIES",
        default_value_t = 5,
        value_name = "COUNT"
    )]
    pub(crate) job_max_retries: u32,

    /// Base of the exponential backoff, in seconds: retry n waits base^n
    /// (2 → 2 s, 4 s, 8 s, …). Must be above 1, or the waits would shrink.
    #[arg(
        long,
        env = "JOB_RETRY_BASE_SECONDS",
        default_value_t = 2.0,
        value_name = "SECONDS"
    )]
    pub(crate) job_retry_base_seconds: f64,

    /// Longest wait between two attempts (1h, 90m; a number alone is
    /// seconds).
    #[arg(
        long,
        env = "JOB_RETRY_MAX_WAIT_SECONDS",
        default_value = "1h",
        value_name = "DURATION"
    )]
    pub(crate) job_retry_max_wait_seconds: String,

    /// Jobs the worker runs at the same time.
    #[arg(
        long,
        env = "JOB_CONCURRENCY",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=1000),
        value_name = "COUNT"
    )]
    pub(crate) job_concurrency: u32,

    /// Time between claims when no notification arrives; also how late a
    /// scheduled retry may start (2s, 500ms; a number alone is seconds).
    #[arg(
        long,
        env = "JOB_POLL_INTERVAL_SECONDS",
        default_value = "2s",
        value_name = "DURATION"
    )]
    pub(crate) job_poll_interval_seconds: String,

    /// On shutdown, how long running jobs get to finish before they are put
    /// back for retry (30s, 2m; a number alone is seconds).
    #[arg(
        long,
        env = "JOB_SHUTDOWN_TIMEOUT_SECONDS",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub(crate) job_shutdown_timeout_seconds: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Json,
    Text,
}

/// A setting that cannot be used, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
#[error("read the settings: {variable} {problem}")]
pub(crate) struct InvalidSetting {
    variable: &'static str,
    problem: String,
}

/// Where emails go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EmailDelivery {
    /// Development: `.eml` files in a directory.
    Files { dir: PathBuf },
    /// A real SMTP server.
    Smtp { url: String, timeout: Duration },
}

/// How failed jobs are retried, shared by the tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetrySettings {
    pub(crate) max_retries: u32,
    pub(crate) base_seconds: f64,
    pub(crate) max_wait: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_seconds: 2.0,
            max_wait: Duration::from_secs(3600),
        }
    }
}

impl Settings {
    pub(crate) fn email_delivery(&self) -> Result<EmailDelivery, InvalidSetting> {
        match self.smtp_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(InvalidSetting {
                        variable: "SMTP_URL",
                        problem: format!(
                            "{} is not an smtp:// or smtps:// URL",
                            dawdle::database::redact_password(url)
                        ),
                    });
                }
                Ok(EmailDelivery::Smtp {
                    url: url.to_string(),
                    timeout: duration("SMTP_TIMEOUT_SECONDS", &self.smtp_timeout_seconds)?,
                })
            }
            None => Ok(EmailDelivery::Files {
                dir: self.email_dir.clone(),
            }),
        }
    }

    pub(crate) fn crm_timeout(&self) -> Result<Duration, InvalidSetting> {
        duration("CRM_TIMEOUT_SECONDS", &self.crm_timeout_seconds)
    }

    pub(crate) fn retry(&self) -> Result<RetrySettings, InvalidSetting> {
        let base = self.job_retry_base_seconds;
        if !(base.is_finite() && base > 1.0) {
            return Err(InvalidSetting {
                variable: "JOB_RETRY_BASE_SECONDS",
                problem: format!(
                    "{base} must be a number above 1: retry n waits base^n seconds, which \
                     only grows when the base is above 1"
                ),
            });
        }
        Ok(RetrySettings {
            max_retries: self.job_max_retries,
            base_seconds: base,
            max_wait: duration(
                "JOB_RETRY_MAX_WAIT_SECONDS",
                &self.job_retry_max_wait_seconds,
            )?,
        })
    }

    pub(crate) fn worker_config(&self) -> Result<dawdle::WorkerConfig, InvalidSetting> {
        // Below 10 ms the worker would spin on an idle database.
        let poll_interval = duration("JOB_POLL_INTERVAL_SECONDS", &self.job_poll_interval_seconds)?
            .max(Duration::from_millis(10));
        let shutdown_timeout = duration(
            "JOB_SHUTDOWN_TIMEOUT_SECONDS",
            &self.job_shutdown_timeout_seconds,
        )?;
        Ok(dawdle::WorkerConfig::default()
            .concurrency(self.job_concurrency as usize)
            .poll_interval(poll_interval)
            .shutdown_timeout(shutdown_timeout))
    }

    pub(crate) fn outbox_poll_interval(&self) -> Result<Duration, InvalidSetting> {
        Ok(duration(
            "OUTBOX_POLL_INTERVAL_SECONDS",
            &self.outbox_poll_interval_seconds,
        )?
        .max(Duration::from_millis(10)))
    }

    /// Everything that can be checked without touching the network.
    pub(crate) fn validate(&self) -> Result<(), InvalidSetting> {
        self.email_delivery()?;
        self.crm_timeout()?;
        self.retry()?;
        self.worker_config()?;
        self.outbox_poll_interval()?;
        if !(self.crm_webhook_url.starts_with("http://")
            || self.crm_webhook_url.starts_with("https://"))
        {
            return Err(InvalidSetting {
                variable: "CRM_WEBHOOK_URL",
                problem: format!(
                    "{} is not an http:// or https:// URL",
                    dawdle::database::redact_password(&self.crm_webhook_url)
                ),
            });
        }
        if self.email_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(InvalidSetting {
                variable: "EMAIL_FROM",
                problem: format!(
                    "{} is not an email address",
                    dawdle::text::quote(&self.email_from)
                ),
            });
        }
        Ok(())
    }
}

/// `text` read by `dawdle::duration::parse`; a refusal names `variable`.
fn duration(variable: &'static str, text: &str) -> Result<Duration, InvalidSetting> {
    dawdle::duration::parse(text).map_err(|error| InvalidSetting {
        variable,
        problem: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> Settings {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).unwrap().settings
    }

    #[test]
    fn the_worker_is_disabled_by_false_or_zero() {
        assert!(parse(&[]).job_queue_enabled);
        for value in ["false", "0", "no", "off"] {
            assert!(!parse(&["--job-queue-enabled", value]).job_queue_enabled);
        }
        assert!(parse(&["--job-queue-enabled", "1"]).job_queue_enabled);
    }

    #[test]
    fn smtp_wins_over_the_mail_directory() {
        let files = parse(&["--email-dir", "/tmp/mail"]);
        assert_eq!(
            files.email_delivery().unwrap(),
            EmailDelivery::Files {
                dir: "/tmp/mail".into()
            }
        );
        let smtp = parse(&["--smtp-url", "smtp://mail:25", "--email-dir", "/tmp/mail"]);
        assert!(matches!(
            smtp.email_delivery().unwrap(),
            EmailDelivery::Smtp { url, .. } if url == "smtp://mail:25"
        ));
        let typo = parse(&["--smtp-url", "mail:25"]);
        assert!(typo
            .email_delivery()
            .unwrap_err()
            .to_string()
            .contains("SMTP_URL"));
    }

    #[test]
    fn a_shrinking_backoff_is_refused() {
        let error = parse(&["--job-retry-base-seconds", "0.5"])
            .retry()
            .unwrap_err();
        assert!(
            error.to_string().contains("JOB_RETRY_BASE_SECONDS"),
            "{error}"
        );
        let retry = parse(&["--job-retry-base-seconds", "1.5", "--job-max-retries", "2"])
            .retry()
            .unwrap();
        assert_eq!(retry.max_retries, 2);
        assert_eq!(retry.base_seconds, 1.5);
    }

    #[test]
    fn negative_timeouts_name_their_variable() {
        let error = parse(&["--crm-timeout-seconds=-1"]).validate().unwrap_err();
        assert!(error.to_string().contains("CRM_TIMEOUT_SECONDS"), "{error}");
    }

    #[test]
    fn defaults_are_valid() {
        parse(&[]).validate().unwrap();
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let settings = parse(&[
            "--crm-timeout-seconds",
            "1m",
            "--job-poll-interval-seconds",
            "0.5",
            "--job-shutdown-timeout-seconds",
            "1h 30m",
            "--job-retry-max-wait-seconds",
            "2h",
            "--outbox-poll-interval-seconds",
            "250ms",
        ]);
        assert_eq!(settings.crm_timeout().unwrap(), Duration::from_secs(60));
        let config = settings.worker_config().unwrap();
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5_400));
        assert_eq!(
            settings.retry().unwrap().max_wait,
            Duration::from_secs(7_200)
        );
        assert_eq!(
            settings.outbox_poll_interval().unwrap(),
            Duration::from_millis(250)
        );
        let defaults = parse(&[]);
        assert_eq!(defaults.retry().unwrap(), RetrySettings::default());
        assert_eq!(defaults.crm_timeout().unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn a_bad_duration_is_quoted_in_short_with_its_variable() {
        let huge = format!("5{}", "x".repeat(10_000));
        let error = parse(&[
            "--smtp-url",
            "smtp://mail:25",
            "--smtp-timeout-seconds",
            &huge,
        ])
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("SMTP_TIMEOUT_SECONDS"), "{error}");
        assert!(error.contains("unknown unit"), "{error}");
        assert!(error.chars().count() < 400, "{error}");
    }
}
