//! Upkeep every worker does on its own, safely at once with any number of
//! others (no leader): the heartbeat, pruning workers that stopped beating,
//! putting their running jobs back, noticing abort requests that arrived
//! while the notification was lost, and deferring periodic jobs.

use crate::database::pinned::Db;
use crate::state::{self, PutBack, Selection};
use crate::task_error::ErrorKind;
use crate::text::printable;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgConnection;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::backoff::Backoff;
use super::notifier::Request;
use super::registry::Periodic;

/// Every `interval`: heartbeat (registering again if this worker was pruned),
/// prune workers silent for `stalled_after`, rescue their jobs, and forward
/// abort requests for this worker's jobs.
pub(crate) async fn run(
    pool: Db,
    worker_id: Arc<AtomicI64>,
    interval: Duration,
    stalled_after: Duration,
    abort_requests: mpsc::UnboundedSender<Request>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let upkeep = async {
            heartbeat(&pool, &worker_id).await;
            if let Err(error) = rescue_stalled(&pool, stalled_after).await {
                super::metrics::database_error("upkeep");
                warn!(error = %error, "failed to check for stalled workers and jobs");
            }
            match aborts_requested(&pool, worker_id.load(Ordering::Relaxed)).await {
                Ok(ids) => {
                    for id in ids {
                        let _ = abort_requests.send(Request::Abort(id));
                    }
                }
                Err(error) => warn!(error = %error, "failed to check for abort requests"),
            }
        };
        // A server that stops answering without closing the connection (a
        // frozen host, a network dropping packets) fails no statement: say
        // so while it lasts rather than fall silent.
        waiting_loudly(upkeep, stalled_after, |waited| {
            super::metrics::database_error("upkeep");
            warn!(
                waited_s = waited.as_secs(),
                "the jobs database has not answered this worker's heartbeat for a while \
                 (a frozen server, or a network dropping packets?); still waiting, and other \
                 workers will count this one as stalled"
            );
        })
        .await;
    }
}

/// Awaits `future`, calling `on_wait` with the time waited so far after
/// every `every` it is still pending. Nothing is cancelled.
async fn waiting_loudly<T>(
    future: impl Future<Output = T>,
    every: Duration,
    mut on_wait: impl FnMut(Duration),
) -> T {
    let started = tokio::time::Instant::now();
    tokio::pin!(future);
    let mut next = started + every;
    loop {
        tokio::select! {
            output = &mut future => return output,
            () = tokio::time::sleep_until(next) => {
                on_wait(started.elapsed());
                next += every;
            }
        }
    }
}

async fn heartbeat(pool: &Db, worker_id: &AtomicI64) {
    let id = worker_id.load(Ordering::Relaxed);
    let updated: Result<Option<i64>, sqlx::Error> = pool
        .run(|conn| {
            Box::pin(
                sqlx::query_scalar(
                    "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = $1 \
                     RETURNING id",
                )
                .bind(id)
                .fetch_optional(conn),
            )
        })
        .await;
    match updated {
        Ok(Some(_)) => debug!(worker_id = id, "heartbeat"),
        Ok(None) => {
            warn!(
                worker_id = id,
                "the worker was pruned as stalled; registering again"
            );
            if let Ok(new_id) = register_once(pool).await {
                worker_id.store(new_id, Ordering::Relaxed);
            }
        }
        Err(error) => warn!(worker_id = id, error = %error, "failed to send the heartbeat"),
    }
}

/// Prunes silent workers, then puts every running job without a live worker
/// back to `todo` (one attempt counted, an `error` event of kind `Stalled`).
/// Row locks with SKIP LOCKED make concurrent rescuers share the work: no
/// job is rescued twice.
async fn rescue_stalled(pool: &Db, stalled_after: Duration) -> Result<(), sqlx::Error> {
    let seconds = stalled_after.as_secs_f64();
    let pruned: Vec<i64> = pool
        .run(|conn| {
            Box::pin(
                sqlx::query_scalar(
                    "SELECT worker_id FROM procrastinate_prune_stalled_workers_v1($1)",
                )
                .bind(seconds)
                .fetch_all(conn),
            )
        })
        .await?;
    for worker in &pruned {
        warn!(
            pruned_worker_id = worker,
            stalled_after_s = seconds,
            "pruned a worker that stopped sending heartbeats"
        );
    }
    let rescue = PutBack {
        which: Selection {
            orphaned: true,
            started_before: Some(stalled_after),
            ..Selection::default()
        },
        count_attempt: true,
        note: Some((
            ErrorKind::Stalled,
            format!(
                "the worker running the job stopped sending heartbeats for {seconds} s; \
                     the job runs again"
            ),
        )),
    };
    let mut conn = pool.begin().await?;
    let rescued = state::put_back(&mut conn, &rescue).await;
    let rescued = conn.finish(rescued).await?;
    super::metrics::rescued(rescued.back.len());
    for (job_id, task) in &rescued.back {
        warn!(job_id, task = %printable(task), "put back a job whose worker stopped; it runs again");
    }
    for (job_id, task) in &rescued.failed {
        warn!(job_id, task = %printable(task),
              "a job whose worker stopped could not be put back; it is failed instead");
    }
    Ok(())
}

