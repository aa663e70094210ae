//! Email tasks, and the mailer they send through: SMTP for real, `.eml`
//! files for development.
//!
//! A message's Message-ID is derived from its event, and the main database
//! records each one sent (`email_deliveries`), so a job that runs twice (a
//! duplicate relay, a retry after a lost outcome) sends once. Only a crash
//! between the mail server accepting a message and the record being written
//! can still send it twice; mail clients collapse such twins by Message-ID.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dawdle::task_error::{CONNECTION_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR};
use dawdle::{JobContext, Task, TaskError};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{database_error, environment, Environment};
use crate::config::EmailDelivery;

/// Domain of the Message-IDs this service makes.
const MESSAGE_ID_DOMAIN: &str = "reference-service.dawdle";

/// Welcome a newly registered user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendWelcomeEmail {
    pub(crate) event_key: String,
    pub(crate) user_id: i64,
    pub(crate) email: String,
    pub(crate) name: String,
}

impl Task for SendWelcomeEmail {
    const NAME: &'static str = "email.send_welcome";
    const QUEUE: &'static str = "email";

    fn queueing_lock(&self) -> Option<String> {
        Some(format!("{}:{}", Self::NAME, self.event_key))
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let body = format!(
            "Hello {},\n\nwelcome aboard! Your account (user #{}) is ready.\n\n-- The Dawdle Shop\n",
            self.name, self.user_id
        );
        let email = Email {
            message_id: message_id(&self.event_key, "welcome"),
            to: mailbox(Some(&self.name), &self.email)?,
            subject: "Welcome to the Dawdle Shop".to_string(),
            body,
        };
        deliver(environment(&ctx)?, email, ctx.job_id).await
    }
}

/// Confirm an order to the user who placed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendOrderConfirmation {
    pub(crate) event_key: String,
    pub(crate) order_id: i64,
    pub(crate) email: String,
    pub(crate) total_cents: i64,
    pub(crate) item_count: i64,
}

impl Task for SendOrderConfirmation {
    const NAME: &'static str = "email.send_order_confirmation";
    const QUEUE: &'static str = "email";

    fn queueing_lock(&self) -> Option<String> {
        Some(format!("{}:{}", Self::NAME, self.event_key))
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let body = format!(
            "Thank you for your order #{}.\n\nItems: {}\nTotal: {}.{:02}\n\n-- The Dawdle Shop\n",
            self.order_id,
            self.item_count,
            self.total_cents / 100,
            self.total_cents % 100
        );
        let email = Email {
            message_id: message_id(&self.event_key, "order-confirmation"),
            to: mailbox(None, &self.email)?,
            subject: format!("Your order #{}", self.order_id),
            body,
        };
        deliver(environment(&ctx)?, email, ctx.job_id).await
    }
}

/// A plain-text email about to be sent.
#[derive(Debug)]
struct Email {
    message_id: String,
    to: Mailbox,
    subject: String,
    body: String,
}

fn message_id(event_key: &str, purpose: &str) -> String {
    format!("<{event_key}.{purpose}@{MESSAGE_ID_DOMAIN}>")
}

/// A recipient; a malformed address is bad job arguments.
fn mailbox(name: Option<&str>, address: &str) -> Result<Mailbox, TaskError> {
    let address = address.parse::<lettre::Address>().map_err(|error| {
        TaskError::from_error(
            VALIDATION_ERROR,
            &BadRecipient {
                address: address.to_string(),
                source: error,
            },
        )
    })?;
    Ok(Mailbox::new(name.map(str::to_string), address))
}

#[derive(Debug, thiserror::Error)]
#[error("use {address:?} as a recipient")]
struct BadRecipient {
    address: String,
    #[source]
    source: lettre::address::AddressError,
}

