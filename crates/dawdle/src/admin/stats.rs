//! Queue statistics and the runbook's health verdict ("Check Queue Health").
//!
//! The runbook lists healthy indicators (no job stuck in `doing` over five
//! minutes, failures not growing, successes being processed) and warning
//! signs (a growing backlog, stuck jobs, a spike of failures). [`stats`]
//! measures each and turns them into a [`Verdict`] with the reasons, so cron
//! and alerting can act on the exit code of `dawdle stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

/// Thresholds of the verdict.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// A job in `doing` longer than this is stuck (the runbook: 5 minutes).
    pub stuck_after: Duration,
    /// A runnable job waiting longer than this means the backlog is growing.
    pub backlog_after: Duration,
    /// A worker whose heartbeat is older than this is not counted as live.
    pub worker_alive_within: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            stuck_after: Duration::from_secs(5 * 60),
            backlog_after: Duration::from_secs(5 * 60),
            worker_alive_within: Duration::from_secs(60),
        }
    }
}

/// Overall health, worst first when ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Warning,
    Unhealthy,
}

/// Counts of one queue by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub todo: i64,
    pub doing: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub aborted: i64,
}

/// Average run time of one task's successes.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TaskDuration {
    pub task_name: String,
    pub succeeded: i64,
    pub avg_duration_seconds: f64,
}

/// Everything `dawdle stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub queues: BTreeMap<String, QueueCounts>,
    pub totals: QueueCounts,
    /// Seconds the oldest runnable `todo` job has been waiting.
    pub oldest_runnable_age_seconds: Option<f64>,
    /// Jobs in `doing` for longer than the stuck threshold.
    pub stuck_doing: i64,
    pub stuck_doing_ids: Vec<i64>,
    pub failed_last_hour: i64,
    pub failed_previous_hour: i64,
    pub succeeded_last_hour: i64,
    pub live_workers: i64,
    /// Paused queues: their jobs wait, and count as neither runnable nor
    /// a backlog.
    pub paused: Vec<super::PausedQueue>,
    /// Successes of the last 24 hours, by task.
    pub durations: Vec<TaskDuration>,
    pub verdict: Verdict,
    /// Why the verdict is not healthy, in words from the runbook.
    pub reasons: Vec<String>,
}

/// Measures the queue and judges it.
pub async fn stats(pool: &PgPool, config: &StatsConfig) -> Result<QueueStats, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT queue_name::text, status::text, count(*)
         FROM procrastinate_jobs GROUP BY queue_name, status",
    )
    .fetch_all(pool)
    .await?;
    let mut queues: BTreeMap<String, QueueCounts> = BTreeMap::new();
    let mut totals = QueueCounts::default();
    for (queue, status, count) in rows {
        let counts = queues.entry(queue).or_default();
        for target in [&mut *counts, &mut totals] {
            match status.as_str() {
                "todo" => target.todo += count,
                // Older Procrastinate releases' running job asked to abort.
                "doing" | "aborting" => target.doing += count,
                "succeeded" => target.succeeded += count,
                "failed" => target.failed += count,
                "cancelled" => target.cancelled += count,
                "aborted" => target.aborted += count,
                _ => {}
            }
        }
    }

    let stuck_seconds = crate::duration::age_seconds(config.stuck_after);
    #[derive(sqlx::FromRow)]
    struct Measures {
        oldest_runnable_age_seconds: Option<f64>,
        stuck_doing_ids: Vec<i64>,
        failed_last_hour: i64,
        failed_previous_hour: i64,
        succeeded_last_hour: i64,
        live_workers: i64,
    }
    let measures: Measures = sqlx::query_as(&format!(
        "SELECT
             -- Runnable since it was created or scheduled, whichever came
             -- last; hand-written infinities must not break the arithmetic.
             (SELECT EXTRACT(EPOCH FROM now() - min(greatest(scheduled_at, created_at)))::float8
              FROM procrastinate_jobs
              WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
                AND isfinite(greatest(scheduled_at, created_at))
                AND queue_name NOT IN (SELECT queue_name FROM dawdle_queue_pauses))
                 AS oldest_runnable_age_seconds,
             (SELECT coalesce(array_agg(id ORDER BY id), '{{}}')
              FROM procrastinate_jobs
              WHERE status = 'doing' AND started_at < now() - make_interval(secs => $1))
                 AS stuck_doing_ids,
             (SELECT count(*) FROM procrastinate_jobs
              WHERE status = 'failed' AND finished_at > now() - interval '1 hour')
                 AS failed_last_hour,
             (SELECT count(*) FROM procrastinate_jobs
              WHERE status = 'failed' AND finished_at > now() - interval '2 hours'
                AND finished_at <= now() - interval '1 hour')
                 AS failed_previous_hour,
             (SELECT count(*) FROM procrastinate_jobs
              WHERE status = 'succeeded' AND finished_at > now() - interval '1 hour')
                 AS succeeded_last_hour,
             (SELECT count(*) FROM procrastinate_workers WHERE {live})
                 AS live_workers",
        live = super::live_heartbeat("$2"),
    ))
    .bind(stuck_seconds)
    .bind(crate::duration::age_seconds(config.worker_alive_within))
    .fetch_one(pool)
    .await?;

    let durations: Vec<TaskDuration> = sqlx::query_as(
        "SELECT task_name::text, count(*) AS succeeded,
                AVG(EXTRACT(EPOCH FROM (finished_at - started_at)))::float8 AS avg_duration_seconds
         FROM procrastinate_jobs
         WHERE status = 'succeeded' AND finished_at > now() - interval '24 hours'
           AND isfinite(started_at) AND isfinite(finished_at)
         GROUP BY task_name ORDER BY task_name",
    )
    .fetch_all(pool)
    .await?;

    let paused = super::paused_queues(pool).await?;
    let mut stats = QueueStats {
        queues,
        totals,
        oldest_runnable_age_seconds: measures.oldest_runnable_age_seconds,
        stuck_doing: measures.stuck_doing_ids.len() as i64,
        stuck_doing_ids: measures.stuck_doing_ids,
        failed_last_hour: measures.failed_last_hour,
        failed_previous_hour: measures.failed_previous_hour,
        succeeded_last_hour: measures.succeeded_last_hour,
        live_workers: measures.live_workers,
        paused,
        durations,
        verdict: Verdict::Healthy,
        reasons: Vec::new(),
    };
    judge(&mut stats, config);
    Ok(stats)
}

