//! Queue gauges for metrics, read from the database in one statement: the
//! runbook's monitoring queries (the same SQL text as `dawdle check`), plus
//! jobs by queue and status, the age of each queue's oldest runnable job
//! and the live workers. `dawdle metrics serve` records them through the
//! `metrics` facade every few seconds; an application can do the same with
//! [`queue_gauges`] and [`GaugeRecorder`].

use std::collections::HashSet;
use std::time::Duration;

use metrics::{describe_gauge, gauge, Unit};
use serde::Deserialize;
use sqlx::PgPool;

use super::checks::CHECKS;

/// Most queues given their own label values; the rest are summed as `other`.
pub const MAX_QUEUES: usize = 64;

/// Longest a gauge query may run before it is cancelled.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Names of the gauges.
pub mod names {
    /// Jobs by `queue` and `status` (`todo`, `doing`; `doing` includes
    /// `aborting`, as `dawdle stats` counts it).
    pub const QUEUE_JOBS: &str = "dawdle_queue_jobs";
    /// Age of the oldest runnable `todo` job of each `queue` (0 when none).
    pub const OLDEST_WAITING: &str = "dawdle_queue_oldest_waiting_seconds";
    /// The runbook's "stuck in doing for more than 5 minutes".
    pub const STUCK_DOING: &str = "dawdle_jobs_stuck_doing";
    /// The runbook's "failed jobs in the last hour".
    pub const FAILED_LAST_HOUR: &str = "dawdle_jobs_failed_last_hour";
    /// The runbook's "processing rate (jobs/hour)".
    pub const PROCESSED_LAST_HOUR: &str = "dawdle_jobs_processed_last_hour";
    /// Workers whose last heartbeat is recent.
    pub const LIVE_WORKERS: &str = "dawdle_workers_live";
    /// 1 when the last reading of these gauges succeeded, else 0.
    pub const GAUGES_UP: &str = "dawdle_queue_gauges_up";
    /// Seconds since each paused `queue` was paused (0 once resumed, when the recorder keeps the series).
    pub const QUEUE_PAUSED: &str = "dawdle_queue_paused_seconds";
}

/// A paused queue and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PausedGauge {
    pub queue: String,
    pub seconds: f64,
}

/// One queue's jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueGauge {
    pub queue: String,
    pub todo: i64,
    /// `doing` and `aborting` (an older Procrastinate release's running job
    /// asked to abort).
    pub doing: i64,
    /// Seconds since the oldest runnable `todo` job could run; 0 when none.
    pub oldest_waiting_seconds: f64,
}

/// What the gauges show.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGauges {
    /// The busiest [`MAX_QUEUES`] queues, then `other` for the rest.
    pub queues: Vec<QueueGauge>,
    pub stuck_doing: i64,
    pub failed_last_hour: i64,
    pub processed_last_hour: i64,
    pub live_workers: i64,
    /// Paused queues (at most [`MAX_QUEUES`], by name).
    pub paused: Vec<PausedGauge>,
}

/// The SQL of the runbook's check `name`, as a subquery.
fn check_sql(name: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|check| check.name == name)
        .map(|check| check.sql.trim().trim_end_matches(';'))
        .expect("the runbook's checks are constants")
}

