//! Adopting, in place, a jobs database that Procrastinate 3.x created.
//!
//! A team already running Procrastinate has months of jobs, events, locks
//! and periodic defers in a database whose schema Procrastinate's own
//! migrations made. [`adopt`] turns it into dawdle's schema without moving a
//! row, while Python and dawdle workers keep working from it:
//!
//! 1. the adoption is recorded in `dawdle_adoption`, which makes it resumable;
//! 2. the event types dawdle adds (`error`, and `retried` before 3.4) are
//!    added, and what 3.0 lacks (the batch-defer type, the workers table);
//! 3. dawdle's indexes are built concurrently (no write is blocked);
//! 4. the functions returning whole job rows (the fetch functions) are
//!    fenced: they find no job until the switch, so that no call planned
//!    before it can get back a row with the columns it adds;
//! 5. one short transaction adds the runbook's columns (no table rewrite),
//!    replaces Procrastinate's per-row triggers, foreign keys and functions
//!    by dawdle's, puts back the fenced functions dawdle does not define, and
//!    records dawdle's migrations;
//! 6. the new constraints are validated, Procrastinate's unused indexes
//!    dropped concurrently;
//! 7. `created_at`, `started_at` and `finished_at` of the existing jobs are
//!    filled from their events, in batches of short transactions;
//! 8. the tables are vacuumed and analyzed.
//!
//! Every step checks what is already done, so running [`adopt`] again after an
//! interruption finishes the work, and running it on an adopted database does
//! nothing. The switch and each backfill batch wait at most
//! [`AdoptOptions::lock_timeout`] for their locks, then let go and try again,
//! so a long transaction elsewhere delays the adoption instead of queueing
//! every worker behind it; a switch that never gets its locks lifts the
//! fence.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::{
    apply_pending, record, SchemaError, CREATE_MIGRATIONS_TABLE, EXPECTED_FUNCTIONS, MIGRATIONS,
    MIGRATION_LOCK_KEY,
};

/// What kind of jobs schema a database has, as far as adoption cares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// No `procrastinate_jobs` table.
    Empty,
    /// dawdle's schema (`dawdle_migrations` exists).
    Dawdle,
    /// Procrastinate 3.x's schema; `release` says which releases' migrations
    /// left it so ("3.0", "3.1", "3.2 or 3.3", "3.4 or later").
    Procrastinate3 { release: &'static str },
    /// Procrastinate 3.0's first migration applied without its second one.
    Procrastinate30Unfinished,
    /// Procrastinate 2.x or older (no `abort_requested` column).
    ProcrastinateOld,
}

impl Source {
    pub fn is_procrastinate(&self) -> bool {
        matches!(
            self,
            Source::Procrastinate3 { .. }
                | Source::Procrastinate30Unfinished
                | Source::ProcrastinateOld
        )
    }

    /// The schema in a few words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Empty => "no jobs schema".to_string(),
            Source::Dawdle => "dawdle's schema".to_string(),
            Source::Procrastinate3 { release } => {
                format!("Procrastinate's own schema (as its {release} migrations leave it)")
            }
            Source::Procrastinate30Unfinished => {
                "Procrastinate's own schema halfway through its 3.0 migration".to_string()
            }
            Source::ProcrastinateOld => {
                "Procrastinate's own schema of release 2.x or older".to_string()
            }
        }
    }

    /// What to do with such a database.
    pub fn remedy(&self) -> String {
        match self {
            Source::Empty => "run `dawdle schema apply`".to_string(),
            Source::Dawdle => "nothing to do".to_string(),
            Source::Procrastinate3 { .. } => "run `dawdle schema adopt` to convert it in place \
                 (jobs, history, locks and periodic defers are kept; Python workers may keep \
                 running); `dawdle schema adopt --dry-run` shows the plan first"
                .to_string(),
            Source::Procrastinate30Unfinished => "finish Procrastinate's 3.0 migration first \
                 (apply its 03.00.00_50_post_cancel_notification.sql), then run \
                 `dawdle schema adopt`"
                .to_string(),
            Source::ProcrastinateOld => "dawdle adopts Procrastinate 3.x databases only: \
                 upgrade this one to 3.x with Procrastinate's own migrations first (install \
                 procrastinate 3.x and apply its migrations from 03.00.00_01 on, as its \
                 release notes describe), then run `dawdle schema adopt`"
                .to_string(),
        }
    }
}

/// Tells which schema the database has. Reads only.
pub async fn detect(conn: &mut PgConnection) -> Result<Source, sqlx::Error> {
    let (has_jobs, has_dawdle, has_abort, has_workers, has_batch_defer, has_retried, mid_30): (
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT to_regclass('procrastinate_jobs') IS NOT NULL,
                to_regclass('dawdle_migrations') IS NOT NULL,
                EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = to_regclass('procrastinate_jobs')
                          AND attname = 'abort_requested' AND NOT attisdropped),
                to_regclass('procrastinate_workers') IS NOT NULL,
                to_regtype('procrastinate_job_to_defer_v1') IS NOT NULL,
                EXISTS (SELECT 1 FROM pg_enum
                        WHERE enumtypid = to_regtype('procrastinate_job_event_type')
                          AND enumlabel = 'retried'),
                EXISTS (SELECT 1 FROM pg_trigger
                        WHERE tgrelid = to_regclass('procrastinate_jobs')
                          AND tgname = 'procrastinate_trigger_sync_abort_requested_with_status_temp')",
    )
    .fetch_one(conn)
    .await?;
    Ok(if has_dawdle {
        Source::Dawdle
    } else if !has_jobs {
        Source::Empty
    } else if !has_abort {
        Source::ProcrastinateOld
    } else if mid_30 {
        Source::Procrastinate30Unfinished
    } else {
        let release = if !has_workers {
            "3.0"
        } else if !has_batch_defer {
            "3.1"
        } else if !has_retried {
            "3.2 or 3.3"
        } else {
            "3.4 or later"
        };
        Source::Procrastinate3 { release }
    })
}

/// How [`adopt`] behaves.
#[derive(Debug, Clone)]
pub struct AdoptOptions {
    /// Jobs per backfill transaction.
    pub batch_size: i64,
    /// Longest wait for a table lock before letting go and trying again.
    pub lock_timeout: Duration,
    /// Tries of a locking step before giving up (the adoption can be run
    /// again later and resumes).
    pub lock_attempts: u32,
}

