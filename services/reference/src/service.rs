//! Starting and stopping: `serve` (the API with its in-process worker and,
//! when enabled, the outbox relay), `worker` (the worker alone) and
//! `migrate`.
//!
//! Shutdown runs in stages on SIGTERM or SIGINT: the HTTP server stops
//! accepting and finishes the requests in flight; the relay makes a last
//! pass, so events those requests committed reach the jobs database; the
//! worker stops claiming, lets running jobs finish (within
//! `JOB_SHUTDOWN_TIMEOUT_SECONDS`) and records every outcome. Then the
//! process exits 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dawdle::{Registry, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::api::{self, AppState, WorkerStatus};
use crate::config::{InvalidSetting, Settings};
use crate::databases::{DatabaseError, Databases};
use crate::events::EventBus;
use crate::outbox::Relay;
use crate::shutdown;
use crate::tasks::{self, CrmClient, Environment, Mailer};
use crate::unit_of_work::Publisher;

/// Failures that stop the service, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("set up email: {0}")]
    Mailer(#[from] tasks::MailerError),
    #[error("set up the CRM client: {0}")]
    Crm(#[from] reqwest::Error),
    #[error("listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Connections to the jobs database: the worker's claim, completion, LISTEN
/// and heartbeat, plus the API's defers.
const JOBS_CONNECTIONS: u32 = 16;

/// The API, its worker (unless `JOB_QUEUE_ENABLED=false`) and the outbox
/// relay (if `OUTBOX_ENABLED`), until SIGTERM.
pub(crate) async fn serve(settings: Settings) -> Result<(), ServiceError> {
    settings.validate()?;
    let stop = listen_for_termination();
    let Some(databases) =
        Databases::connect(&settings, JOBS_CONNECTIONS, Some(stop.clone())).await?
    else {
        info!("stopped before the databases were reachable");
        return Ok(());
    };
    databases.migrate().await?;
    // Before the worker starts, so that it records into it.
    let metrics = crate::metrics::install();
    if let Some(handle) = &metrics {
        tokio::spawn(crate::metrics::maintain(
            handle.clone(),
            databases.jobs.clone(),
            settings.worker_config()?.stalled_after,
            stop.clone(),
        ));
    }
    let registry = install_tasks(&settings, &databases)?;
    let bus = EventBus::new(databases.jobs.clone());
    let publisher = if settings.outbox_enabled {
        Publisher::Outbox
    } else {
        Publisher::AfterCommit(bus.clone())
    };
    let listener = TcpListener::bind(settings.bind)
        .await
        .map_err(|source| ServiceError::Bind {
            address: settings.bind,
            source,
        })?;
    let address = listener.local_addr().map_err(ServiceError::Serve)?;

    let worker_status = Arc::new(WorkerStatus {
        enabled: settings.job_queue_enabled,
        running: AtomicBool::new(false),
    });
    let (stop_worker, worker_stop) = shutdown::channel();
    let worker = if settings.job_queue_enabled {
        Some(tokio::spawn(run_worker(
            databases.jobs.clone(),
            registry,
            settings.worker_config()?,
            worker_stop,
            worker_status.clone(),
        )))
    } else {
        warn!(
            "job_queue_worker_disabled: JOB_QUEUE_ENABLED=false; jobs are deferred and wait \
             in todo until a worker runs (`reference-service worker`)"
        );
        None
    };
    let (stop_relay, relay_stop) = shutdown::channel();
    let relay = Relay::new(
        databases.main.clone(),
        bus,
        settings.outbox_poll_interval()?,
    );
    let relay = if settings.outbox_enabled {
        Some(tokio::spawn(relay.run(relay_stop)))
    } else {
        // Events written while the outbox was on, before a restart with it
        // off, would otherwise wait for it to be turned on again.
        if let Err(error) = relay.relay_all().await {
            warn!(error = %error, "failed to relay the events left in the outbox");
        }
        None
    };

    let state = AppState {
        main: databases.main.clone(),
        jobs: databases.jobs.clone(),
        publisher,
        worker: worker_status,
        outbox_enabled: settings.outbox_enabled,
        metrics,
    };
    info!(
        address = %address,
        worker = settings.job_queue_enabled,
        outbox = settings.outbox_enabled,
        main_database = %databases.main_url,
        jobs_database = %databases.jobs_url,
        "api_listening"
    );
    let router = api::router(state).merge(dashboard(&databases.jobs, address));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop.fired())
        .await;
    info!("api_stopped");

    stop_relay.fire();
    if let Some(relay) = relay {
        if let Err(error) = relay.await {
            error!(error = %error, "the outbox relay panicked");
        }
    }
    stop_worker.fire();
    if let Some(worker) = worker {
        if let Err(error) = worker.await {
            error!(error = %error, "the worker panicked");
        }
    }
    served.map_err(ServiceError::Serve)?;
    info!("service_stopped");
    Ok(())
}

/// The worker alone, for when the API and the workers scale apart.
pub(crate) async fn work(settings: Settings) -> Result<(), ServiceError> {
    settings.validate()?;
    let stop = listen_for_termination();
    let Some(databases) =
        Databases::connect(&settings, JOBS_CONNECTIONS, Some(stop.clone())).await?
    else {
        info!("stopped before the databases were reachable");
        return Ok(());
    };
    databases.migrate().await?;
    let registry = install_tasks(&settings, &databases)?;
    let status = Arc::new(WorkerStatus {
        enabled: true,
        running: AtomicBool::new(false),
    });
    run_worker(
        databases.jobs.clone(),
        registry,
        settings.worker_config()?,
        stop,
        status,
    )
    .await;
    info!("service_stopped");
    Ok(())
}

/// Applies the main database's migrations and the jobs schema, then exits.
pub(crate) async fn migrate(settings: Settings) -> Result<(), ServiceError> {
    settings.validate()?;
    let databases = Databases::connect(&settings, 2, None)
        .await?
        .expect("connecting without waiting always answers");
    databases.migrate().await?;
    Ok(())
}

/// The signal that starts the shutdown. A second signal while draining ends
/// the process at once, for an operator who cannot wait.
fn listen_for_termination() -> shutdown::Signal {
    let (trigger, signal) = shutdown::channel();
    tokio::spawn(async move {
        let name = shutdown::termination().await;
        info!(signal = name, "shutdown_requested");
        trigger.fire();
        let again = shutdown::termination().await;
        warn!(signal = again, "second signal during shutdown; exiting now");
        std::process::exit(1);
    });
    signal
}

fn install_tasks(settings: &Settings, databases: &Databases) -> Result<Registry, ServiceError> {
    let mailer = Mailer::new(&settings.email_delivery()?, &settings.email_from)?;
    let crm = CrmClient::new(&settings.crm_webhook_url, settings.crm_timeout()?)?;
    info!(
        email = %mailer.describe(),
        crm = %dawdle::database::redact_password(crm.url()),
        "tasks_configured"
    );
    Ok(tasks::install(Environment {
        mailer,
        crm,
        main: databases.main.clone(),
        retry: settings.retry()?,
    }))
}

async fn run_worker(
    jobs: PgPool,
    registry: Registry,
    config: WorkerConfig,
    stop: shutdown::Signal,
    status: Arc<WorkerStatus>,
) {
    status.running.store(true, Ordering::Relaxed);
    // The worker logs `job_queue_worker_started` once it is registered, and
    // `job_queue_worker_stopped` with its counts when it has drained.
    let result = Worker::new(jobs, registry, config).run(stop.fired()).await;
    status.running.store(false, Ordering::Relaxed);
    if let Err(error) = result {
        error!(error = %error, "the worker could not start");
    }
}

/// Where the dashboard is mounted on the API.
const DASHBOARD_PATH: &str = "/admin/jobs";

/// The jobs dashboard under [`DASHBOARD_PATH`]: open on a loopback
/// address, behind `DAWDLE_DASHBOARD_USER` / `DAWDLE_DASHBOARD_PASSWORD`
/// otherwise, and left out (with a warning) when those are missing there.
fn dashboard(jobs: &PgPool, address: SocketAddr) -> axum::Router {
    let auth = match dawdle_dashboard::BasicAuth::from_env() {
        Ok(auth) => auth,
        Err(why) => {
            warn!(problem = %why, "dashboard_disabled");
            return axum::Router::new();
        }
    };
    if let Err(why) = dawdle_dashboard::check_bind(address, auth.as_ref()) {
        warn!(problem = %why, "dashboard_disabled");
        return axum::Router::new();
    }
    info!(
        path = DASHBOARD_PATH,
        authentication = auth.is_some(),
        "dashboard_mounted"
    );
    // Actions (retry, cancel, pause, resume) with DAWDLE_DASHBOARD_ACTIONS=true;
    // the dashboard keeps them off without credentials.
    let actions = std::env::var("DAWDLE_DASHBOARD_ACTIONS").is_ok_and(|v| v.trim() == "true");
    let config = dawdle_dashboard::DashboardConfig {
        base_path: DASHBOARD_PATH.to_string(),
        auth,
        actions,
    };
    dawdle_dashboard::router(jobs.clone(), config)
}