/// Reads the gauges: one statement, at most 5 s. A worker is live when
/// its heartbeat is younger than `stalled_after`.
pub async fn queue_gauges(
    pool: &PgPool,
    stalled_after: Duration,
) -> Result<QueueGauges, sqlx::Error> {
    let sql = format!(
        "SELECT
             (SELECT count(*) FROM ({stuck}) AS stuck) AS stuck_doing,
             ({failed}) AS failed_last_hour,
             ({processed}) AS processed_last_hour,
             (SELECT count(*) FROM procrastinate_workers
              WHERE {live}) AS live_workers,
             (SELECT coalesce(json_agg(q ORDER BY q.queue), '[]'::json) FROM (
                  SELECT queue_name AS queue,
                         count(*) FILTER (WHERE status = 'todo') AS todo,
                         -- `aborting`: older Procrastinate releases' running job
                         -- asked to abort, counted as `stats` counts it.
                         count(*) FILTER (WHERE status IN ('doing', 'aborting')) AS doing,
                         -- An infinite time is no age: such jobs count, not their wait.
                         coalesce(EXTRACT(EPOCH FROM now() - min(greatest(scheduled_at, created_at))
                             FILTER (WHERE status = 'todo'
                                     AND (scheduled_at IS NULL OR scheduled_at <= now())
                                     AND isfinite(greatest(scheduled_at, created_at)))),
                             0)::float8 AS oldest_waiting_seconds
                  FROM procrastinate_jobs
                  WHERE status IN ('todo', 'doing', 'aborting')
                  GROUP BY queue_name) AS q) AS queues,
             (SELECT coalesce(json_agg(p ORDER BY p.queue), '[]'::json) FROM (
                  SELECT queue_name AS queue,
                         CASE WHEN isfinite(paused_at)
                              THEN greatest(EXTRACT(EPOCH FROM now() - paused_at), 0)
                              ELSE 0 END::float8 AS seconds
                  FROM dawdle_queue_pauses
                  ORDER BY queue_name
                  LIMIT {max_queues}) AS p) AS paused",
        max_queues = MAX_QUEUES,
        live = super::live_heartbeat("$1"),
        stuck = check_sql("stuck-doing"),
        failed = check_sql("failed-last-hour"),
        processed = check_sql("processing-rate"),
    );
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    #[derive(sqlx::FromRow)]
    struct Reading {
        stuck_doing: i64,
        failed_last_hour: i64,
        processed_last_hour: i64,
        live_workers: i64,
        queues: sqlx::types::Json<Vec<QueueGauge>>,
        paused: sqlx::types::Json<Vec<PausedGauge>>,
    }
    let reading: Reading = sqlx::query_as(&sql)
        .bind(crate::duration::age_seconds(stalled_after))
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(QueueGauges {
        queues: busiest(reading.queues.0),
        stuck_doing: reading.stuck_doing,
        failed_last_hour: reading.failed_last_hour,
        processed_last_hour: reading.processed_last_hour,
        live_workers: reading.live_workers,
        paused: reading.paused.0,
    })
}

/// The [`MAX_QUEUES`] queues with the most jobs, and `other` summing the
/// rest (its oldest wait the oldest of theirs).
fn busiest(mut queues: Vec<QueueGauge>) -> Vec<QueueGauge> {
    if queues.len() <= MAX_QUEUES {
        return queues;
    }
    queues.sort_by(|a, b| {
        (b.todo + b.doing)
            .cmp(&(a.todo + a.doing))
            .then_with(|| a.queue.cmp(&b.queue))
    });
    let rest = queues.split_off(MAX_QUEUES);
    queues.push(rest.into_iter().fold(
        QueueGauge {
            queue: "other".to_string(),
            todo: 0,
            doing: 0,
            oldest_waiting_seconds: 0.0,
        },
        |mut other, queue| {
            other.todo += queue.todo;
            other.doing += queue.doing;
            other.oldest_waiting_seconds = other
                .oldest_waiting_seconds
                .max(queue.oldest_waiting_seconds);
            other
        },
    ));
    queues
}

/// Records gauges through the `metrics` facade. The label values it
/// writes are those of the last reading: the [`MAX_QUEUES`] busiest queues
/// and `other`, and at most [`MAX_QUEUES`] paused queues. A queue gone
/// since the previous reading (no job left, or resumed) is set to 0 once and
/// then no longer written; it is not remembered.
///
/// The `metrics` facade cannot remove a series, so a recorder that lives as
/// long as the process keeps exporting those zeros. To export only the
/// queues of the last reading, record each reading into a fresh recorder
/// with [`GaugeRecorder::record_reading_into`] and serve that reading
/// whole, as `dawdle metrics serve` and the reference service do.
#[derive(Debug, Default)]
pub struct GaugeRecorder {
    /// Queues of the last reading.
    seen: HashSet<String>,
    /// Paused queues of the last reading.
    paused: HashSet<String>,
}
impl GaugeRecorder {
    /// Registers the gauges' help texts with the installed recorder.
    pub fn describe() {
        describe_gauge!(
            names::QUEUE_JOBS,
            "Jobs by queue and status (todo, doing; doing includes aborting)"
        );
        describe_gauge!(
            names::OLDEST_WAITING,
            Unit::Seconds,
            "Age of the oldest runnable waiting job, by queue"
        );
        describe_gauge!(names::STUCK_DOING, "Jobs in doing for more than 5 minutes");
        describe_gauge!(
            names::FAILED_LAST_HOUR,
            "Failed jobs created in the last hour"
        );
        describe_gauge!(
            names::PROCESSED_LAST_HOUR,
            "Succeeded jobs created in the last hour"
        );
        describe_gauge!(names::LIVE_WORKERS, "Workers with a recent heartbeat");
        describe_gauge!(
            names::GAUGES_UP,
            "1 when the last reading of the queue gauges succeeded"
        );
        describe_gauge!(
            names::QUEUE_PAUSED,
            Unit::Seconds,
            "How long each paused queue has been paused"
        );
    }

