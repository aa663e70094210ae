//! LISTEN for the schema's notifications: new runnable jobs wake the
//! claiming loop, abort requests reach the running job. Notifications are
//! only wake-ups; the poll covers any that are lost.

use std::sync::Arc;

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

/// Wakes the claiming loop on every notification; reconnects with backoff.
pub(super) async fn listen(
    pool: PgPool,
    channels: Vec<String>,
    wake: Arc<Notify>,
    abort_requests: mpsc::UnboundedSender<i64>,
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
                // Anything inserted while we were not listening.
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            debug!(
                                channel = notification.channel(),
                                payload = notification.payload(),
                                "notification"
                            );
                            match abort_request(notification.payload()) {
                                Some(job_id) => {
                                    let _ = abort_requests.send(job_id);
                                }
                                None => wake.notify_one(),
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

/// The job id of an `abort_job_requested` notification.
fn abort_request(payload: &str) -> Option<i64> {
    let payload: serde_json::Value = serde_json::from_str(payload).ok()?;
    if payload["type"] != "abort_job_requested" {
        return None;
    }
    payload["job_id"].as_i64()
}
