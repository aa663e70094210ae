//! dawdle's web dashboard: the runbook's questions answered in a browser.
//!
//! Server-rendered HTML from templates checked at compile time (every value
//! from a row is escaped: arguments, tracebacks and task names are input
//! from whoever deferred the job), with a small embedded script that
//! refreshes the overview's counts. No build step, no CDN: every asset is
//! in the binary.
//!
//! Merge [`router`] into an axum application (the reference service serves
//! it under `/admin/jobs`), or run `dawdle dashboard`. Every page reads through
//! `dawdle::admin`, the module the command line uses.
//!
//! Security: read-only unless [`DashboardConfig::actions`] is on, which
//! needs credentials. With [`BasicAuth`] configured every page asks for
//! them; [`check_bind`] refuses to serve a non-loopback address without
//! them. Action forms carry a per-process token a page of another site
//! cannot read, and a browser's cross-site POST is refused.

mod actions;
mod auth;
mod pages;

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;

pub use auth::BasicAuth;

/// How the dashboard is served.
#[derive(Debug, Clone, Default)]
pub struct DashboardConfig {
    /// Where the router is mounted (`/admin/jobs`), for its links; empty
    /// at the root.
    pub base_path: String,
    /// Credentials every page asks for; `None` leaves the pages open (for
    /// a loopback address only, see [`check_bind`]).
    pub auth: Option<BasicAuth>,
    /// Offer the actions (retry, cancel, pause, resume). Only with `auth`:
    /// without credentials the dashboard stays read-only.
    pub actions: bool,
}

/// The dashboard's routes, under `config.base_path` (`/admin/jobs/…`, or
/// `/…` when empty): merge the router into an application's own.
pub fn router(pool: PgPool, config: DashboardConfig) -> Router {
    let base = config.base_path.trim_end_matches('/').to_string();
    let actions = config.actions && config.auth.is_some();
    if config.actions && !actions {
        tracing::warn!("dashboard actions are off: they need credentials (DAWDLE_DASHBOARD_USER and DAWDLE_DASHBOARD_PASSWORD)");
    }
    let state = pages::State::new(pool, base.clone(), actions.then(actions::Csrf::new));
    let mut router = Router::new()
        .route(&format!("{base}/"), get(pages::overview))
        .route(&format!("{base}/jobs"), get(pages::jobs))
        .route(&format!("{base}/jobs/{{id}}"), get(pages::job))
        .route(&format!("{base}/failures"), get(pages::failures))
        .route(&format!("{base}/queues"), get(pages::queues))
        .route(&format!("{base}/workers"), get(pages::workers))
        .route(&format!("{base}/purge"), get(pages::purge))
        .route(&format!("{base}/api/overview"), get(pages::overview_json))
        .route(&format!("{base}/assets/{{name}}"), get(pages::asset));
    if !base.is_empty() {
        router = router.route(&base, get(pages::overview));
    }
    let action_routes = [
        format!("{base}/jobs/{{id}}/retry"),
        format!("{base}/jobs/{{id}}/cancel"),
        format!("{base}/jobs/{{id}}/reset"),
        format!("{base}/failures/retry"),
        format!("{base}/queues/{{queue}}/pause"),
        format!("{base}/queues/{{queue}}/resume"),
        format!("{base}/purge"),
        format!("{base}/jobs/retry"),
    ];
    router = if actions {
        // Every action behind the one token check.
        let guarded = |handler: axum::routing::MethodRouter<pages::State>| {
            handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                actions::require_token,
            ))
        };
        router
            .route(&action_routes[0], guarded(post(actions::retry)))
            .route(&action_routes[1], guarded(post(actions::cancel)))
            .route(&action_routes[2], guarded(post(actions::reset)))
            .route(&action_routes[3], guarded(post(actions::retry_failed)))
            .route(&action_routes[4], guarded(post(actions::pause)))
            .route(&action_routes[5], guarded(post(actions::resume)))
            .route(&action_routes[6], guarded(post(actions::purge)))
            .route(&action_routes[7], guarded(post(actions::retry_selected)))
    } else {
        action_routes.iter().fold(router, |router, path| {
            router.route(path, post(actions::disabled))
        })
    };
    let router = router.with_state(state);
    match config.auth {
        Some(auth) => auth::protect(router, auth),
        None => router,
    }
}

/// Refuses to serve `address` to other machines without credentials: the
/// pages show job arguments, which may hold personal data.
pub fn check_bind(address: SocketAddr, auth: Option<&BasicAuth>) -> Result<(), String> {
    if address.ip().is_loopback() || auth.is_some() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve the dashboard on {address} without authentication: anyone who can \
         reach it would read every job's arguments. Set DAWDLE_DASHBOARD_USER and \
         DAWDLE_DASHBOARD_PASSWORD, or bind to 127.0.0.1"
    ))
}
