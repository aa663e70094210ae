//! Claiming: `todo` jobs become `doing` under one worker, in one statement.

use crate::job::{Job, JOB_COLUMNS};

/// Claims up to `limit` runnable jobs of `queues` (all queues when `None`)
/// for `worker_id`, with `dawdle_claim_jobs_v1`: highest priority first,
/// never two jobs of one lock, never a job whose lock is busy. The claim
/// commits before it returns, so no row lock outlives it. Each job comes
/// with the trace context it was deferred with, if any.
pub(crate) async fn claim(
    executor: impl sqlx::PgExecutor<'_>,
    queues: Option<&[String]>,
    worker_id: i64,
    limit: usize,
) -> Result<Vec<Job>, sqlx::Error> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {JOB_COLUMNS}, claimed.traceparent, claimed.tracestate
             FROM dawdle_claim_jobs_v1($1, $2, $3) AS claimed,
                  LATERAL (SELECT (claimed.job).*) AS job"
        )
    });
    sqlx::query_as(sql)
        .bind(queues)
        .bind(worker_id)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .fetch_all(executor)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;

    use crate::testing::{eventually, TestDatabase};
    use crate::{NewJob, TraceContext};

    /// The claim's statements take snapshots of their own: a job deferred
    /// while a claim is under way must come with its trace context, never
    /// claimed without it.
    #[tokio::test]
    async fn a_job_deferred_during_a_claim_comes_with_its_trace_context() {
        let db = TestDatabase::with_schema().await;
        let worker_id: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        // Hold the claim at its worker check, after its statement began.
        let mut blocker = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        let mut held = blocker.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM procrastinate_workers WHERE id = $1 FOR UPDATE")
            .bind(worker_id)
            .execute(&mut *held)
            .await
            .unwrap();
        let pool = db.pool().clone();
        let claim = tokio::spawn(async move { super::claim(&pool, None, worker_id, 10).await });
        eventually(Duration::from_secs(10), "the claim to wait on the worker row", async || {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                WHERE wait_event_type = 'Lock' AND query LIKE '%dawdle_claim_jobs_v1%')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap()
        })
        .await;
        let context = TraceContext::new(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        )
        .unwrap();
        let job = NewJob::new("t", serde_json::json!({}))
            .unwrap()
            .trace_context(context.clone());
        let id = crate::defer(db.pool(), &job).await.unwrap();
        held.commit().await.unwrap();

        let claimed = claim.await.unwrap().unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, id);
        assert_eq!(claimed[0].trace_context, Some(context));
    }

    /// Listed queues are read one queue at a time and merged: the claim
    /// still takes the first jobs of all of them in one order (priority,
    /// then id), skips paused and unlisted queues, and leaves every job it
    /// looked at but did not take waiting.
    #[tokio::test]
    async fn listed_queues_are_claimed_in_one_order_and_the_rest_left_waiting() {
        let db = TestDatabase::with_schema().await;
        let worker_id: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        // (queue, priority) in id order.
        let jobs = [
            ("a", 0),
            ("b", 5),
            ("c", 9),
            ("a", 5),
            ("b", 0),
            ("paused", 9),
            ("a", 7),
            ("b", 7),
        ];
        let mut ids = Vec::new();
        for (queue, priority) in jobs {
            let job = NewJob::new("t", serde_json::json!({}))
                .unwrap()
                .queue(queue)
                .priority(priority);
            ids.push(crate::defer(db.pool(), &job).await.unwrap());
        }
        sqlx::query("INSERT INTO dawdle_queue_pauses (queue_name) VALUES ('paused')")
            .execute(db.pool())
            .await
            .unwrap();
        let queues: Vec<String> = ["b", "a", "paused", "a", "nowhere"]
            .map(String::from)
            .to_vec();
        let claim = async |limit| {
            super::claim(db.pool(), Some(&queues), worker_id, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect::<Vec<_>>()
        };
        let mut first = claim(3).await;
        first.sort();
        assert_eq!(
            first,
            vec![ids[1], ids[6], ids[7]],
            "7, 7, then the older 5"
        );
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(waiting, 5, "the jobs looked at but not taken still wait");
        let mut second = claim(10).await;
        second.sort();
        assert_eq!(second, vec![ids[0], ids[3], ids[4]]);
        assert!(
            claim(10).await.is_empty(),
            "c is not listed, paused is paused"
        );
    }
}
