//! LISTEN for the schema's notifications: new runnable jobs wake the
//! claiming loop, abort requests reach the running job, a paused queue's
//! held jobs are put back. Notifications are only wake-ups; the poll covers
//! any that are lost.

use std::sync::Arc;

use super::floor::Announced;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::backoff::Backoff;

/// The channels to LISTEN on: one per queue, or the any-queue channel.
pub(super) fn channels(queues: &Option<Vec<String>>) -> Vec<String> {
    match queues {
        None => vec!["procrastinate_any_queue_v1".to_string()],
        Some(queues) => queues
            .iter()
            .map(|queue| format!("procrastinate_queue_v1#{queue}"))
            .collect(),
    }
}

/// What a notification asks of the claiming loop, beyond a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// Abort job `id`.
    Abort(i64),
    /// The queue was paused: put back its held jobs.
    Paused(String),
}

/// Wakes the claiming loop on every notification; reconnects with backoff.
pub(super) async fn listen(
    pool: PgPool,
    channels: Vec<String>,
    wake: Arc<Notify>,
    announced: Announced,
    requests: mpsc::UnboundedSender<Request>,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            let names: Vec<&str> = channels.iter().map(String::as_str).collect();
            listener.listen_all(names).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                // Anything inserted while we were not listening, wherever
                // it lies in claim order.
                announced.job(None);
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            debug!(
                                channel = notification.channel(),
                                payload = notification.payload(),
                                "notification"
                            );
                            match read(notification.payload()) {
                                Ok(request) => {
                                    let _ = requests.send(request);
                                }
                                Err(job_id) => {
                                    announced.job(job_id);
                                    wake.notify_one();
                                }
                            }
                        }
                        // The connection dropped; the next call reconnects.
                        Ok(None) => {
                            warn!("lost the LISTEN connection to the jobs database; reconnecting");
                            wake.notify_one();
                        }
                        Err(error) => {
                            warn!(error = %error, "LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => warn!(error = %error, "failed to LISTEN for new jobs; polling meanwhile"),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// What an `abort_job_requested` or `queue_paused` notification asks, as
/// `Ok`. The others are wake-ups: `Err` with the job one names (`job_inserted`:
/// the first job of a queue that became runnable), `None` when it names
/// none or cannot be read. The payload is parsed once.
fn read(payload: &str) -> Result<Request, Option<i64>> {
    let Ok(payload) = serde_json::from_str::<serde_json::Value>(payload) else {
        return Err(None);
    };
    let request = match payload["type"].as_str() {
        Some("abort_job_requested") => payload["job_id"].as_i64().map(Request::Abort),
        Some("queue_paused") => payload["queue"]
            .as_str()
            .map(|queue| Request::Paused(queue.to_string())),
        _ => None,
    };
    request.ok_or_else(|| payload["job_id"].as_i64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_or_taken_as_wake_ups() {
        let read = |payload: &str| read(payload).ok();
        assert_eq!(
            read(r#"{"type": "abort_job_requested", "job_id": 7}"#),
            Some(Request::Abort(7))
        );
        assert_eq!(
            read(r#"{"type": "queue_paused", "queue": "mail"}"#),
            Some(Request::Paused("mail".into()))
        );
        for wake_up in [
            r#"{"type": "job_inserted", "job_id": 3}"#,
            r#"{"type": "queue_resumed", "queue": "mail"}"#,
            r#"{"type": "queue_paused"}"#,
            r#"{"type": 5}"#,
            "not json",
            "",
        ] {
            assert_eq!(read(wake_up), None, "{wake_up}");
        }
    }

    #[test]
    fn a_wake_up_names_its_job_or_none() {
        let job_id_of = |payload: &str| read(payload).err().flatten();
        assert_eq!(
            job_id_of(r#"{"type": "job_inserted", "job_id": 3}"#),
            Some(3)
        );
        for unnamed in [
            r#"{"type": "job_inserted", "job_id": null}"#,
            r#"{"type": "job_inserted", "job_id": "3"}"#,
            r#"{"type": "queue_resumed", "queue": "mail"}"#,
            "not json",
            "",
        ] {
            assert_eq!(job_id_of(unnamed), None, "{unnamed}");
        }
    }
}
