//! Telling the external CRM about domain events: a JSON POST to its webhook,
//! with timeouts, and the event key as `Idempotency-Key` so that the CRM can
//! drop the duplicates that at-least-once delivery allows.

use std::time::Duration;

use dawdle::task_error::{CONNECTION_ERROR, GENERIC_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR};
use dawdle::{JobContext, Task, TaskError};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::environment;
use crate::domain::DomainEvent;

/// The longest part of an error answer kept in the job's error message.
const MAX_ERROR_BODY: usize = 500;

/// Post one domain event to the CRM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NotifyCrm {
    pub(crate) event_key: String,
    pub(crate) event: DomainEvent,
}

impl Task for NotifyCrm {
    const NAME: &'static str = "crm.notify_event";
    const QUEUE: &'static str = "crm";

    fn queueing_lock(&self) -> Option<String> {
        Some(format!("{}:{}", Self::NAME, self.event_key))
    }

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let environment = environment(&ctx)?;
        let body = serde_json::json!({
            "event_key": self.event_key,
            "event": self.event,
        });
        environment.crm.post_event(&self.event_key, &body).await?;
        info!(job_id = ctx.job_id, event_key = %self.event_key,
              event = self.event.type_name(), "crm_notified");
        Ok(())
    }
}

/// The CRM's webhook.
#[derive(Clone)]
pub(crate) struct CrmClient {
    http: reqwest::Client,
    /// The URL to post to, with whatever secret it carries (user info, a
    /// `?token=`): only ever sent, never shown.
    endpoint: String,
    /// The URL as messages show it: `dawdle::database::redact_password`.
    /// Error messages are stored in the jobs database's events, which more
    /// people read than the service's configuration.
    display_url: String,
}

// By hand: the URL may hold a secret.
impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

/// A call that did not get an answer.
#[derive(Debug, thiserror::Error)]
#[error("call the CRM API at {url}")]
struct CallFailed {
    url: String,
    #[source]
    source: reqwest::Error,
}

/// An answer that was not a success.
#[derive(Debug, thiserror::Error)]
#[error("the CRM API at {url} answered {status}: {body}")]
struct Refused {
    url: String,
    status: StatusCode,
    body: String,
}

impl CrmClient {
    /// `timeout` bounds each call as a whole and its connection attempt.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!(
                "dawdle-reference-service/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            endpoint: url.to_string(),
            display_url: dawdle::database::redact_password(url),
        })
    }

    /// The webhook's URL with its secrets hidden.
    pub(crate) fn url(&self) -> &str {
        &self.display_url
    }

    pub(crate) async fn post_event(
        &self,
        idempotency_key: &str,
        body: &serde_json::Value,
    ) -> Result<(), TaskError> {
        let response = self
            .http
            .post(&self.endpoint)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .map_err(|source| {
                let kind = transport_error_kind(&source);
                TaskError::from_error(
                    kind,
                    &CallFailed {
                        url: self.display_url.clone(),
                        // Its message would repeat the URL whole.
                        source: source.without_url(),
                    },
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > MAX_ERROR_BODY {
            let cut = (0..=MAX_ERROR_BODY)
                .rev()
                .find(|index| body.is_char_boundary(*index))
                .unwrap_or(0);
            body.truncate(cut);
            body.push('…');
        }
        let refused = Refused {
            url: self.display_url.clone(),
            status,
            body,
        };
        Err(TaskError::from_error(status_kind(status), &refused))
    }
}

/// The kind of a call that got no answer.
fn transport_error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        TIMEOUT_ERROR
    } else if error.is_builder() {
        VALIDATION_ERROR
    } else {
        // Refused, reset, DNS, TLS: the service is not reachable now.
        CONNECTION_ERROR
    }
}