/// The runbook's healthy indicators and warning signs, evaluated.
fn judge(stats: &mut QueueStats, config: &StatsConfig) {
    let mut flag = |verdict: Verdict, reason: String| {
        stats.verdict = stats.verdict.max(verdict);
        stats.reasons.push(reason);
    };
    let minutes = |d: Duration| d.as_secs() / 60;
    if stats.stuck_doing > 0 {
        flag(
            Verdict::Unhealthy,
            format!(
                "{} job(s) stuck in doing for more than {} minutes (worker may have crashed): {}",
                stats.stuck_doing,
                minutes(config.stuck_after),
                preview(&stats.stuck_doing_ids)
            ),
        );
    }
    let runnable_waiting = stats.oldest_runnable_age_seconds.is_some();
    if runnable_waiting && stats.live_workers == 0 {
        flag(
            Verdict::Unhealthy,
            "jobs are waiting and no worker has sent a heartbeat recently (is the worker running?)"
                .to_string(),
        );
    }
    if let Some(age) = stats.oldest_runnable_age_seconds {
        if age > config.backlog_after.as_secs_f64() {
            flag(
                Verdict::Warning,
                format!(
                    "growing backlog: the oldest runnable job has waited {} (threshold {} minutes)",
                    human_duration(age),
                    minutes(config.backlog_after)
                ),
            );
        }
    }
    if stats.failed_last_hour > stats.failed_previous_hour && stats.failed_last_hour > 0 {
        flag(
            Verdict::Warning,
            format!(
                "failures growing: {} in the last hour, {} in the hour before",
                stats.failed_last_hour, stats.failed_previous_hour
            ),
        );
    }
    for paused in &stats.paused {
        flag(
            Verdict::Warning,
            format!(
                "queue {} is paused{}: {} job(s) wait until `dawdle queue resume {}`",
                crate::text::quote(&paused.queue),
                paused
                    .reason
                    .as_deref()
                    .map_or(String::new(), |why| format!(
                        " ({})",
                        crate::text::excerpt(why, 80)
                    )),
                paused.waiting,
                crate::text::excerpt(&paused.queue, 60)
            ),
        );
    }
    if runnable_waiting && stats.succeeded_last_hour == 0 && stats.totals.todo > 0 {
        flag(
            Verdict::Warning,
            "no job succeeded in the last hour while jobs are waiting".to_string(),
        );
    }
}

