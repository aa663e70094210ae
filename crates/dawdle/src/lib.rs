//! dawdle: a PostgreSQL job queue for Rust services, schema-compatible with
//! Procrastinate 3.x.
//!
//! Jobs live in their own PostgreSQL database. A job is a row of
//! `procrastinate_jobs` naming a task and its JSON arguments; its history is
//! in `procrastinate_events`. Rust code defers jobs with [`defer()`] (inside its
//! own transaction if it likes), and Python code using Procrastinate can
//! defer into, work from and inspect the same database.
//!
//! Start with [`Task`] and [`NewJob`], [`defer()`] and [`defer_batch`];
//! [`schema::apply`] creates the schema, and [`JobsDatabase`] finds the
//! database (`JOB_QUEUE_DATABASE_URL`, or an embedded local PostgreSQL).

pub mod admin;
pub mod builtin;
pub mod context;
pub mod cron;
pub mod database;
pub mod defer;
pub mod diagnostics;
pub mod duration;
pub mod job;
pub mod local_pg;
pub mod retry;
pub mod rows;
pub mod schema;
mod state;
pub mod task;
pub mod task_error;
#[cfg(feature = "opentelemetry")]
pub mod telemetry;
/// Test support (feature `testing`): throwaway databases and a kit for
/// testing tasks. Not compiled into production builds.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod trace_context;
pub mod worker;

pub use context::JobContext;
pub use database::{ConnectError, JobsDatabase};
pub use defer::{defer, defer_batch, defer_task, DeferError};
pub use job::{Event, EventType, InvalidJob, Job, JobStatus, NewJob};
pub use retry::RetryStrategy;
pub use task::Task;
pub use task_error::{ErrorKind, TaskError};
pub use trace_context::TraceContext;
pub use worker::{
    Attempt, AttemptEnd, BoxAttempt, JobEvent, JobOutcome, Middleware, Periodic, Registry,
    Retention, TaskOptions, Worker, WorkerBuilder, WorkerConfig, WorkerError, WorkerHandle,
    WorkerReport,
};

// The README's examples compile, and those not marked otherwise run, as
// doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}