/// The kind of an answer that is not a success.
fn status_kind(status: StatusCode) -> &'static str {
    match status {
        // "Too slow" and "slow down" are both overload: back off and retry.
        StatusCode::REQUEST_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::GATEWAY_TIMEOUT => TIMEOUT_ERROR,
        // The CRM refuses this request as it is: retrying sends the same.
        status if status.is_client_error() => VALIDATION_ERROR,
        // The service is down or broken for now.
        status if status.is_server_error() => CONNECTION_ERROR,
        // A redirect reqwest did not follow, or an informational answer.
        _ => GENERIC_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::Router;
    use tokio::net::TcpListener;

    /// A CRM that answers every call with `status` after `delay`.
    async fn crm(status: StatusCode, delay: Duration) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let app = Router::new().route(
            "/events",
            post(move |headers: HeaderMap| async move {
                tokio::time::sleep(delay).await;
                let key = headers
                    .get("idempotency-key")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("missing")
                    .to_string();
                (status, format!("key {key}"))
            }),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, server)
    }

    async fn call(url: &str, timeout: Duration) -> Result<(), TaskError> {
        CrmClient::new(url, timeout)
            .unwrap()
            .post_event("user-1-registered", &serde_json::json!({"a": 1}))
            .await
    }

    #[tokio::test]
    async fn answers_map_to_the_runbook_kinds() {
        for (status, kind, retryable) in [
            (StatusCode::BAD_REQUEST, "ValidationError", false),
            (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", false),
            (StatusCode::TOO_MANY_REQUESTS, "TimeoutError", true),
            (StatusCode::SERVICE_UNAVAILABLE, "ConnectionError", true),
            (StatusCode::INTERNAL_SERVER_ERROR, "ConnectionError", true),
        ] {
            let (url, server) = crm(status, Duration::ZERO).await;
            let error = call(&url, Duration::from_secs(5)).await.unwrap_err();
            server.abort();
            assert_eq!(error.kind(), kind, "{status}: {}", error.traceback());
            assert_eq!(error.is_retryable(), retryable, "{status}");
            // The CRM's answer (here, the key it received) is in the message.
            assert!(error.message().contains("key user-1-registered"), "{error}");
        }
        let (url, server) = crm(StatusCode::ACCEPTED, Duration::ZERO).await;
        call(&url, Duration::from_secs(5)).await.unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_error_with_its_cause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        drop(listener);
        let error = call(&url, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(error.kind(), "ConnectionError", "{}", error.traceback());
        assert!(error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("call the CRM API at http://127.0.0.1:"),
            "{error}"
        );
        assert!(
            error.traceback().contains("caused by:"),
            "{}",
            error.traceback()
        );
    }

    #[tokio::test]
    async fn the_secrets_of_the_crm_url_are_never_stored_in_an_error() {
        let password = "Pw7kQz2sEcrEt";
        let token = "Tk4mVb9tOkEn";
        let with_secrets = |url: &str| {
            let address = url.strip_prefix("http://").unwrap();
            format!("http://crm:{password}@{address}?token={token}&v=1")
        };
        // Nothing listening: the call gets no answer.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unreachable = format!("http://{}/events", listener.local_addr().unwrap());
        drop(listener);
        let refused = call(&with_secrets(&unreachable), Duration::from_secs(5))
            .await
            .unwrap_err();
        // An answer that is not a success.
        let (down, down_server) = crm(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO).await;
        let answered = call(&with_secrets(&down), Duration::from_secs(5))
            .await
            .unwrap_err();
        down_server.abort();
        // No answer in time.
        let (slow, slow_server) = crm(StatusCode::OK, Duration::from_secs(30)).await;
        let timed_out = call(&with_secrets(&slow), Duration::from_millis(200))
            .await
            .unwrap_err();
        slow_server.abort();
        for (what, error) in [
            ("refused", refused),
            ("answered 503", answered),
            ("timed out", timed_out),
        ] {
            // What an `error` event stores.
            for stored in [error.kind(), error.message(), error.traceback()] {
                for secret in [password, token] {
                    assert!(!stored.contains(secret), "{what}: {stored}");
                }
            }
            assert!(
                error.message().contains("crm:***@127.0.0.1:"),
                "{what}: {}",
                error.message()
            );
            assert!(
                error.message().contains("token=***&v=1"),
                "{what}: {}",
                error.message()
            );
        }
        let client = CrmClient::new(&with_secrets(&unreachable), Duration::from_secs(1)).unwrap();
        for shown in [client.url().to_string(), format!("{client:?}")] {
            for secret in [password, token] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[tokio::test]
    async fn a_slow_crm_is_a_timeout_error() {
        let (url, server) = crm(StatusCode::OK, Duration::from_secs(30)).await;
        let error = call(&url, Duration::from_millis(200)).await.unwrap_err();
        server.abort();
        assert_eq!(error.kind(), "TimeoutError", "{}", error.traceback());
        assert!(error.is_retryable());
    }
}
