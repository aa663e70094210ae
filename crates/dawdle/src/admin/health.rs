//! `dawdle healthcheck`: is the queue usable right now? For orchestrators'
//! liveness and readiness probes.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

/// The three things a probe needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    pub database_reachable: bool,
    pub schema_current: bool,
    /// Workers whose heartbeat is recent enough.
    pub live_workers: i64,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the database answers, the schema is current and (unless
/// `require_worker` is false) a worker heartbeat is at most `worker_within` old.
pub async fn healthcheck(
    pool: &PgPool,
    worker_within: Duration,
    require_worker: bool,
) -> HealthReport {
    let mut report = HealthReport {
        database_reachable: false,
        schema_current: false,
        live_workers: 0,
        problems: Vec::new(),
    };
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => {
            report
                .problems
                .push(format!("database unreachable: {error}"));
            return report;
        }
    };
    report.database_reachable = true;
    match crate::schema::check(&mut conn).await {
        Ok(check) if check.is_current() => report.schema_current = true,
        Ok(check) => report
            .problems
            .push(format!("schema not current: {}", check.problems.join("; "))),
        Err(error) => report
            .problems
            .push(format!("schema check failed: {error}")),
    }
    if report.schema_current {
        match sqlx::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM procrastinate_workers WHERE {}",
            super::live_heartbeat("$1")
        ))
        .bind(crate::duration::age_seconds(worker_within))
        .fetch_one(&mut *conn)
        .await
        {
            Ok(live) => report.live_workers = live,
            Err(error) => report
                .problems
                .push(format!("reading workers failed: {error}")),
        }
        if require_worker && report.live_workers == 0 {
            report.problems.push(format!(
                "no worker has sent a heartbeat in the last {} s",
                worker_within.as_secs()
            ));
        }
    }
    report
}
