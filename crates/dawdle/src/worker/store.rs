//! What the worker asks of the jobs database while it runs, as two traits:
//! the jobs database (`Db`) implements them through `crate::state` (the only writer of job
//! rows), and the unit tests of the claiming loop's and the completer's
//! timing implement them in memory.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::floor::Floor;
use crate::database::pinned::Db;
use crate::job::Job;
use crate::state::{self, Outcome, PutBack, Returned};

/// What a look for jobs scheduled for later found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scheduled {
    /// The database's `now()` as it read the table.
    pub(crate) now: DateTime<Utc>,
    /// How long until the earliest job found is due: zero if it already
    /// is, `None` when none was found.
    pub(crate) wait: Option<Duration>,
}

/// Where the completer writes outcomes.
pub(crate) trait Recorder: Send + Sync + 'static {
    /// Writes `batch` whole, or fails leaving it unwritten.
    /// [`state::record`]: how many outcomes were refused, their jobs
    /// failed instead.
    fn record(&self, batch: &[Outcome]) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// What the claiming loop reads and changes.
pub(crate) trait Store: Recorder + Clone {
    /// [`state::claim`].
    fn claim(
        &self,
        queues: Option<&[String]>,
        worker_id: i64,
        limit: usize,
        floor: Option<Floor>,
    ) -> impl Future<Output = Result<Vec<Job>, sqlx::Error>> + Send;

    /// [`state::put_back`]: the jobs put back, and those failed instead.
    fn put_back(
        &self,
        put_back: &PutBack<'_>,
    ) -> impl Future<Output = Result<Returned, sqlx::Error>> + Send;

    /// When the earliest job of `queues` scheduled after `since` (every job
    /// scheduled at all, when `None`) is due, with the database's time of
    /// the look.
    fn next_scheduled(
        &self,
        queues: Option<&[String]>,
        since: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Scheduled, sqlx::Error>> + Send;

    /// Registers the worker anew (after it was pruned as stalled): its id.
    fn register(&self) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

impl Recorder for Db {
    async fn record(&self, batch: &[Outcome]) -> Result<u64, sqlx::Error> {
        state::record(self, batch).await
    }
}

impl Store for Db {
    async fn claim(
        &self,
        queues: Option<&[String]>,
        worker_id: i64,
        limit: usize,
        floor: Option<Floor>,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let mut conn = self.begin().await?;
        let claimed = state::claim(&mut *conn, queues, worker_id, limit, floor).await;
        conn.finish(claimed).await
    }

    async fn put_back(&self, put_back: &PutBack<'_>) -> Result<Returned, sqlx::Error> {
        let mut conn = self.begin().await?;
        let put = state::put_back(&mut conn, put_back).await;
        conn.finish(put).await
    }

    async fn next_scheduled(
        &self,
        queues: Option<&[String]>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Scheduled, sqlx::Error> {
        let mut conn = self.begin().await?;
        // One range of the scheduled jobs' index, from `since` on: the jobs
        // that came due since the last look are in it, and jobs that stay
        // due but cannot run (a lock held, a queue paused) are left behind
        // once a look has passed them, so they cannot ask for claims again
        // and again.
        let looked: Result<(DateTime<Utc>, Option<f64>), sqlx::Error> = sqlx::query_as(
            "SELECT now(),
                    (SELECT EXTRACT(EPOCH FROM min(scheduled_at) - now())::float8
                     FROM procrastinate_jobs
                     WHERE status = 'todo' AND scheduled_at IS NOT NULL
                       AND scheduled_at > COALESCE($2, '-infinity'::timestamptz)
                       AND ($1::varchar[] IS NULL OR queue_name = ANY ($1)))",
        )
        .bind(queues)
        .bind(since)
        .fetch_one(&mut *conn)
        .await;
        let (now, seconds) = conn.finish(looked).await?;
        Ok(Scheduled {
            now,
            // A job scheduled at 'infinity' is never due.
            wait: seconds.and_then(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).ok()),
        })
    }

    async fn register(&self) -> Result<i64, sqlx::Error> {
        super::maintenance::register_once(self).await
    }
}
