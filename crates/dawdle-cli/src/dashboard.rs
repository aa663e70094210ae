//! `dawdle dashboard`: the web dashboard on its own port.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use dawdle_dashboard::{check_bind, BasicAuth, DashboardConfig};

use crate::database::{jobs_database, jobs_pool_sized};
use crate::failure::Failure;
use crate::worker::{init_logging, shutdown_signal, LogFormat};

/// Connections the dashboard's pages share.
const POOL_SIZE: u32 = 4;

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Address to serve the dashboard on. Any address but a loopback one
    /// needs DAWDLE_DASHBOARD_USER and DAWDLE_DASHBOARD_PASSWORD.
    #[arg(long, default_value = "127.0.0.1:9188", value_name = "ADDR")]
    bind: SocketAddr,
    /// Offer the actions (retry, cancel, pause and resume queues); needs
    /// DAWDLE_DASHBOARD_USER and DAWDLE_DASHBOARD_PASSWORD.
    #[arg(long)]
    actions: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DAWDLE_LOG_FORMAT")]
    log_format: LogFormat,
}

pub(crate) async fn run(
    explicit_url: Option<&str>,
    args: DashboardArgs,
) -> Result<ExitCode, Failure> {
    let auth = BasicAuth::from_env().map_err(|why| Failure {
        code: 2,
        ..Failure::new(format!("failed to start the dashboard: {why}"))
    })?;
    if args.actions && auth.is_none() {
        return Err(Failure {
            code: 2,
            ..Failure::new(
                "failed to start the dashboard: --actions needs credentials: set \
                 DAWDLE_DASHBOARD_USER and DAWDLE_DASHBOARD_PASSWORD (every page then asks for them)",
            )
        });
    }
    check_bind(args.bind, auth.as_ref()).map_err(|why| Failure {
        code: 2,
        ..Failure::new(format!("failed to start the dashboard: {why}"))
    })?;
    let _otlp = init_logging(args.log_format)?;
    let pool = match jobs_pool_sized(explicit_url, POOL_SIZE).await {
        Ok(pool) => pool,
        // Serve anyway: the pages answer 503 until the database is back,
        // and each request tries again.
        Err(failure) if failure.unreachable => {
            tracing::warn!(
                error = %failure.message(),
                "the jobs database is unreachable; the dashboard serves and its pages say so \
                 until it answers"
            );
            let database = jobs_database(explicit_url).await?;
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect_lazy_with(database.connect_options().clone())
        }
        Err(failure) => return Err(failure),
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|error| {
            Failure::new(format!(
                "failed to start the dashboard: cannot listen on {} ({error}); pick another \
                 address with --bind",
                args.bind
            ))
        })?;
    let address = listener.local_addr().unwrap_or(args.bind);
    tracing::info!(
        url = %format!("http://{address}/"),
        authentication = auth.is_some(),
        actions = args.actions,
        "dashboard serving"
    );
    let router = dawdle_dashboard::router(
        pool,
        DashboardConfig {
            base_path: String::new(),
            auth,
            actions: args.actions,
        },
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|error| Failure::new(format!("the dashboard stopped: {error}")))?;
    Ok(ExitCode::SUCCESS)
}