/// Sends `email` unless it was sent before, then records it.
async fn deliver(environment: &Environment, email: Email, job_id: i64) -> Result<(), TaskError> {
    let already: Option<bool> =
        sqlx::query_scalar("SELECT true FROM email_deliveries WHERE message_id = $1")
            .bind(&email.message_id)
            .fetch_optional(&environment.main)
            .await
            .map_err(database_error)?;
    if already.is_some() {
        info!(job_id, message_id = %email.message_id,
              "email already sent by an earlier run; not sending it twice");
        return Ok(());
    }
    let recipient = email.to.email.to_string();
    let message_id = email.message_id.clone();
    environment.mailer.send(email).await?;
    sqlx::query(
        "INSERT INTO email_deliveries (message_id, recipient) VALUES ($1, $2)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&message_id)
    .bind(&recipient)
    .execute(&environment.main)
    .await
    .map_err(database_error)?;
    info!(job_id, message_id = %message_id, to = %recipient, "email_sent");
    Ok(())
}

/// Where emails go: a real SMTP server, or files for development.
pub(crate) enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        server: String,
        timeout: Duration,
        from: Mailbox,
    },
    Files {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
        from: Mailbox,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp {
                server, timeout, ..
            } => f
                .debug_struct("Smtp")
                .field("server", server)
                .field("timeout", timeout)
                .finish_non_exhaustive(),
            Mailer::Files { dir, .. } => f
                .debug_struct("Files")
                .field("dir", dir)
                .finish_non_exhaustive(),
        }
    }
}

/// Failures to set up the mailer, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailerError {
    #[error("create the mail directory {dir}: {source}")]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("use SMTP_URL {url}: {source}")]
    Smtp {
        url: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("use EMAIL_FROM {from}: {source}")]
    From {
        from: String,
        #[source]
        source: lettre::address::AddressError,
    },
}

/// A failed delivery, as the cause chain's first line.
#[derive(Debug, thiserror::Error)]
#[error("send email {message_id} to {to} through {via}")]
struct SendFailed {
    message_id: String,
    to: String,
    via: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Mailer {
    pub(crate) fn new(delivery: &EmailDelivery, from: &str) -> Result<Self, MailerError> {
        let from = from
            .parse::<Mailbox>()
            .map_err(|source| MailerError::From {
                from: dawdle::text::quote(from),
                source,
            })?;
        match delivery {
            EmailDelivery::Files { dir } => {
                std::fs::create_dir_all(dir).map_err(|source| MailerError::Directory {
                    dir: dir.clone(),
                    source,
                })?;
                Ok(Mailer::Files {
                    transport: AsyncFileTransport::new(dir),
                    dir: dir.clone(),
                    from,
                })
            }
            EmailDelivery::Smtp { url, timeout } => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|source| MailerError::Smtp {
                        url: dawdle::database::redact_password(url),
                        source,
                    })?
                    .timeout(Some(*timeout))
                    .build();
                Ok(Mailer::Smtp {
                    transport,
                    server: dawdle::database::redact_password(url),
                    timeout: *timeout,
                    from,
                })
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Mailer::Smtp { server, .. } => server.clone(),
            Mailer::Files { dir, .. } => format!("files in {}", dir.display()),
        }
    }

    fn from(&self) -> &Mailbox {
        match self {
            Mailer::Smtp { from, .. } | Mailer::Files { from, .. } => from,
        }
    }

    async fn send(&self, email: Email) -> Result<(), TaskError> {
        let failed = |via: &str, source: Box<dyn std::error::Error + Send + Sync>| SendFailed {
            message_id: email.message_id.clone(),
            to: email.to.to_string(),
            via: via.to_string(),
            source,
        };
        let message = Message::builder()
            .from(self.from().clone())
            .to(email.to.clone())
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|error| {
                TaskError::from_error(
                    VALIDATION_ERROR,
                    &failed("the message builder", Box::new(error)),
                )
            })?;
        match self {
            Mailer::Smtp {
                transport,
                server,
                timeout,
                ..
            } => {
                // The transport's own timeout covers connecting only; this
                // one covers the whole conversation with the server.
                match tokio::time::timeout(*timeout, transport.send(message)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => {
                        let kind = smtp_error_kind(&error);
                        Err(TaskError::from_error(
                            kind,
                            &failed(server, Box::new(error)),
                        ))
                    }
                    Err(elapsed) => Err(TaskError::from_error(
                        TIMEOUT_ERROR,
                        &failed(server, Box::new(elapsed)),
                    )),
                }
            }
            Mailer::Files { transport, dir, .. } => {
                transport.send(message).await.map(drop).map_err(|error| {
                    // The directory stands in for the mail server: not being
                    // able to write there is the server being unavailable.
                    TaskError::from_error(
                        CONNECTION_ERROR,
                        &failed(&dir_label(dir), Box::new(error)),
                    )
                })
            }
        }
    }
}

fn dir_label(dir: &Path) -> String {
    format!("the mail directory {}", dir.display())
}

