//! The only writer of job rows: every transition of a job, once.
//!
//! Workers, upkeep and the admin operations (CLI and shell) change
//! jobs only through this module, so each rule about a transition lives in
//! one place. Inserting new jobs is `crate::defer`'s; everything after is
//! here:
//!
//! | transition                          | function                       |
//! |-------------------------------------|--------------------------------|
//! | `todo` -> `doing` (claim)           | [`claim`]                      |
//! | `doing` -> an outcome, or deleted   | [`record`] (succeeded, failed, aborted, cancelled; `todo` for a retry or a snooze) |
//! | `doing` -> `todo` without outcome   | [`put_back`] (lost claims, a crashed worker, stalled workers' jobs, operator resets) |
//! | `failed` -> `todo` (retry)          | [`retry_one`], [`retry_matching`] |
//! | `todo` -> `cancelled`, abort flag   | [`cancel`]                     |
//! | `todo` deleted                      | [`clear_pending`]              |
//! | finished and old, deleted           | [`purge_window`]               |
//!
//! Invariants kept here (and, for hand-written SQL, by the schema's
//! triggers): `todo` jobs have no `started_at`, `finished_at` or worker;
//! `doing` jobs have the worker that claimed them and the start of their
//! attempt; finished jobs have `finished_at`. An outcome only applies to a
//! job still `doing` under the worker that claimed it. History events come
//! from the statement-level triggers, so every path records the same ones.

mod claim;
mod manage;
mod put_back;
mod record;
mod refused;

pub(crate) use claim::claim;
pub(crate) use manage::{cancel, clear_pending, purge_window, retry_matching, retry_one};
pub(crate) use put_back::{put_back, PutBack, Returned, Selection};
pub(crate) use record::{record, Outcome, Verdict};
pub(crate) use refused::{refused_for_its_data, why_refused};
