//! The SQL floor of `bench latency`: the least a PostgreSQL queue can do to
//! pick up a job, measured beside the worker in the same run.
//!
//! One connection LISTENs on the queue's channel. On each notification it
//! claims waiting jobs with one `UPDATE … FOR UPDATE SKIP LOCKED` in claim
//! order and marks them succeeded with a second `UPDATE`, until a claim
//! finds nothing. No worker row, no locks, no retries, no history beyond the
//! schema's own triggers: what remains is the notification, the claim and
//! the commits every queue on this schema pays. It runs on a thread and a
//! runtime of its own, apart from the deferring client.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{oneshot, watch};

use super::BenchError;
use crate::worker::SynchronousCommit;

/// Waiting jobs of `$1` in claim order, taken and started.
const CLAIM: &str = "UPDATE procrastinate_jobs SET status = 'doing'
     WHERE id IN (SELECT id FROM procrastinate_jobs
                  WHERE status = 'todo' AND queue_name = $1
                    AND (scheduled_at IS NULL OR scheduled_at <= now())
                  ORDER BY priority DESC, id
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED)
     RETURNING id";

/// The jobs just claimed, finished.
const FINISH: &str = "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = ANY($1)";

/// Jobs per claim: enough that one claim takes whatever waits, so the
/// floor never falls behind for want of a bigger batch.
const BATCH: i64 = 1000;

/// A notification lost to a reconnect would leave jobs waiting: look anyway
/// this often.
const POLL: Duration = Duration::from_secs(1);

/// The floor's consumer, running until stopped.
pub(super) struct SqlFloor {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl SqlFloor {
    /// Starts the consumer on `queue`; returns once it listens.
    pub(super) async fn start(
        options: PgConnectOptions,
        queue: &'static str,
        commit: SynchronousCommit,
    ) -> Result<SqlFloor, BenchError> {
        let options = match commit {
            SynchronousCommit::On => options,
            SynchronousCommit::Off => options.options([("synchronous_commit", "off")]),
        };
        let (stop, stopped) = watch::channel(false);
        let (ready, listening) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sql-floor".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| format!("start its runtime: {error}"))?;
                runtime.block_on(consume(options, queue, ready, stopped))
            })
            .map_err(|source| BenchError::Io {
                action: "start the SQL floor's thread".to_string(),
                source,
            })?;
        let mut floor = SqlFloor {
            stop,
            thread: Some(thread),
        };
        match tokio::time::timeout(Duration::from_secs(60), listening).await {
            Ok(Ok(())) => Ok(floor),
            Ok(Err(_)) => Err(BenchError::Check(format!(
                "the SQL floor stopped before it listened: {}",
                floor.exit_reason().unwrap_or_default()
            ))),
            Err(_) => Err(BenchError::Check(
                "the SQL floor did not listen within 60 s".to_string(),
            )),
        }
    }

    /// Why the consumer stopped, if it has.
    pub(super) fn exit_reason(&mut self) -> Option<String> {
        if !self.thread.as_ref()?.is_finished() {
            return None;
        }
        let thread = self.thread.take()?;
        Some(match thread.join() {
            Ok(Ok(())) => "it stopped".to_string(),
            Ok(Err(why)) => why,
            Err(_) => "its thread panicked".to_string(),
        })
    }

    /// Stops the consumer and waits for its thread.
    pub(super) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

async fn consume(
    options: PgConnectOptions,
    queue: &'static str,
    ready: oneshot::Sender<()>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(|error| format!("connect its listener: {error}"))?;
    listener
        .listen(&format!("procrastinate_queue_v1#{queue}"))
        .await
        .map_err(|error| format!("LISTEN: {error}"))?;
    let _ = ready.send(());
    loop {
        loop {
            let ids: Vec<i64> = sqlx::query_scalar(CLAIM)
                .bind(queue)
                .bind(BATCH)
                .fetch_all(&mut listener)
                .await
                .map_err(|error| format!("claim: {error}"))?;
            if ids.is_empty() {
                break;
            }
            sqlx::query(FINISH)
                .bind(&ids)
                .execute(&mut listener)
                .await
                .map_err(|error| format!("finish: {error}"))?;
        }
        tokio::select! {
            notification = listener.recv() => {
                notification.map_err(|error| format!("wait for a notification: {error}"))?;
                // Those that came meanwhile are answered by the same claims.
                while listener.next_buffered().is_some() {}
            }
            _ = stopped.changed() => return Ok(()),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