impl Default for AdoptOptions {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            lock_timeout: Duration::from_secs(2),
            lock_attempts: 30,
        }
    }
}

/// Failures of an adoption, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("adopt the database: it has {found}; {remedy}")]
    Unsupported { found: String, remedy: String },
    #[error(
        "adopt the database: step `{step}` did not get its lock within {timeout:?} in \
         {attempts} tries{blockers}; end those sessions or run the adoption again when \
         the database is quieter (it resumes where it stopped)"
    )]
    LockTimeout {
        step: &'static str,
        timeout: Duration,
        attempts: u32,
        blockers: String,
    },
    #[error("adopt the database (step `{step}`): {source}")]
    Step {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl From<sqlx::Error> for AdoptError {
    fn from(source: sqlx::Error) -> Self {
        AdoptError::Step {
            step: "inspect",
            source,
        }
    }
}

/// Rows of the database, by kind: what the dry run prints and what an
/// adoption must leave as it found (plus what workers did meanwhile).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub jobs_by_status: Vec<(String, i64)>,
    pub events_by_type: Vec<(String, i64)>,
    pub workers: i64,
    pub periodic_defers: i64,
    /// `doing` jobs holding a lock.
    pub held_locks: i64,
}

impl Counts {
    pub fn jobs(&self) -> i64 {
        self.jobs_by_status.iter().map(|(_, n)| n).sum()
    }

    pub fn events(&self) -> i64 {
        self.events_by_type.iter().map(|(_, n)| n).sum()
    }
}

/// Reads the row counts (a scan of the jobs and events tables).
pub async fn counts(conn: &mut PgConnection) -> Result<Counts, sqlx::Error> {
    let jobs_by_status = sqlx::query_as(
        "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let events_by_type = sqlx::query_as(
        "SELECT coalesce(type::text, '(none)'), count(*) FROM procrastinate_events
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let (periodic_defers, held_locks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM procrastinate_periodic_defers),
                (SELECT count(*) FROM procrastinate_jobs
                 WHERE status = 'doing' AND lock IS NOT NULL)",
    )
    .fetch_one(&mut *conn)
    .await?;
    // Procrastinate 3.0 had no workers table.
    let has_workers: bool =
        sqlx::query_scalar("SELECT to_regclass('procrastinate_workers') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    let workers = if has_workers {
        sqlx::query_scalar("SELECT count(*) FROM procrastinate_workers")
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    Ok(Counts {
        jobs_by_status,
        events_by_type,
        workers,
        periodic_defers,
        held_locks,
    })
}

/// One step of the plan, as the dry run prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedStep {
    pub name: &'static str,
    pub action: String,
    /// Whether the step is already done (an earlier, interrupted run).
    pub done: bool,
}

/// What [`plan`] found and would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub source: Source,
    pub counts: Counts,
    pub steps: Vec<PlannedStep>,
}

/// Progress of an adoption, as `dawdle_adoption` records it.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
struct State {
    source: String,
    switched: bool,
    boundary_id: Option<i64>,
    backfilled_through: i64,
    finished: bool,
}

async fn state(conn: &mut PgConnection) -> Result<Option<State>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('dawdle_adoption') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT source, switched_at IS NOT NULL AS switched, boundary_id,
                backfilled_through, finished_at IS NOT NULL AS finished
         FROM dawdle_adoption",
    )
    .fetch_optional(conn)
    .await
}

/// A line for `schema check` while an adoption is not finished on a database
/// that already runs dawdle's schema; `None` otherwise.
pub async fn unfinished_note(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    let Some(state) = state(conn).await? else {
        return Ok(None);
    };
    if state.finished {
        return Ok((!args_check_exists(conn).await?).then(|| {
            "the check that job arguments are JSON objects was left out by the adoption: \
             some jobs' arguments are not (SELECT id, task_name FROM procrastinate_jobs WHERE \
             jsonb_typeof(args) <> 'object'); fix them, then run `dawdle schema adopt` to add it"
                .to_string()
        }));
    }
    let boundary = state.boundary_id.unwrap_or(0);
    Ok(Some(format!(
        "the adoption of this Procrastinate database is not finished (timestamps filled \
         for jobs up to id {} of {boundary}); run `dawdle schema adopt` to finish it",
        state.backfilled_through.min(boundary)
    )))
}

/// The indexes of dawdle's schema on the tables Procrastinate created, with
/// the definitions the migrations give them; built concurrently before the
/// switch.
const INDEXES: &[(&str, &str)] = &[
    (
        "dawdle_jobs_claim_order_idx",
        "ON procrastinate_jobs (priority DESC, id ASC) WHERE status = 'todo'",
    ),
    (
        "dawdle_jobs_claim_queue_idx",
        "ON procrastinate_jobs (queue_name, priority DESC, id ASC) WHERE status = 'todo'",
    ),
    (
        "dawdle_jobs_waiting_lock_idx",
        "ON procrastinate_jobs (lock, priority DESC, id ASC) \
         WHERE status = 'todo' AND lock IS NOT NULL",
    ),
    (
        "dawdle_jobs_running_idx",
        "ON procrastinate_jobs (worker_id) WHERE status = 'doing'",
    ),
    (
        "dawdle_jobs_scheduled_idx",
        "ON procrastinate_jobs (scheduled_at) WHERE status = 'todo' AND scheduled_at IS NOT NULL",
    ),
    (
        "dawdle_events_job_id_idx",
        "ON procrastinate_events (job_id)",
    ),
    (
        "dawdle_events_recent_errors_idx",
        "ON procrastinate_events (at) WHERE type = 'error'",
    ),
    (
        "dawdle_periodic_defers_job_id_idx",
        "ON procrastinate_periodic_defers (job_id) WHERE job_id IS NOT NULL",
    ),
];

/// Procrastinate's indexes that dawdle's schema does not have (dawdle's own
/// cover what they served); dropped concurrently after the switch.
const PROCRASTINATE_INDEXES: &[&str] = &[
    "procrastinate_jobs_queue_name_idx_v1",
    "procrastinate_jobs_id_lock_idx_v1",
    "procrastinate_jobs_priority_idx_v1",
    "idx_procrastinate_jobs_worker_not_null",
    "procrastinate_events_job_id_fkey_v1",
    "procrastinate_periodic_defers_job_id_fkey_v1",
    "idx_procrastinate_workers_last_heartbeat",
];