fn preview(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(i64::to_string).collect();
    if ids.len() > 10 {
        format!("{} …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// `95 s`, `12 min`, `3.5 h`.
pub fn human_duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> QueueStats {
        QueueStats {
            queues: BTreeMap::new(),
            totals: QueueCounts::default(),
            oldest_runnable_age_seconds: None,
            paused: Vec::new(),
            stuck_doing: 0,
            stuck_doing_ids: vec![],
            failed_last_hour: 0,
            failed_previous_hour: 0,
            succeeded_last_hour: 10,
            live_workers: 1,
            durations: vec![],
            verdict: Verdict::Healthy,
            reasons: vec![],
        }
    }

    #[test]
    fn a_paused_queue_is_a_warning_that_says_how_to_resume_it() {
        let mut stats = healthy();
        stats.paused.push(crate::admin::PausedQueue {
            queue: "email".into(),
            paused_at: chrono::Utc::now(),
            paused_by: Some("ops".into()),
            reason: Some("SMTP outage".into()),
            waiting: 3,
        });
        judge(&mut stats, &StatsConfig::default());
        assert_eq!(stats.verdict, Verdict::Warning);
        assert_eq!(
            stats.reasons,
            ["queue \"email\" is paused (SMTP outage): 3 job(s) wait until `dawdle queue resume email`"]
        );
    }

    #[test]
    fn a_quiet_queue_is_healthy() {
        let mut stats = healthy();
        judge(&mut stats, &StatsConfig::default());
        assert_eq!(stats.verdict, Verdict::Healthy);
        assert!(stats.reasons.is_empty());
    }

    #[test]
    fn stuck_jobs_make_it_unhealthy() {
        let mut stats = healthy();
        stats.stuck_doing = 2;
        stats.stuck_doing_ids = vec![4, 9];
        judge(&mut stats, &StatsConfig::default());
        assert_eq!(stats.verdict, Verdict::Unhealthy);
        assert!(
            stats.reasons[0].contains("stuck in doing"),
            "{:?}",
            stats.reasons
        );
        assert!(stats.reasons[0].ends_with("4, 9"));
    }

    #[test]
    fn a_spike_of_failures_and_an_old_backlog_are_warnings() {
        let mut stats = healthy();
        stats.failed_last_hour = 5;
        stats.failed_previous_hour = 1;
        stats.oldest_runnable_age_seconds = Some(900.0);
        stats.totals.todo = 3;
        judge(&mut stats, &StatsConfig::default());
        assert_eq!(stats.verdict, Verdict::Warning);
        assert_eq!(stats.reasons.len(), 2, "{:?}", stats.reasons);
    }

    #[test]
    fn waiting_jobs_without_a_live_worker_are_unhealthy() {
        let mut stats = healthy();
        stats.live_workers = 0;
        stats.oldest_runnable_age_seconds = Some(3.0);
        stats.totals.todo = 1;
        judge(&mut stats, &StatsConfig::default());
        assert_eq!(stats.verdict, Verdict::Unhealthy);
    }
}

/// Jobs that ended in one hour: how many succeeded and how many failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourOutcomes {
    /// The hour's start.
    pub hour: chrono::DateTime<chrono::Utc>,
    pub succeeded: i64,
    pub failed: i64,
}

/// Succeeded and failed jobs per hour over the last `hours` hours, oldest
/// first, every hour present (zeros included). One pass over the jobs
/// that finished in that time.
pub async fn hourly_outcomes(pool: &PgPool, hours: u32) -> Result<Vec<HourOutcomes>, sqlx::Error> {
    let hours = hours.clamp(1, 24 * 14) as i32;
    let rows: Vec<(crate::rows::DbTime, i64, i64)> = sqlx::query_as(
        "WITH ended AS (
             SELECT date_trunc('hour', finished_at) AS hour,
                    count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE status = 'failed') AS failed
             FROM procrastinate_jobs
             WHERE status IN ('succeeded', 'failed')
               AND finished_at >= date_trunc('hour', now()) - make_interval(hours => $1 - 1)
             GROUP BY 1
         )
         SELECT hour.start, coalesce(ended.succeeded, 0), coalesce(ended.failed, 0)
         FROM generate_series(date_trunc('hour', now()) - make_interval(hours => $1 - 1),
                              date_trunc('hour', now()), interval '1 hour') AS hour (start)
         LEFT JOIN ended ON ended.hour = hour.start
         ORDER BY hour.start",
    )
    .bind(hours)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(hour, succeeded, failed)| {
            Some(HourOutcomes {
                hour: hour.0?,
                succeeded,
                failed,
            })
        })
        .collect())
}
