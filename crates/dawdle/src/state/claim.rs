//! Claiming: `todo` jobs become `doing` under one worker, in one statement.

use crate::job::{Job, JOB_COLUMNS};
use crate::worker::floor::Floor;

/// Claims up to `limit` runnable jobs of `queues` (all queues when `None`)
/// for `worker_id`, with `dawdle_claim_jobs_v2`: highest priority first,
/// never two jobs of one lock, never a job whose lock is busy; from `floor`
/// on when given (see `worker::floor`). The claim commits before it
/// returns, so no row lock outlives it. Each job comes with the trace
/// context it was deferred with, if any.
pub(crate) async fn claim(
    executor: impl sqlx::PgExecutor<'_>,
    queues: Option<&[String]>,
    worker_id: i64,
    limit: usize,
    floor: Option<Floor>,
) -> Result<Vec<Job>, sqlx::Error> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {JOB_COLUMNS}, claimed.traceparent, claimed.tracestate
             FROM dawdle_claim_jobs_v2($1, $2, $3, $4, $5) AS claimed,
                  LATERAL (SELECT (claimed.job).*) AS job"
        )
    });
    sqlx::query_as(sql)
        .bind(queues)
        .bind(worker_id)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(floor.map(|floor| floor.priority))
        .bind(floor.map(|floor| floor.id))
        .fetch_all(executor)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;

    use crate::testing::{eventually, TestDatabase};
    use crate::worker::floor::Floor;
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
        let claim =
            tokio::spawn(async move { super::claim(&pool, None, worker_id, 10, None).await });
        eventually(Duration::from_secs(10), "the claim to wait on the worker row", async || {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                WHERE wait_event_type = 'Lock' AND query LIKE '%dawdle_claim_jobs_v2%')",
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
            super::claim(db.pool(), Some(&queues), worker_id, limit, None)
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

    /// From a floor, the claim leaves out the jobs of the floor's priority
    /// below its id, and takes every other job in claim order: higher
    /// priorities from the head, lower ones after the floor's, for every
    /// queue and for listed queues alike.
    #[tokio::test]
    async fn a_claim_from_a_floor_leaves_out_only_the_floors_priority_below_it() {
        let db = TestDatabase::with_schema().await;
        let worker_id: i64 = sqlx::query_scalar("SELECT procrastinate_register_worker_v1()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        // The ids of the jobs claimed, in id order.
        let claim = async |queues: Option<&[String]>, limit, floor| {
            let mut ids: Vec<i64> = super::claim(db.pool(), queues, worker_id, limit, floor)
                .await
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect();
            ids.sort();
            ids
        };
        // Jobs of queue q with these priorities, in id order.
        let defer = async |priorities: &[i32]| {
            let mut ids = Vec::new();
            for priority in priorities {
                let job = NewJob::new("t", serde_json::json!({}))
                    .unwrap()
                    .queue("q")
                    .priority(*priority);
                ids.push(crate::defer(db.pool(), &job).await.unwrap());
            }
            ids
        };
        let queues = [None, Some(vec!["q".to_string()])];
        for queues in &queues {
            let ids = defer(&[0, 5, 0, -3, 0, 5, -3, 0]).await;
            let floor = Floor {
                priority: 0,
                id: ids[4],
            };
            let mut expected = vec![ids[1], ids[5], ids[4], ids[7], ids[3], ids[6]];
            expected.sort();
            assert_eq!(
                claim(queues.as_deref(), 10, Some(floor)).await,
                expected,
                "queues {queues:?}: all but the 0s below the floor"
            );
            // What the floor left out is still there for a claim without one.
            assert_eq!(
                claim(queues.as_deref(), 10, None).await,
                vec![ids[0], ids[2]],
                "without a floor, the rest"
            );
        }
        // The size counts across the parts, in claim order.
        let ids = defer(&[0, 0, 5, 0, -1]).await;
        let floor = Floor {
            priority: 0,
            id: ids[1],
        };
        let first = claim(None, 3, Some(floor)).await;
        assert_eq!(
            first,
            vec![ids[1], ids[2], ids[3]],
            "5, then the 0s from the floor"
        );
    }
}
