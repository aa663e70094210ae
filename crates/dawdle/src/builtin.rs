//! Tasks dawdle ships for upkeep: `dawdle.remove_old_jobs`, the retention
//! job to run periodically (e.g. `0 3 * * *`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::{self, PurgeOptions};
use crate::context::JobContext;
use crate::task::Task;
use crate::task_error::TaskError;

/// Deletes jobs that finished more than `max_hours` ago (succeeded,
/// cancelled and aborted ones; failed ones too with `include_failed`), of
/// one queue or all, in batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveOldJobs {
    #[serde(default = "default_max_hours")]
    pub max_hours: f64,
    #[serde(default)]
    pub include_failed: bool,
    #[serde(default)]
    pub queue: Option<String>,
}

fn default_max_hours() -> f64 {
    // The runbook's recommendation for succeeded jobs: 30 days.
    30.0 * 24.0
}

impl Task for RemoveOldJobs {
    const NAME: &'static str = "dawdle.remove_old_jobs";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let older_than = Duration::try_from_secs_f64(self.max_hours * 3600.0).map_err(|_| {
            TaskError::validation(format!(
                "max_hours must be a non-negative number, not {}",
                self.max_hours
            ))
        })?;
        let options = PurgeOptions {
            older_than,
            include_failed: self.include_failed,
            queue: self.queue,
            dry_run: false,
            batch_size: 1000,
        };
        let deleted = admin::purge(ctx.pool(), &options, |_| {})
            .await
            .map_err(|error| TaskError::from_error(crate::task_error::DATABASE_ERROR, &error))?;
        tracing::info!(
            job_id = ctx.job_id,
            deleted,
            max_hours = self.max_hours,
            "removed old jobs"
        );
        Ok(())
    }
}