/// The migrations the adoption stands in for: their tables and indexes are
/// Procrastinate's, converted by the steps above, and their routines are run
/// from the slices below. Later migrations run as they are.
const ADOPTED_THROUGH: i32 = 3;

/// Marks where the routines begin in migration 0001 (everything before is
/// types, tables and indexes).
const ROUTINES_OF_0001: &str = "-- History, notifications and timestamps";
/// Migration 0002's routines lie between these two lines; before them an
/// index is replaced, after them finished jobs are updated, both of which
/// the adoption does its own way (concurrently; in batches).
const ROUTINES_OF_0002: (&str, &str) = (
    "CREATE OR REPLACE FUNCTION dawdle_workers_after_delete_v1",
    "-- Jobs finished before this migration.",
);

/// The routines (functions and triggers) of migrations 1 and 2, verbatim.
fn adopted_routines() -> [&'static str; 2] {
    let first = MIGRATIONS[0].sql;
    let start = first
        .find(ROUTINES_OF_0001)
        .expect("migration 0001 has its routines section");
    let second = MIGRATIONS[1].sql;
    let (from, to) = ROUTINES_OF_0002;
    let begin = second
        .find(from)
        .expect("migration 0002 replaces dawdle_workers_after_delete_v1");
    let end = second
        .find(to)
        .expect("migration 0002 ends by updating finished jobs");
    [&first[start..], &second[begin..end]]
}

/// Reads the database and says what [`adopt`] would do. Reads only.
pub async fn plan(conn: &mut PgConnection, options: &AdoptOptions) -> Result<Plan, AdoptError> {
    let source = detect(conn).await?;
    let state = state(conn).await?;
    let resumable = matches!(source, Source::Dawdle) && state.as_ref().is_some_and(|s| !s.finished);
    if !matches!(source, Source::Procrastinate3 { .. }) && !resumable {
        return Ok(Plan {
            source,
            counts: Counts::default(),
            steps: Vec::new(),
        });
    }
    let counts = counts(conn).await?;
    let state = state.unwrap_or_default();
    let missing_indexes: Vec<&str> = sqlx::query_scalar(
        "SELECT name FROM unnest($1::text[]) AS name
         WHERE NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(name)
                           AND indisvalid)",
    )
    .bind(INDEXES.iter().map(|(name, _)| *name).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .filter_map(|name: String| INDEXES.iter().find(|(n, _)| *n == name).map(|(n, _)| *n))
    .collect();
    let present_procrastinate_indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
    )
    .bind(PROCRASTINATE_INDEXES)
    .fetch_all(&mut *conn)
    .await?;
    let (triggers, functions) = procrastinate_routines(conn).await?;
    let jobs = counts.jobs();
    let batches = (jobs + options.batch_size - 1) / options.batch_size.max(1);
    let to_fill = (jobs - state.backfilled_through.min(jobs)).max(0);
    let steps = vec![
        PlannedStep {
            name: "record",
            action: "record the adoption in table dawdle_adoption (what makes it resumable)"
                .to_string(),
            done: !state.source.is_empty(),
        },
        PlannedStep {
            name: "event types",
            action: "add the event types 'retried' (when missing) and 'error' to \
                     procrastinate_job_event_type"
                .to_string(),
            done: state.switched,
        },
        PlannedStep {
            name: "types",
            action: "create what Procrastinate 3.0 lacks, if it does (the batch-defer type, \
                     the workers table)"
                .to_string(),
            done: state.switched,
        },
        PlannedStep {
            name: "indexes",
            action: if missing_indexes.is_empty() {
                "dawdle's indexes exist".to_string()
            } else {
                format!(
                    "build {} indexes concurrently (reads {} jobs and {} events; writes go \
                     on): {}",
                    missing_indexes.len(),
                    jobs,
                    counts.events(),
                    missing_indexes.join(", ")
                )
            },
            done: missing_indexes.is_empty(),
        },
        PlannedStep {
            name: "fence",
            action: "replace the functions that return whole job rows (the fetch functions) \
                     by ones that find no job, and wait for calls under way: workers fetch \
                     nothing from here to the switch, usually milliseconds"
                .to_string(),
            done: state.switched,
        },
        PlannedStep {
            name: "switch",
            action: format!(
                "in one short transaction: add created_at, started_at and finished_at to \
                 procrastinate_jobs and error, error_message and error_traceback to \
                 procrastinate_events (no rewrite), replace Procrastinate's {triggers} row \
                 triggers, {functions} functions and the foreign keys of jobs and events by \
                 dawdle's statement-level triggers and functions, put back any fetch function \
                 an older release's workers still call, and record dawdle's migrations 1 to {} \
                 (locks the four tables for milliseconds, waiting at most {:?} per try, {} \
                 tries)",
                super::latest_version(),
                options.lock_timeout,
                options.lock_attempts
            ),
            done: state.switched,
        },
        PlannedStep {
            name: "constraints",
            action: "validate the checks dawdle adds (args is a JSON object; a periodic \
                     defer's job exists) without blocking writes"
                .to_string(),
            done: state.finished,
        },
        PlannedStep {
            name: "procrastinate indexes",
            action: if present_procrastinate_indexes.is_empty() {
                "Procrastinate's own indexes are gone".to_string()
            } else {
                format!(
                    "drop concurrently Procrastinate's {} indexes that dawdle's cover: {}",
                    present_procrastinate_indexes.len(),
                    present_procrastinate_indexes.join(", ")
                )
            },
            done: present_procrastinate_indexes.is_empty(),
        },
        PlannedStep {
            name: "backfill",
            action: format!(
                "fill created_at, started_at and finished_at of {to_fill} existing jobs from \
                 their events, and unlink finished jobs from their worker, in about {batches} \
                 {} of {} jobs",
                if batches == 1 {
                    "transaction"
                } else {
                    "transactions"
                },
                options.batch_size
            ),
            done: state.finished,
        },
        PlannedStep {
            name: "vacuum",
            action: "VACUUM ANALYZE procrastinate_jobs and procrastinate_events".to_string(),
            done: state.finished,
        },
    ];
    Ok(Plan {
        source,
        counts,
        steps,
    })
}

