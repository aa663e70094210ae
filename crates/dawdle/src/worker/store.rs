//! What the worker asks of the jobs database while it runs, as two traits:
//! the jobs database (`Db`) implements them through `crate::state` (the only writer of job
//! rows), and the unit tests of the claiming loop's and the completer's
//! timing implement them in memory.

use std::future::Future;
use std::time::Duration;

use super::floor::Floor;
use crate::database::pinned::Db;
use crate::job::Job;
use crate::state::{self, Outcome, PutBack};

/// Where the completer writes outcomes.
pub(crate) trait Recorder: Send + Sync + 'static {
    /// Writes `batch` whole, or fails leaving it unwritten.
    fn record(&self, batch: &[Outcome]) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
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

    /// [`state::put_back`]: the ids and task names of the jobs put back.
    fn put_back(
        &self,
        put_back: &PutBack<'_>,
    ) -> impl Future<Output = Result<Vec<(i64, String)>, sqlx::Error>> + Send;

    /// How long until the earliest job of `queues` scheduled for later is
    /// due; `None` when there is none.
    fn next_scheduled(
        &self,
        queues: Option<&[String]>,
    ) -> impl Future<Output = Result<Option<Duration>, sqlx::Error>> + Send;

    /// Registers the worker anew (after it was pruned as stalled): its id.
    fn register(&self) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

impl Recorder for Db {
    async fn record(&self, batch: &[Outcome]) -> Result<(), sqlx::Error> {
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

    async fn put_back(&self, put_back: &PutBack<'_>) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let mut conn = self.begin().await?;
        let put = state::put_back(&mut *conn, put_back).await;
        conn.finish(put).await
    }

    async fn next_scheduled(
        &self,
        queues: Option<&[String]>,
    ) -> Result<Option<Duration>, sqlx::Error> {
        let mut conn = self.begin().await?;
        let seconds: Result<Option<f64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM min(scheduled_at) - now())::float8
             FROM procrastinate_jobs
             WHERE status = 'todo' AND scheduled_at IS NOT NULL AND scheduled_at > now()
               AND ($1::varchar[] IS NULL OR queue_name = ANY ($1))",
        )
        .bind(queues)
        .fetch_one(&mut *conn)
        .await;
        let seconds = conn.finish(seconds).await?;
        Ok(seconds.and_then(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).ok()))
    }

    async fn register(&self) -> Result<i64, sqlx::Error> {
        super::maintenance::register_once(self).await
    }
}