    /// Reads the gauges from `pool` and records them; a failed reading is
    /// logged and recorded as `dawdle_queue_gauges_up 0`.
    pub async fn refresh(&mut self, pool: &PgPool, stalled_after: Duration) {
        match queue_gauges(pool, stalled_after).await {
            Ok(gauges) => self.record(Some(&gauges)),
            Err(error) => {
                tracing::warn!(error = %error, "failed to read the queue gauges; retrying");
                self.record(None);
            }
        }
    }

    /// Records `last`, the last reading that succeeded, alone into
    /// `recorder` (a fresh one, e.g. `PrometheusBuilder::build_recorder`,
    /// rendered whole afterwards): its series are exactly the queues of
    /// that reading. `up` says whether the latest attempt to read
    /// succeeded (`dawdle_queue_gauges_up`).
    pub fn record_reading_into(
        recorder: &impl metrics::Recorder,
        last: Option<&QueueGauges>,
        up: bool,
    ) {
        metrics::with_local_recorder(recorder, || {
            Self::describe();
            let mut gauges = Self::default();
            if let Some(reading) = last {
                gauges.record(Some(reading));
            }
            if !up {
                gauges.record(None);
            }
        });
    }

    /// Records a reading; `None` records that it failed.
    pub fn record(&mut self, reading: Option<&QueueGauges>) {
        let Some(gauges) = reading else {
            gauge!(names::GAUGES_UP).set(0.0);
            return;
        };
        gauge!(names::GAUGES_UP).set(1.0);
        gauge!(names::STUCK_DOING).set(gauges.stuck_doing as f64);
        gauge!(names::FAILED_LAST_HOUR).set(gauges.failed_last_hour as f64);
        gauge!(names::PROCESSED_LAST_HOUR).set(gauges.processed_last_hour as f64);
        gauge!(names::LIVE_WORKERS).set(gauges.live_workers as f64);
        let now: HashSet<String> = gauges.queues.iter().map(|q| q.queue.clone()).collect();
        for queue in &gauges.queues {
            set_queue(
                &queue.queue,
                queue.todo,
                queue.doing,
                queue.oldest_waiting_seconds,
            );
        }
        for gone in self.seen.difference(&now) {
            set_queue(gone, 0, 0, 0.0);
        }
        let paused_now: HashSet<String> = gauges.paused.iter().map(|p| p.queue.clone()).collect();
        for paused in &gauges.paused {
            gauge!(names::QUEUE_PAUSED, "queue" => paused.queue.clone()).set(paused.seconds);
        }
        for resumed in self.paused.difference(&paused_now) {
            gauge!(names::QUEUE_PAUSED, "queue" => resumed.clone()).set(0.0);
        }
        // Only the last reading: what can be labelled, plus `other`.
        self.seen = now;
        self.paused = paused_now;
    }
}

fn set_queue(queue: &str, todo: i64, doing: i64, oldest_waiting_seconds: f64) {
    let queue = queue.to_string();
    gauge!(names::QUEUE_JOBS, "queue" => queue.clone(), "status" => "todo").set(todo as f64);
    gauge!(names::QUEUE_JOBS, "queue" => queue.clone(), "status" => "doing").set(doing as f64);
    gauge!(names::OLDEST_WAITING, "queue" => queue).set(oldest_waiting_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, todo: i64) -> QueueGauge {
        QueueGauge {
            queue: name.to_string(),
            todo,
            doing: 1,
            oldest_waiting_seconds: todo as f64,
        }
    }

    #[test]
    fn the_busiest_queues_keep_their_names_and_the_rest_are_other() {
        let few = vec![queue("a", 1), queue("b", 2)];
        assert_eq!(busiest(few.clone()), few);
        let many: Vec<QueueGauge> = (0..100).map(|n| queue(&format!("q{n}"), n)).collect();
        let kept = busiest(many);
        assert_eq!(kept.len(), MAX_QUEUES + 1);
        assert_eq!(kept[0].queue, "q99");
        let other = kept.last().unwrap();
        assert_eq!(other.queue, "other");
        // q0..q35 folded: todo 0+1+…+35, one doing each, oldest 35 s.
        assert_eq!(other.todo, (0..36).sum::<i64>());
        assert_eq!(other.doing, 36);
        assert_eq!(other.oldest_waiting_seconds, 35.0);
    }
}