/// Triggers Procrastinate put on its tables, and the functions dawdle
/// replaces or that only those triggers call.
async fn procrastinate_routines(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    let (triggers, trigger_functions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT t.tgfoid)
         FROM pg_trigger AS t
         WHERE NOT t.tgisinternal AND t.tgname LIKE 'procrastinate%'
           AND t.tgrelid IN (to_regclass('procrastinate_jobs'), to_regclass('procrastinate_events'),
                             to_regclass('procrastinate_periodic_defers'),
                             to_regclass('procrastinate_workers'))",
    )
    .fetch_one(&mut *conn)
    .await?;
    let replaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS signature
         WHERE to_regtype('procrastinate_job_status') IS NOT NULL
           AND to_regtype('procrastinate_job_to_defer_v1') IS NOT NULL
           AND to_regprocedure(signature) IS NOT NULL",
    )
    .bind(replaced_functions())
    .fetch_one(&mut *conn)
    .await?;
    Ok((triggers, trigger_functions + replaced))
}

/// Signatures of the `procrastinate_*` functions dawdle defines itself.
fn replaced_functions() -> Vec<&'static str> {
    EXPECTED_FUNCTIONS
        .iter()
        .copied()
        .filter(|signature| signature.starts_with("procrastinate_"))
        .collect()
}

/// What [`adopt`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdoptReport {
    /// What the database had before (`Dawdle` when this run only finished an
    /// earlier one, or found nothing to do).
    pub source: Source,
    /// Jobs whose timestamps this run filled.
    pub backfilled: i64,
    /// The longest any step held a table lock that blocks writes.
    pub longest_lock: Duration,
    /// Rows of `args` that are not JSON objects: the check stays NOT VALID
    /// (enforced for new rows only) until they are fixed.
    pub non_object_args: i64,
    pub elapsed: Duration,
}

/// Converts a Procrastinate 3.x database into dawdle's schema in place, or
/// finishes an interrupted adoption. `progress` gets one line per step and
/// per stretch of backfill.
pub async fn adopt(
    conn: &mut PgConnection,
    options: &AdoptOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<AdoptReport, AdoptError> {
    let started = Instant::now();
    let source = detect(conn).await?;
    let existing = state(conn).await?;
    let args_check_left_out = existing.is_some() && !args_check_exists(conn).await?;
    match (&source, &existing) {
        (Source::Procrastinate3 { .. }, _) => {}
        (Source::Dawdle, Some(state)) if !state.finished => {
            progress("resuming the unfinished adoption".to_string());
        }
        (Source::Dawdle, Some(_)) if args_check_left_out => {
            progress(
                "adding the check that arguments are JSON objects, left out by the adoption"
                    .to_string(),
            );
            let mut run = Run {
                conn,
                options,
                progress,
                longest_lock: Duration::ZERO,
            };
            let non_object_args = run.constraints().await?;
            return Ok(AdoptReport {
                source,
                backfilled: 0,
                longest_lock: run.longest_lock,
                non_object_args,
                elapsed: started.elapsed(),
            });
        }
        (Source::Dawdle, _) => {
            progress("nothing to adopt: this database already has dawdle's schema".to_string());
            return Ok(AdoptReport {
                source,
                backfilled: 0,
                longest_lock: Duration::ZERO,
                non_object_args: 0,
                elapsed: started.elapsed(),
            });
        }
        _ => {
            return Err(AdoptError::Unsupported {
                found: source.describe(),
                remedy: source.remedy(),
            })
        }
    }
    let mut run = Run {
        conn,
        options,
        progress,
        longest_lock: Duration::ZERO,
    };
    if let Source::Procrastinate3 { release } = source {
        run.say(format!(
            "adopting a Procrastinate database (schema of release {release})"
        ));
        run.record(release).await?;
        run.event_types().await?;
        run.types().await?;
        run.indexes().await?;
        run.fence().await?;
        if let Err(error) = run.switch().await {
            // Python workers must not stay without jobs.
            run.unfence().await?;
            run.say("put the fetch functions back; nothing was switched".to_string());
            return Err(error);
        }
    }
    // Any index that needed the switch's columns.
    run.indexes().await?;
    let non_object_args = run.constraints().await?;
    run.drop_procrastinate_indexes().await?;
    let backfilled = run.backfill().await?;
    run.vacuum().await?;
    sqlx::query("UPDATE dawdle_adoption SET finished_at = now()")
        .execute(&mut *run.conn)
        .await
        .map_err(step("finish"))?;
    let longest_lock = run.longest_lock;
    run.say(format!(
        "adopted in {:.1} s; the longest write-blocking lock was held {} ms",
        started.elapsed().as_secs_f64(),
        longest_lock.as_millis()
    ));
    Ok(AdoptReport {
        source,
        backfilled,
        longest_lock,
        non_object_args,
        elapsed: started.elapsed(),
    })
}

fn step(name: &'static str) -> impl Fn(sqlx::Error) -> AdoptError {
    move |source| AdoptError::Step { step: name, source }
}

struct Run<'a> {
    conn: &'a mut PgConnection,
    options: &'a AdoptOptions,
    progress: &'a mut (dyn FnMut(String) + Send),
    longest_lock: Duration,
}

