//! The runbook's operations as commands, one file per group: `stats`; what
//! failed and one job's story (`failed`, `job`); the changes (`retry`,
//! `retry-failed`, `purge`, `reset-stalled`, `cancel`, `clear-pending`);
//! health and the monitoring checks (`healthcheck`, `check`); pausing and
//! resuming queues (`queue`). Each is a thin
//! layer over `dawdle::admin`; the shell reuses the same printers.

mod changes;
mod health;
mod inspect;
pub(crate) mod queues;
mod stats;

pub(crate) use changes::{
    cancel, clear_pending, purge, reset_stalled, retry, retry_failed, CancelArgs, ClearPendingArgs,
    PurgeArgs, ResetStalledArgs, RetryArgs, RetryFailedArgs,
};
pub(crate) use health::{check, check_failure, healthcheck, CheckArgs, HealthcheckArgs};
pub(crate) use inspect::{failed, job, show_job, FailedArgs, JobArgs};
pub(crate) use stats::{print_stats, stats, StatsArgs};