/// This worker's running jobs whose abort was requested.
async fn aborts_requested(pool: &Db, worker_id: i64) -> Result<Vec<i64>, sqlx::Error> {
    pool.run(|conn| {
        Box::pin(
            sqlx::query_scalar(
                "SELECT id FROM procrastinate_jobs
                 WHERE status = 'doing' AND worker_id = $1 AND abort_requested",
            )
            .bind(worker_id)
            .fetch_all(conn),
        )
    })
    .await
}

/// Defers each periodic job at each tick of its schedule, from now on: ticks
/// missed while no worker ran are not replayed. Every worker does this; the
/// unique (task, periodic id, tick) row in `procrastinate_periodic_defers`
/// makes one of them win each tick.
pub(crate) async fn defer_periodic(pool: Db, periodic: Vec<Periodic>) {
    let now = Utc::now();
    let mut next: Vec<Option<chrono::DateTime<Utc>>> = periodic
        .iter()
        .map(|p| p.schedule.next_after(now))
        .collect();
    for (entry, tick) in periodic.iter().zip(&next) {
        info!(task = %printable(&entry.task_name), periodic_id = %entry.periodic_id,
              schedule = entry.schedule.source(), next = ?tick, "periodic job scheduled");
    }
    loop {
        let Some((index, at)) = next
            .iter()
            .enumerate()
            .filter_map(|(i, tick)| tick.map(|t| (i, t)))
            .min_by_key(|(_, tick)| *tick)
        else {
            return;
        };
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let entry = &periodic[index];
        defer_tick(&pool, entry, at.timestamp()).await;
        next[index] = entry.schedule.next_after(at);
    }
}

async fn defer_tick(pool: &Db, entry: &Periodic, tick: i64) {
    let mut args = entry.args.clone();
    args.insert("timestamp".to_string(), serde_json::Value::from(tick));
    let mut conn = match pool.begin().await {
        Ok(conn) => conn,
        Err(error) => {
            warn!(task = %printable(&entry.task_name), tick, error = %error, "failed to defer a periodic job");
            return;
        }
    };
    let deferred: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
        "SELECT procrastinate_defer_periodic_job_v2($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&entry.queue)
    .bind(&entry.lock)
    .bind(&entry.queueing_lock)
    .bind(&entry.task_name)
    .bind(entry.priority)
    .bind(&entry.periodic_id)
    .bind(tick)
    .bind(sqlx::types::Json(&args))
    .fetch_one(&mut *conn)
    .await;
    let deferred = conn.finish(deferred).await;
    match deferred {
        Ok(Some(job_id)) => {
            info!(job_id, task = %printable(&entry.task_name), tick, "periodic job deferred")
        }
        Ok(None) => {
            debug!(task = %printable(&entry.task_name), tick, "periodic tick already deferred by another worker")
        }
        Err(error)
            if error.as_database_error().and_then(|e| e.constraint())
                == Some(crate::defer::QUEUEING_LOCK_INDEX) =>
        {
            info!(task = %printable(&entry.task_name), tick, "periodic job skipped: one is already waiting (queueing lock)")
        }
        Err(error) => {
            warn!(task = %printable(&entry.task_name), tick, error = %error, "failed to defer a periodic job")
        }
    }
}

/// How registering ended.
pub(super) enum Registered {
    Id(i64),
    /// `shutdown` completed first.
    Stopped,
    /// The database failed for longer than allowed.
    GaveUp,
}