impl Run<'_> {
    fn say(&mut self, line: String) {
        (self.progress)(line);
    }

    async fn record(&mut self, release: &str) -> Result<(), AdoptError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS dawdle_adoption (
                 only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                 source text NOT NULL,
                 started_at timestamptz NOT NULL DEFAULT now(),
                 switched_at timestamptz,
                 boundary_id bigint,
                 backfilled_through bigint NOT NULL DEFAULT 0,
                 finished_at timestamptz,
                 fenced jsonb
             )",
        )
        .execute(&mut *self.conn)
        .await
        .map_err(step("record"))?;
        sqlx::query(
            "INSERT INTO dawdle_adoption (source) VALUES ($1) ON CONFLICT (only_row) DO NOTHING",
        )
        .bind(format!("procrastinate {release}"))
        .execute(&mut *self.conn)
        .await
        .map_err(step("record"))?;
        Ok(())
    }

    /// Enum values must be committed before an index predicate may use them,
    /// so each is added in a statement of its own.
    async fn event_types(&mut self) -> Result<(), AdoptError> {
        for statement in [
            "ALTER TYPE procrastinate_job_event_type ADD VALUE IF NOT EXISTS 'retried' AFTER 'scheduled'",
            "ALTER TYPE procrastinate_job_event_type ADD VALUE IF NOT EXISTS 'error'",
        ] {
            sqlx::raw_sql(statement)
                .execute(&mut *self.conn)
                .await
                .map_err(step("event types"))?;
        }
        Ok(())
    }

    /// What 3.0 lacks and later releases added (the batch-defer type, the
    /// workers table). Neither touches the rows of a table in use.
    async fn types(&mut self) -> Result<(), AdoptError> {
        sqlx::raw_sql(
            "DO $$
            BEGIN
                IF to_regtype('procrastinate_job_to_defer_v1') IS NULL THEN
                    CREATE TYPE procrastinate_job_to_defer_v1 AS (
                        queue_name varchar, task_name varchar, priority integer, lock text,
                        queueing_lock text, args jsonb, scheduled_at timestamptz);
                END IF;
            END;
            $$;
            CREATE TABLE IF NOT EXISTS procrastinate_workers (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                last_heartbeat timestamptz NOT NULL DEFAULT now()
            );",
        )
        .execute(&mut *self.conn)
        .await
        .map_err(step("types"))?;
        Ok(())
    }

    /// Functions that return a whole jobs row (the fetch functions) cannot
    /// run while the switch adds columns: a call planned before the switch
    /// and let through after it would return more columns than its caller
    /// expects, an error that stops a Python worker. So they are first
    /// replaced by bodies that find no job and touch no table, their
    /// definitions kept in dawdle_adoption; the switch puts back any it does
    /// not replace itself. Calls already under way are waited for.
    async fn fence(&mut self) -> Result<(), AdoptError> {
        sqlx::query(
            "UPDATE dawdle_adoption
             SET fenced = (SELECT coalesce(jsonb_object_agg(p.oid::regprocedure::text,
                                                            pg_get_functiondef(p.oid)), '{}')
                           FROM pg_proc AS p
                           WHERE p.pronamespace = 'public'::regnamespace
                             AND p.prorettype = 'procrastinate_jobs'::regtype)
             WHERE fenced IS NULL",
        )
        .execute(&mut *self.conn)
        .await
        .map_err(step("fence"))?;
        let fenced_at: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&mut *self.conn)
                .await
                .map_err(step("fence"))?;
        sqlx::raw_sql(FENCE)
            .execute(&mut *self.conn)
            .await
            .map_err(step("fence"))?;
        let deadline =
            Instant::now() + self.options.lock_timeout * self.options.lock_attempts.max(1);
        loop {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND state = 'active' AND query_start < $1
                   AND query ~* 'procrastinate_fetch_job'",
            )
            .bind(fenced_at)
            .fetch_one(&mut *self.conn)
            .await
            .map_err(step("fence"))?;
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                self.say(format!(
                    "{running} fetch calls begun before the fence are still running; going on"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.say(
            "fenced the fetch functions: workers find no new job until the switch".to_string(),
        );
        Ok(())
    }

    /// Puts back the fetch functions' own definitions (after a switch that
    /// failed for good).
    async fn unfence(&mut self) -> Result<(), AdoptError> {
        sqlx::raw_sql(UNFENCE)
            .execute(&mut *self.conn)
            .await
            .map_err(step("fence"))?;
        Ok(())
    }

    async fn indexes(&mut self) -> Result<(), AdoptError> {
        for (name, definition) in INDEXES {
            let valid: Option<bool> = sqlx::query_scalar(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
            )
            .bind(name)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(step("indexes"))?;
            match valid {
                Some(true) => continue,
                // Left behind by an interrupted concurrent build.
                Some(false) => {
                    sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                        .execute(&mut *self.conn)
                        .await
                        .map_err(step("indexes"))?;
                }
                None => {}
            }
            if *name == "dawdle_jobs_running_idx" && !self.has_worker_column().await? {
                // Procrastinate 3.0 has no worker_id yet: the switch adds
                // it, and this index is built right after.
                continue;
            }
            let began = Instant::now();
            self.say(format!("building index {name} concurrently"));
            sqlx::raw_sql(&format!("CREATE INDEX CONCURRENTLY {name} {definition}"))
                .execute(&mut *self.conn)
                .await
                .map_err(step("indexes"))?;
            self.say(format!(
                "built index {name} in {:.1} s",
                began.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    async fn has_worker_column(&mut self) -> Result<bool, AdoptError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = 'procrastinate_jobs'::regclass
                              AND attname = 'worker_id' AND NOT attisdropped)",
        )
        .fetch_one(&mut *self.conn)
        .await
        .map_err(step("indexes"))
    }

    /// The one transaction after which every worker runs dawdle's functions.
    async fn switch(&mut self) -> Result<(), AdoptError> {
        let mut sql = format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});");
        sql.push_str(COLUMNS);
        sql.push_str(
            "
            DO $$
            DECLARE
                object record;
            BEGIN
                -- Procrastinate's triggers, then the functions only they called.
                FOR object IN
                    SELECT t.tgname, t.tgrelid::regclass AS tab, t.tgfoid
                    FROM pg_trigger AS t
                    WHERE NOT t.tgisinternal AND t.tgname LIKE 'procrastinate%'
                      AND t.tgrelid IN (to_regclass('procrastinate_jobs'),
                                        to_regclass('procrastinate_events'),
                                        to_regclass('procrastinate_periodic_defers'),
                                        to_regclass('procrastinate_workers'))
                LOOP
                    EXECUTE format('DROP TRIGGER %I ON %s', object.tgname, object.tab);
                    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = object.tgfoid)
                       AND (SELECT proname FROM pg_proc WHERE oid = object.tgfoid) LIKE 'procrastinate%'
                    THEN
                        EXECUTE format('DROP FUNCTION %s', object.tgfoid::regprocedure);
                    END IF;
                END LOOP;
                -- Foreign keys dawdle keeps by statement-level triggers instead.
                FOR object IN
                    SELECT c.conname, c.conrelid::regclass AS tab
                    FROM pg_constraint AS c
                    WHERE c.contype = 'f'
                      AND ((c.conrelid = to_regclass('procrastinate_jobs')
                            AND c.confrelid = to_regclass('procrastinate_workers'))
                        OR (c.conrelid = to_regclass('procrastinate_events')
                            AND c.confrelid = to_regclass('procrastinate_jobs'))
                        OR (c.conrelid = to_regclass('procrastinate_periodic_defers')
                            AND c.confrelid = to_regclass('procrastinate_jobs')))
                LOOP
                    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', object.tab, object.conname);
                END LOOP;
            END;
            $$;
            ALTER TABLE procrastinate_periodic_defers
                ADD CONSTRAINT procrastinate_periodic_defers_job_id_fkey
                FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE SET NULL
                NOT VALID;
            ALTER TABLE procrastinate_jobs
                ADD CONSTRAINT procrastinate_jobs_args_is_object
                CHECK (jsonb_typeof(args) = 'object') NOT VALID;
            ",
        );
        for signature in replaced_functions() {
            let _ = writeln!(
                sql,
                "DROP FUNCTION IF EXISTS {};",
                signature
                    .replace("varchar", "character varying")
                    .replace("timestamptz", "timestamp with time zone")
            );
        }
        for routines in adopted_routines() {
            sql.push_str(routines);
            sql.push('\n');
        }
        sql.push_str(UNFENCE);
        sql.push_str(CREATE_MIGRATIONS_TABLE);
        self.locked("switch", SWITCH_LOCK, Body::Switch(&sql))
            .await?;
        self.say("switched: Procrastinate's functions and triggers are now dawdle's".to_string());
        Ok(())
    }

    /// Runs `body` in a transaction that first takes `lock`, waiting at most
    /// the lock timeout; on a timeout (or a deadlock) lets go, says who held
    /// the tables, waits a little and tries again.
    async fn locked(
        &mut self,
        name: &'static str,
        lock: &str,
        body: Body<'_>,
    ) -> Result<(), AdoptError> {
        let timeout = self.options.lock_timeout;
        let attempts = self.options.lock_attempts.max(1);
        let mut blockers = String::new();
        for attempt in 1..=attempts {
            let conn = &mut *self.conn;
            let outcome: Result<Duration, AdoptError> = async {
                let mut tx = conn.begin().await.map_err(step(name))?;
                sqlx::raw_sql(&format!(
                    "SET LOCAL lock_timeout = '{}ms'",
                    timeout.as_millis().max(1)
                ))
                .execute(&mut *tx)
                .await
                .map_err(step(name))?;
                sqlx::raw_sql(lock)
                    .execute(&mut *tx)
                    .await
                    .map_err(step(name))?;
                let began = Instant::now();
                body.run(&mut tx, name).await?;
                tx.commit().await.map_err(step(name))?;
                Ok(began.elapsed())
            }
            .await;
            let error = match outcome {
                Ok(held) => {
                    self.longest_lock = self.longest_lock.max(held);
                    return Ok(());
                }
                Err(error) => error,
            };
            if !is_lock_contention(&error) {
                return Err(error);
            }
            blockers = self.blockers().await;
            self.say(format!(
                "step `{name}`: the tables stayed locked by other sessions for {timeout:?} \
                 (try {attempt} of {attempts}){blockers}; trying again"
            ));
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
        }
        Err(AdoptError::LockTimeout {
            step: name,
            timeout,
            attempts,
            blockers,
        })
    }

    /// Sessions holding locks on the jobs tables, oldest transaction first:
    /// process id, state, application and transaction age (never query text,
    /// which may hold values nobody should see in a log).
    async fn blockers(&mut self) -> String {
        let rows: Vec<Blocker> = sqlx::query_as(
            "SELECT a.pid, a.state, nullif(a.application_name, ''),
                    extract(epoch FROM now() - a.xact_start)::float8
             FROM pg_stat_activity AS a
             WHERE a.pid <> pg_backend_pid()
               AND a.pid IN (SELECT l.pid FROM pg_locks AS l
                             WHERE l.granted AND l.relation IN (
                                 to_regclass('procrastinate_jobs'),
                                 to_regclass('procrastinate_events'),
                                 to_regclass('procrastinate_periodic_defers'),
                                 to_regclass('procrastinate_workers')))
             ORDER BY a.xact_start NULLS LAST
             LIMIT 3",
        )
        .fetch_all(&mut *self.conn)
        .await
        .unwrap_or_default();
        if rows.is_empty() {
            return String::new();
        }
        let mut text = String::from(" (held by");
        for (i, (pid, state, application, age)) in rows.iter().enumerate() {
            let _ = write!(
                text,
                "{} pid {pid}, {}{}, transaction open {:.0} s",
                if i == 0 { "" } else { ";" },
                state.as_deref().unwrap_or("unknown state"),
                application
                    .as_deref()
                    .map(|name| format!(" ({})", crate::text::excerpt(name, 40)))
                    .unwrap_or_default(),
                age.unwrap_or(0.0)
            );
        }
        text.push(')');
        text
    }

    /// Validates the constraints the switch added as NOT VALID (adding the
    /// args check first if an earlier run left it out). Returns how many
    /// jobs have arguments that are not a JSON object: then the args check
    /// is taken off again, since it would refuse every update of those rows
    /// (a claim, the backfill) and so stop the queue; a later run, once they
    /// are fixed, adds it.
    async fn constraints(&mut self) -> Result<i64, AdoptError> {
        sqlx::raw_sql(
            "ALTER TABLE procrastinate_periodic_defers
                 VALIDATE CONSTRAINT procrastinate_periodic_defers_job_id_fkey",
        )
        .execute(&mut *self.conn)
        .await
        .map_err(step("constraints"))?;
        if !args_check_exists(self.conn)
            .await
            .map_err(step("constraints"))?
        {
            self.locked(
                "constraints",
                JOBS_LOCK,
                Body::Statements(
                    "ALTER TABLE procrastinate_jobs ADD CONSTRAINT procrastinate_jobs_args_is_object
                         CHECK (jsonb_typeof(args) = 'object') NOT VALID",
                ),
            )
            .await?;
        }
        match sqlx::raw_sql(
            "ALTER TABLE procrastinate_jobs VALIDATE CONSTRAINT procrastinate_jobs_args_is_object",
        )
        .execute(&mut *self.conn)
        .await
        {
            Ok(_) => Ok(0),
            Err(error)
                if error.as_database_error().and_then(|e| e.code()).as_deref() == Some("23514") =>
            {
                self.locked(
                    "constraints",
                    JOBS_LOCK,
                    Body::Statements(
                        "ALTER TABLE procrastinate_jobs
                             DROP CONSTRAINT IF EXISTS procrastinate_jobs_args_is_object",
                    ),
                )
                .await?;
                let bad: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM procrastinate_jobs WHERE jsonb_typeof(args) <> 'object'",
                )
                .fetch_one(&mut *self.conn)
                .await
                .map_err(step("constraints"))?;
                self.say(format!(
                    "warning: {bad} jobs have arguments that are not a JSON object; the check \
                     procrastinate_jobs_args_is_object is left out until they are fixed (find \
                     them with: SELECT id, task_name FROM procrastinate_jobs WHERE \
                     jsonb_typeof(args) <> 'object'), then run `dawdle schema adopt` again"
                ));
                Ok(bad)
            }
            Err(error) => Err(AdoptError::Step {
                step: "constraints",
                source: error,
            }),
        }
    }

    async fn drop_procrastinate_indexes(&mut self) -> Result<(), AdoptError> {
        for name in PROCRASTINATE_INDEXES {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&mut *self.conn)
                .await
                .map_err(step("procrastinate indexes"))?;
            if exists {
                sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    .execute(&mut *self.conn)
                    .await
                    .map_err(step("procrastinate indexes"))?;
                self.say(format!("dropped Procrastinate's index {name}"));
            }
        }
        Ok(())
    }

    /// Fills the timestamps of the jobs that existed at the switch from their
    /// events, a batch of ids per transaction, recording how far it got in
    /// the same transaction. Runs with `dawdle.backfill` on, so these updates
    /// record no history and wake no worker.
    async fn backfill(&mut self) -> Result<i64, AdoptError> {
        let state = state(self.conn)
            .await
            .map_err(step("backfill"))?
            .unwrap_or_default();
        let boundary = state.boundary_id.unwrap_or(0);
        let mut through = state.backfilled_through;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM procrastinate_jobs WHERE id > $1 AND id <= $2",
        )
        .bind(through)
        .bind(boundary)
        .fetch_one(&mut *self.conn)
        .await
        .map_err(step("backfill"))?;
        if total > 0 {
            self.say(format!(
                "filling the timestamps of {total} jobs from their events, {} per transaction",
                self.options.batch_size
            ));
        }
        let began = Instant::now();
        let mut last_report = Instant::now();
        let mut done = 0_i64;
        let mut contended = 0_u32;
        while through < boundary {
            let (count, next) = match self.backfill_batch(through, boundary).await {
                Ok(batch) => {
                    contended = 0;
                    batch
                }
                // A worker holds one of the batch's rows past the lock
                // timeout: let go, and try the batch again shortly.
                Err(error) if is_lock_contention(&error) => {
                    contended += 1;
                    if contended >= self.options.lock_attempts.max(1) {
                        return Err(error);
                    }
                    self.say(format!(
                        "backfill: rows after job {through} stayed locked for {:?} (try {contended} of {}); trying again",
                        self.options.lock_timeout,
                        self.options.lock_attempts
                    ));
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(contended.min(10))))
                        .await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            through = next;
            done += count;
            if last_report.elapsed() >= Duration::from_secs(2) || through >= boundary {
                last_report = Instant::now();
                let rate = done as f64 / began.elapsed().as_secs_f64().max(0.001);
                self.say(format!(
                    "backfill: {done} of {total} jobs ({:.0}%), {rate:.0} jobs/s",
                    100.0 * done as f64 / total.max(1) as f64
                ));
            }
        }
        Ok(done)
    }

    /// One backfill transaction: the jobs after `through` up to `boundary`,
    /// at most a batch of them, and the progress recorded with them.
    /// Returns (jobs filled, the id the next batch starts after).
    async fn backfill_batch(
        &mut self,
        through: i64,
        boundary: i64,
    ) -> Result<(i64, i64), AdoptError> {
        let mut tx = self.conn.begin().await.map_err(step("backfill"))?;
        sqlx::raw_sql(&format!(
            "SET LOCAL dawdle.backfill = 'on'; SET LOCAL lock_timeout = '{}ms'",
            self.options.lock_timeout.as_millis().max(1)
        ))
        .execute(&mut *tx)
        .await
        .map_err(step("backfill"))?;
        let (count, last): (i64, Option<i64>) = sqlx::query_as(BACKFILL)
            .bind(through)
            .bind(boundary)
            .bind(self.options.batch_size.max(1))
            .fetch_one(&mut *tx)
            .await
            .map_err(step("backfill"))?;
        let next = last.unwrap_or(boundary);
        // A dawdle worker's claim skips the rows this batch holds, and its
        // next claims start past them (its claim floor): once the batch
        // commits, wake the workers for its waiting jobs, by id, as the
        // triggers do for any job that becomes runnable.
        sqlx::query(WAKE_FOR_BATCH)
            .bind(through)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(step("backfill"))?;
        sqlx::query("UPDATE dawdle_adoption SET backfilled_through = $1")
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(step("backfill"))?;
        tx.commit().await.map_err(step("backfill"))?;
        Ok((count, next))
    }

    async fn vacuum(&mut self) -> Result<(), AdoptError> {
        let began = Instant::now();
        sqlx::raw_sql("VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events")
            .execute(&mut *self.conn)
            .await
            .map_err(step("vacuum"))?;
        self.say(format!(
            "vacuumed and analyzed the jobs and events tables in {:.1} s",
            began.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The lock adding or dropping a check of the jobs table takes.
const JOBS_LOCK: &str = "LOCK TABLE procrastinate_jobs IN ACCESS EXCLUSIVE MODE";

/// Whether `procrastinate_jobs_args_is_object` is there, validated or not.
async fn args_check_exists(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint
                        WHERE conrelid = 'procrastinate_jobs'::regclass
                          AND conname = 'procrastinate_jobs_args_is_object')",
    )
    .fetch_one(conn)
    .await
}

/// The locks the switch takes, in one statement so that it waits once.
const SWITCH_LOCK: &str = "LOCK TABLE procrastinate_workers, procrastinate_jobs, \
     procrastinate_events, procrastinate_periodic_defers IN ACCESS EXCLUSIVE MODE";

/// dawdle's columns, added by the switch (no rewrite: the default is
/// evaluated once).
const COLUMNS: &str = "
    ALTER TABLE procrastinate_jobs
        ADD COLUMN IF NOT EXISTS worker_id bigint,
        ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN IF NOT EXISTS started_at timestamptz,
        ADD COLUMN IF NOT EXISTS finished_at timestamptz;
    ALTER TABLE procrastinate_events
        ADD COLUMN IF NOT EXISTS error text,
        ADD COLUMN IF NOT EXISTS error_message text,
        ADD COLUMN IF NOT EXISTS error_traceback text;
";

/// Replaces every function kept in dawdle_adoption.fenced by one that finds
/// no job (a row of NULLs, which callers read as "nothing to do").
const FENCE: &str = "
    DO $$
    DECLARE
        item record;
    BEGIN
        FOR item IN
            SELECT to_regprocedure(f.key) AS oid
            FROM dawdle_adoption AS a, jsonb_each_text(a.fenced) AS f
            WHERE to_regprocedure(f.key) IS NOT NULL
        LOOP
            EXECUTE format(
                'CREATE OR REPLACE FUNCTION %s(%s) RETURNS procrastinate_jobs '
                'LANGUAGE plpgsql AS $fence$ BEGIN '
                '/* dawdle adoption fence: no job until the switch */ '
                'RETURN NULL; END $fence$',
                item.oid::regproc, pg_get_function_arguments(item.oid));
        END LOOP;
    END;
    $$;
";

/// Puts back the definition of every function still fenced.
const UNFENCE: &str = "
    DO $$
    DECLARE
        item record;
    BEGIN
        FOR item IN
            SELECT f.value AS definition
            FROM dawdle_adoption AS a, jsonb_each_text(a.fenced) AS f
            WHERE to_regprocedure(f.key) IS NOT NULL
              AND (SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(f.key))
                  LIKE '%dawdle adoption fence%'
        LOOP
            EXECUTE item.definition;
        END LOOP;
    END;
    $$;
";

/// One batch of the backfill: ids after $1 up to $2, at most $3 of them.
/// A job's creation is its first `deferred` event (else its first event that
/// is not a schedule); a started or finished job's start is its latest
/// `started` event; a finished job's end its latest terminal event. Values
/// already set (by dawdle's functions, since the switch) are kept. Finished
/// jobs are unlinked from their worker, as dawdle's functions do.
const BACKFILL: &str = "
    WITH batch AS (
        SELECT id FROM procrastinate_jobs
        WHERE id > $1 AND id <= $2
        ORDER BY id
        LIMIT $3
    ), history AS (
        SELECT e.job_id,
               min(e.at) FILTER (WHERE e.type = 'deferred') AS deferred_at,
               min(e.at) FILTER (WHERE e.type <> 'scheduled') AS first_at,
               max(e.at) FILTER (WHERE e.type = 'started') AS started_at,
               max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed', 'cancelled', 'aborted'))
                   AS finished_at
        FROM procrastinate_events AS e
        JOIN batch ON batch.id = e.job_id
        GROUP BY e.job_id
    ), filled AS (
        UPDATE procrastinate_jobs AS job
        SET created_at = coalesce(history.deferred_at, history.first_at, job.created_at),
            started_at = CASE WHEN job.status = 'todo' THEN NULL
                              ELSE coalesce(job.started_at, history.started_at) END,
            finished_at = CASE WHEN job.status IN ('todo', 'doing') THEN NULL
                               ELSE coalesce(job.finished_at, history.finished_at) END,
            worker_id = CASE WHEN job.status = 'doing' THEN job.worker_id END
        FROM batch
        LEFT JOIN history ON history.job_id = batch.id
        WHERE job.id = batch.id
        RETURNING job.id
    )
    SELECT (SELECT count(*) FROM filled), (SELECT max(id) FROM batch)";

/// Notifies the runnable jobs of a backfill batch, ids after $1 up to $2
/// (delivered when the batch commits).
const WAKE_FOR_BATCH: &str = "
    SELECT dawdle_notify_runnable_v1(array_agg(queue_name), array_agg(id))
    FROM procrastinate_jobs
    WHERE id > $1 AND id <= $2 AND status = 'todo'
      AND (scheduled_at IS NULL OR scheduled_at <= now())
    HAVING count(*) > 0";

/// What a locking step runs once it has its locks.
enum Body<'s> {
    /// The switch's statements, then dawdle's migrations recorded and the
    /// later ones applied, and the adoption's boundary set.
    Switch(&'s str),
    /// Statements, as they are.
    Statements(&'s str),
}

impl Body<'_> {
    async fn run(&self, conn: &mut PgConnection, name: &'static str) -> Result<(), AdoptError> {
        let sql = match self {
            Body::Switch(sql) | Body::Statements(sql) => sql,
        };
        sqlx::raw_sql(sql)
            .execute(&mut *conn)
            .await
            .map_err(step(name))?;
        if let Body::Switch(_) = self {
            for migration in MIGRATIONS.iter().filter(|m| m.version <= ADOPTED_THROUGH) {
                record(conn, migration).await.map_err(step(name))?;
            }
            apply_pending(conn).await?;
            sqlx::query(
                "UPDATE dawdle_adoption
                 SET switched_at = now(),
                     boundary_id = (SELECT coalesce(max(id), 0) FROM procrastinate_jobs)",
            )
            .execute(&mut *conn)
            .await
            .map_err(step(name))?;
        }
        Ok(())
    }
}

/// A lock wait that ran out, or a deadlock: worth another try.
fn is_lock_contention(error: &AdoptError) -> bool {
    let AdoptError::Step { source, .. } = error else {
        return false;
    };
    matches!(
        source.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("55P03" | "40P01")
    )
}

/// A session holding a lock: process id, state, application name and the
/// age of its transaction in seconds.
type Blocker = (i32, Option<String>, Option<String>, Option<f64>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routines_of_migrations_1_and_2_are_found() {
        let [first, second] = adopted_routines();
        assert!(first.contains("CREATE FUNCTION dawdle_jobs_after_insert_v1"));
        assert!(!first.contains("CREATE TABLE"));
        assert!(second.contains("CREATE TRIGGER dawdle_jobs_timestamps_v1"));
        assert!(!second.contains("UPDATE procrastinate_jobs SET worker_id = NULL"));
        assert!(!second.contains("CREATE INDEX"));
    }

    #[test]
    fn every_index_of_the_adopted_migrations_is_built_beforehand() {
        for migration in MIGRATIONS.iter().filter(|m| m.version <= ADOPTED_THROUGH) {
            for line in migration.sql.lines() {
                let Some(rest) = line.strip_prefix("CREATE INDEX ") else {
                    continue;
                };
                let name = rest.split_whitespace().next().unwrap();
                if name == "dawdle_jobs_worker_id_idx" {
                    continue; // dropped again by migration 0002
                }
                assert!(
                    INDEXES.iter().any(|(n, _)| *n == name),
                    "index {name} of migration {} is not built by the adoption",
                    migration.version
                );
            }
        }
    }
}
