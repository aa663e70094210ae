//! Tasks for smoke tests, benchmarks and alert drills, built into the
//! `dawdle worker` binary: `dawdle.noop`, `dawdle.sleep`, `dawdle.fail`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::task::Task;
use crate::task_error::TaskError;
use crate::worker::Registry;

/// Does nothing and succeeds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {}

impl Task for Noop {
    const NAME: &'static str = "dawdle.noop";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Sleeps `seconds`, then succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    pub seconds: f64,
}

impl Task for Sleep {
    const NAME: &'static str = "dawdle.sleep";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        let duration = Duration::try_from_secs_f64(self.seconds).map_err(|_| {
            TaskError::validation(format!(
                "seconds must be a non-negative number, not {}",
                self.seconds
            ))
        })?;
        tokio::time::sleep(duration).await;
        Ok(())
    }
}

/// Fails with the given kind and message (for alert drills and retry tests).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    #[serde(default = "default_fail_kind")]
    pub kind: String,
    #[serde(default = "default_fail_message")]
    pub message: String,
}

fn default_fail_kind() -> String {
    "Error".to_string()
}

fn default_fail_message() -> String {
    "dawdle.fail was asked to fail".to_string()
}

impl Task for Fail {
    const NAME: &'static str = "dawdle.fail";

    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new(self.kind, self.message))
    }
}

/// Registers the three diagnostic tasks.
pub fn register(registry: &mut Registry) {
    registry
        .register::<Noop>()
        .register::<Sleep>()
        .register::<Fail>();
}