/// The runbook's kind for an SMTP failure: a permanent rejection (5xx, such
/// as an unknown mailbox) will not change on retry; everything else (the
/// server unreachable, TLS, 4xx "try again later") may.
fn smtp_error_kind(error: &lettre::transport::smtp::Error) -> &'static str {
    if error.is_timeout() {
        TIMEOUT_ERROR
    } else if error.is_permanent() {
        VALIDATION_ERROR
    } else {
        CONNECTION_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    fn welcome() -> Email {
        Email {
            message_id: message_id("user-1-registered", "welcome"),
            to: mailbox(Some("Ada"), "ada@example.com").unwrap(),
            subject: "Welcome".into(),
            body: "Hello Ada\n".into(),
        }
    }

    fn smtp(port: u16, timeout: Duration) -> Mailer {
        Mailer::new(
            &EmailDelivery::Smtp {
                url: format!("smtp://127.0.0.1:{port}"),
                timeout,
            },
            "Shop <shop@example.com>",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_file_transport_writes_an_eml_file() {
        let dir = std::env::temp_dir().join(format!("reference-mail-{}", std::process::id()));
        let mailer = Mailer::new(
            &EmailDelivery::Files { dir: dir.clone() },
            "Shop <shop@example.com>",
        )
        .unwrap();
        mailer.send(welcome()).await.unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            text.contains("To: \"Ada\" <ada@example.com>")
                || text.contains("To: Ada <ada@example.com>"),
            "{text}"
        );
        assert!(
            text.contains("Message-ID: <user-1-registered.welcome@"),
            "{text}"
        );
        assert!(text.contains("Hello Ada"), "{text}");
    }

    #[tokio::test]
    async fn an_smtp_server_that_refuses_the_connection_is_a_connection_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = smtp(port, Duration::from_secs(5))
            .send(welcome())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "ConnectionError", "{}", error.traceback());
        assert!(error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("send email <user-1-registered.welcome@"),
            "{error}"
        );
        assert!(
            error.traceback().contains("caused by:"),
            "{}",
            error.traceback()
        );
    }

    #[tokio::test]
    async fn an_smtp_server_that_never_answers_is_a_timeout_error() {
        // Accepts the connection, then never sends the greeting.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let error = smtp(port, Duration::from_millis(300))
            .send(welcome())
            .await
            .unwrap_err();
        silent.abort();
        assert_eq!(error.kind(), "TimeoutError", "{}", error.traceback());
    }

    #[tokio::test]
    async fn an_smtp_server_that_rejects_the_recipient_is_a_validation_error() {
        // A minimal SMTP conversation ending in a permanent rejection (550).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] =
                    match line.split(' ').next().unwrap_or("").to_uppercase().as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "MAIL" => b"250 ok\r\n",
                        "RCPT" => b"550 no such mailbox\r\n",
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 ok\r\n",
                    };
                write.write_all(reply).await.unwrap();
            }
        });
        let error = smtp(port, Duration::from_secs(5))
            .send(welcome())
            .await
            .unwrap_err();
        server.abort();
        assert_eq!(error.kind(), "ValidationError", "{}", error.traceback());
        assert!(!error.is_retryable());
    }

    #[tokio::test]
    async fn an_email_delivered_once_is_not_sent_again() {
        let main = dawdle::testing::TestDatabase::empty().await;
        let dir = std::env::temp_dir().join(format!("reference-dedup-{}", std::process::id()));
        let environment =
            super::super::tests::environment(&main, &dir, crate::config::RetrySettings::default())
                .await;
        // A duplicate job (a redelivered outbox event) runs the same email:
        // the task run twice through the kit, as two jobs.
        let task = SendWelcomeEmail {
            event_key: "user-1-registered".into(),
            user_id: 1,
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let runner = dawdle::testing::TaskRunner::new(main.pool()).state(environment);
        for job_id in [1, 2] {
            let run = runner.clone().job_id(job_id).run(task.clone()).await;
            assert!(run.result.is_ok(), "job {job_id}: {:?}", run.result);
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files, 1);
        let recorded: Vec<(String, String)> =
            sqlx::query_as("SELECT message_id, recipient FROM email_deliveries")
                .fetch_all(main.pool())
                .await
                .unwrap();
        assert_eq!(
            recorded,
            [(
                "<user-1-registered.welcome@reference-service.dawdle>".to_string(),
                "ada@example.com".to_string()
            )]
        );
    }

    #[test]
    fn a_malformed_recipient_is_a_validation_error() {
        let error = mailbox(None, "not an address").unwrap_err();
        assert_eq!(error.kind(), "ValidationError");
        assert!(!error.is_retryable());
    }
}