/// Registers the worker, retrying with backoff until it works, `shutdown`
/// completes, or (when `give_up_after` is set) the database has failed for
/// that long.
pub(super) async fn register<S: Future<Output = ()>>(
    pool: &Db,
    shutdown: &mut std::pin::Pin<&mut S>,
    give_up_after: Option<Duration>,
) -> Registered {
    let mut backoff = Backoff::new();
    let first_try = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        let failure = match pool.run(|conn| Box::pin(schema_not_ready(conn))).await {
            Ok(None) => match register_once(pool).await {
                Ok(id) => return Registered::Id(id),
                Err(error) => NotRegistered::Database(error),
            },
            Ok(Some(reason)) => NotRegistered::Schema(reason),
            Err(error) => NotRegistered::Database(error),
        };
        let gave_up = give_up_after.is_some_and(|limit| first_try.elapsed() >= limit);
        let wait = match failure {
            NotRegistered::Schema(reason) => {
                if gave_up {
                    error!(reason = %reason, "the jobs database's schema is not ready for this worker; giving up");
                    return Registered::GaveUp;
                }
                // Checked often, so that the worker starts soon after the
                // schema is applied or adopted; said once a minute.
                if last_said.is_none_or(|said| said.elapsed() >= Duration::from_secs(60)) {
                    last_said = Some(Instant::now());
                    warn!(reason = %reason, "the jobs database's schema is not ready for this worker; waiting for it");
                }
                backoff.next_wait().min(Duration::from_secs(5))
            }
            NotRegistered::Database(error) => {
                if gave_up {
                    error!(error = %error, "failed to register the worker with the jobs database; giving up");
                    return Registered::GaveUp;
                }
                let wait = backoff.next_wait();
                warn!(error = %error, retry_in_ms = wait.as_millis() as u64,
                      "failed to register the worker with the jobs database; retrying");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.as_mut() => return Registered::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why a try at registering did not register.
enum NotRegistered {
    /// The schema is not ready for this worker (see [`schema_not_ready`]).
    Schema(String),
    /// The database failed.
    Database(sqlx::Error),
}

/// Why this worker cannot start on the database yet (a Procrastinate
/// database not adopted, a schema never applied or missing migrations),
/// with what to run; `None` when dawdle's claim function is there.
async fn schema_not_ready(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    let ready: bool = sqlx::query_scalar(
        "SELECT to_regclass('dawdle_migrations') IS NOT NULL
            AND to_regprocedure($1) IS NOT NULL",
    )
    .bind(crate::schema::CLAIM_FUNCTION)
    .fetch_one(&mut *conn)
    .await?;
    if ready {
        // A newer build migrated the database: this one still runs (the
        // interface it uses is kept), but says so, as healthcheck does.
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM dawdle_migrations")
            .fetch_one(&mut *conn)
            .await?;
        let known = crate::schema::latest_version();
        if let Some(version) = version.filter(|version| *version > known) {
            warn!(
                database_version = version,
                known_version = known,
                "the jobs database was migrated by a newer dawdle than this worker's; \
                 upgrade this worker"
            );
        }
        return Ok(None);
    }
    Ok(Some(match crate::schema::check(conn).await {
        Ok(report) => format!(
            "{}; {}",
            report
                .problems
                .first()
                .map(String::as_str)
                .unwrap_or("dawdle's functions are missing"),
            if report.fix.is_empty() {
                "run `dawdle schema apply`"
            } else {
                report.fix.as_str()
            }
        ),
        Err(error) => {
            format!("dawdle's functions are missing ({error}); run `dawdle schema check`")
        }
    }))
}

pub(super) async fn register_once(pool: &Db) -> Result<i64, sqlx::Error> {
    pool.run(|conn| {
        Box::pin(
            sqlx::query_scalar("SELECT worker_id FROM procrastinate_register_worker_v1()")
                .fetch_one(conn),
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_upkeep_is_reported_while_it_lasts_and_not_cancelled() {
        let mut waits = Vec::new();
        let output = waiting_loudly(
            async {
                tokio::time::sleep(Duration::from_secs(35)).await;
                7
            },
            Duration::from_secs(10),
            |waited| waits.push(waited.as_secs()),
        )
        .await;
        assert_eq!(output, 7);
        assert_eq!(waits, [10, 20, 30]);
        let quick = waiting_loudly(async { 1 }, Duration::from_secs(10), |_| panic!()).await;
        assert_eq!(quick, 1);
    }
}
