//! `dawdle db start|stop|status|url`: the embedded PostgreSQL that serves
//! as the jobs database when no URL is set.

use std::process::ExitCode;

use clap::Subcommand;
use dawdle::database::default_home;
use dawdle::local_pg::{LocalCluster, LocalClusterConfig};
use dawdle::JobsDatabase;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Create (if needed) and start the embedded PostgreSQL, and its `jobs` database.
    Start,
    /// Stop the embedded PostgreSQL.
    Stop,
    /// Say whether the embedded PostgreSQL is running, and where.
    Status,
    /// Print the jobs database URL of the embedded PostgreSQL (starting it if needed).
    Url,
}

pub(crate) async fn run(command: DbCommand) -> Result<ExitCode, Failure> {
    let home = default_home();
    match command {
        DbCommand::Start | DbCommand::Url => {
            let database = JobsDatabase::embedded(home).await?;
            if matches!(command, DbCommand::Start) {
                outln!("embedded PostgreSQL is running; jobs database URL:");
            }
            outln!("{}", database.url());
        }
        DbCommand::Stop => {
            let cluster = LocalCluster::new(LocalClusterConfig::persistent(home))?;
            let stopped = cluster.clone();
            let was_running = tokio::task::spawn_blocking(move || -> Result<bool, Failure> {
                let running = stopped.is_running()?;
                stopped.stop()?;
                Ok(running)
            })
            .await
            .expect("stopping the local PostgreSQL panicked")?;
            if was_running {
                outln!(
                    "stopped the embedded PostgreSQL in {}",
                    cluster.base_dir().display()
                );
            } else {
                outln!(
                    "the embedded PostgreSQL in {} was not running",
                    cluster.base_dir().display()
                );
            }
        }
        DbCommand::Status => {
            let cluster = LocalCluster::new(LocalClusterConfig::persistent(home))?;
            let probed = cluster.clone();
            let running = tokio::task::spawn_blocking(move || probed.is_running())
                .await
                .expect("checking the local PostgreSQL panicked")?;
            if running {
                outln!(
                    "running: {} (jobs database URL: {})",
                    cluster.base_dir().display(),
                    cluster.url(dawdle::database::EMBEDDED_JOBS_DATABASE)
                );
            } else {
                outln!("not running: {}", cluster.base_dir().display());
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
