//! The jobs database schema: versioned migrations, applying them, and checking
//! that a database is current.
//!
//! Migrations are SQL files compiled into the binary, applied in version order
//! inside one transaction that first takes an advisory lock, so two processes
//! applying at once serialise and the second finds nothing left to do. Each
//! applied migration is recorded in `dawdle_migrations` with a checksum of its
//! text, which lets `check` notice a database migrated by a different build.

use sqlx::{Connection, PgConnection};

pub mod adopt;

/// One migration: its version, a short name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// Checksum of the migration text, recorded when it is applied.
    pub fn checksum(&self) -> String {
        format!("{:016x}", crate::local_pg::fnv1a(self.sql.as_bytes()))
    }
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "procrastinate_v3_interface",
        sql: include_str!("../migrations/0001_procrastinate_v3_interface.sql"),
    },
    Migration {
        version: 2,
        name: "jobs_hold_a_worker_only_while_running",
        sql: include_str!("../migrations/0002_jobs_hold_a_worker_only_while_running.sql"),
    },
    Migration {
        version: 3,
        name: "index_scheduled_jobs",
        sql: include_str!("../migrations/0003_index_scheduled_jobs.sql"),
    },
    Migration {
        version: 4,
        name: "plan_trigger_joins_for_any_size",
        sql: include_str!("../migrations/0004_plan_trigger_joins_for_any_size.sql"),
    },
    Migration {
        version: 5,
        name: "wake_the_next_job_of_a_freed_lock",
        sql: include_str!("../migrations/0005_wake_the_next_job_of_a_freed_lock.sql"),
    },
    Migration {
        version: 6,
        name: "procrastinate_error_messages",
        sql: include_str!("../migrations/0006_procrastinate_error_messages.sql"),
    },
    Migration {
        version: 7,
        name: "job_trace_contexts",
        sql: include_str!("../migrations/0007_job_trace_contexts.sql"),
    },
    Migration {
        version: 8,
        name: "queue_pauses",
        sql: include_str!("../migrations/0008_queue_pauses.sql"),
    },
    Migration {
        version: 9,
        name: "adoptable_procrastinate_databases",
        sql: include_str!("../migrations/0009_adoptable_procrastinate_databases.sql"),
    },
    Migration {
        version: 10,
        name: "procrastinate_misuse_parity",
        sql: include_str!("../migrations/0010_procrastinate_misuse_parity.sql"),
    },
    Migration {
        version: 11,
        name: "claim_with_a_cached_plan",
        sql: include_str!("../migrations/0011_claim_with_a_cached_plan.sql"),
    },
    Migration {
        version: 12,
        name: "claim_from_a_floor",
        sql: include_str!("../migrations/0012_claim_from_a_floor.sql"),
    },
    Migration {
        version: 13,
        name: "python_calls_keep_their_plans",
        sql: include_str!("../migrations/0013_python_calls_keep_their_plans.sql"),
    },
    Migration {
        version: 14,
        name: "python_worker_calls_take_the_short_path",
        sql: include_str!("../migrations/0014_python_worker_calls_take_the_short_path.sql"),
    },
    Migration {
        version: 15,
        name: "claims_for_listed_queues_read_only_their_jobs",
        sql: include_str!("../migrations/0015_claims_for_listed_queues_read_only_their_jobs.sql"),
    },
    Migration {
        version: 16,
        name: "a_job_brought_forward_wakes_the_workers",
        sql: include_str!("../migrations/0016_a_job_brought_forward_wakes_the_workers.sql"),
    },
    Migration {
        version: 17,
        name: "a_paused_backlog_does_not_slow_the_other_queues",
        sql: include_str!("../migrations/0017_a_paused_backlog_does_not_slow_the_other_queues.sql"),
    },
];

/// The migration that fixes how the planner counts queues; the figure
/// takes effect at the column's next ANALYZE, which [`apply`] runs once the
/// migration has committed (see the migration's text for why not inside).
const QUEUE_STATISTICS_MIGRATION: i32 = 15;

/// The version a fully migrated database is at.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Key of the advisory lock held while migrating ("dawdle" in ASCII).
pub(crate) const MIGRATION_LOCK_KEY: i64 = 0x6461_7764_6c65;

pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS dawdle_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )";

/// Failures of schema operations, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "apply the schema: this database has {found}, which dawdle did not create; \
         {remedy}"
    )]
    ForeignSchema { found: String, remedy: String },
    #[error(
        "apply the schema: migration {version} ({name}) was applied with different contents \
         (checksum {applied} in the database, {expected} in this build); this build of dawdle \
         does not match the one that migrated the database"
    )]
    ChecksumMismatch {
        version: i32,
        name: String,
        applied: String,
        expected: String,
    },
    #[error(
        "apply the schema: the database is at version {database}, newer than this build \
         knows ({known}); upgrade dawdle"
    )]
    NewerThanBuild { database: i32, known: i32 },
    #[error("apply migration {version} ({name}): {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "use the jobs database: it has no dawdle schema (no procrastinate_jobs table); \
         run ./scripts/jobs/apply-schema.sh (or `dawdle schema apply`)"
    )]
    NotApplied,
    #[error("read the schema state: {0}")]
    Database(#[from] sqlx::Error),
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Migrations applied by this call, oldest first.
    pub applied: Vec<(i32, &'static str)>,
    /// The version the database is at now.
    pub version: i32,
}

/// Applies every pending migration in one transaction. Idempotent, and safe
/// when several processes call it at once.
pub async fn apply(conn: &mut PgConnection) -> Result<ApplyReport, SchemaError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('dawdle_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?;
    if !has_table {
        let foreign: bool =
            sqlx::query_scalar("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?;
        if foreign {
            let source = adopt::detect(&mut tx).await?;
            return Err(SchemaError::ForeignSchema {
                found: source.describe(),
                remedy: source.remedy(),
            });
        }
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&mut *tx)
            .await?;
    }
    let applied = apply_pending(&mut tx).await?;
    tx.commit().await?;
    if applied
        .iter()
        .any(|(version, _)| *version == QUEUE_STATISTICS_MIGRATION)
    {
        // The schema is applied either way; without this, the figure
        // waits for autovacuum's next ANALYZE of the table. An empty table
        // is left alone: it has nothing to sample, and analyzed it would be
        // recorded as known to be empty until autovacuum analyzed it again.
        if let Err(error) = sqlx::query(
            "DO $$ BEGIN
                 IF EXISTS (SELECT FROM procrastinate_jobs) THEN
                     ANALYZE procrastinate_jobs (queue_name);
                 END IF;
             END $$",
        )
        .execute(&mut *conn)
        .await
        {
            tracing::warn!(
                error = %error,
                "schema applied, but failed to analyze procrastinate_jobs.queue_name; \
                 claims for listed queues may read other queues' jobs until the table is \
                 analyzed (run ANALYZE procrastinate_jobs)"
            );
        }
    }
    Ok(ApplyReport {
        applied,
        version: latest_version(),
    })
}

/// Applies, inside the caller's transaction, every migration that
/// `dawdle_migrations` does not list, and records each.
async fn apply_pending(conn: &mut PgConnection) -> Result<Vec<(i32, &'static str)>, SchemaError> {
    let recorded = recorded_migrations(conn).await?;
    verify_recorded(&recorded)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if recorded.iter().any(|row| row.version == migration.version) {
            continue;
        }
        sqlx::raw_sql(migration.sql)
            .execute(&mut *conn)
            .await
            .map_err(|source| SchemaError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
        record(conn, migration).await?;
        applied.push((migration.version, migration.name));
    }
    Ok(applied)
}

/// Records `migration` as applied.
async fn record(conn: &mut PgConnection, migration: &Migration) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO dawdle_migrations (version, name, checksum) VALUES ($1, $2, $3)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(migration.checksum())
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct RecordedMigration {
    version: i32,
    name: String,
    checksum: String,
}

async fn recorded_migrations(
    conn: &mut PgConnection,
) -> Result<Vec<RecordedMigration>, sqlx::Error> {
    sqlx::query_as("SELECT version, name, checksum FROM dawdle_migrations ORDER BY version")
        .fetch_all(conn)
        .await
}

fn verify_recorded(recorded: &[RecordedMigration]) -> Result<(), SchemaError> {
    for row in recorded {
        match MIGRATIONS.iter().find(|m| m.version == row.version) {
            None => {
                return Err(SchemaError::NewerThanBuild {
                    database: row.version,
                    known: latest_version(),
                })
            }
            Some(migration) if migration.checksum() != row.checksum => {
                return Err(SchemaError::ChecksumMismatch {
                    version: row.version,
                    name: row.name.clone(),
                    applied: row.checksum.clone(),
                    expected: migration.checksum(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Fails with [`SchemaError::NotApplied`] when the database has no schema at
/// all: one cheap query that turns "relation does not exist" deep inside a
/// command into a message that says what to do.
pub async fn ensure_present(conn: &mut PgConnection) -> Result<(), SchemaError> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        .fetch_one(conn)
        .await?;
    if present {
        Ok(())
    } else {
        Err(SchemaError::NotApplied)
    }
}

/// The result of [`check`]: empty `problems` means the schema is current.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// Highest applied version, 0 when none.
    pub version: i32,
    /// The version this build expects.
    pub expected_version: i32,
    /// One line per problem: a pending migration, a missing object, …
    pub problems: Vec<String>,
    /// What to run to fix the problems (empty when there are none).
    pub fix: String,
    /// Facts worth knowing that do not make the schema out of date, such as
    /// an adoption whose backfill is still running.
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn is_current(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Objects the Procrastinate interface and the runbook rely on, checked by
/// name so that a dropped function or index is reported even when the
/// migration table says everything was applied.
const EXPECTED_TYPES: &[&str] = &[
    "procrastinate_job_status",
    "procrastinate_job_event_type",
    "procrastinate_job_to_defer_v1",
];
const EXPECTED_RELATIONS: &[&str] = &[
    "procrastinate_workers",
    "procrastinate_jobs",
    "procrastinate_periodic_defers",
    "procrastinate_events",
    "procrastinate_jobs_queueing_lock_idx_v1",
    "procrastinate_jobs_lock_idx_v1",
    "dawdle_job_trace_contexts",
    "dawdle_queue_pauses",
];
pub(crate) const EXPECTED_FUNCTIONS: &[&str] = &[
    "procrastinate_defer_jobs_v1(procrastinate_job_to_defer_v1[])",
    "procrastinate_defer_periodic_job_v2(varchar, varchar, varchar, varchar, integer, varchar, bigint, jsonb)",
    "procrastinate_fetch_job_v2(varchar[], bigint)",
    "procrastinate_finish_job_v1(bigint, procrastinate_job_status, boolean)",
    "procrastinate_cancel_job_v1(bigint, boolean, boolean)",
    "procrastinate_retry_job_v1(bigint, timestamptz, integer, varchar, varchar)",
    "procrastinate_retry_job_v2(bigint, timestamptz, integer, varchar, varchar)",
    "procrastinate_register_worker_v1()",
    "procrastinate_unregister_worker_v1(bigint)",
    "procrastinate_update_heartbeat_v1(bigint)",
    "procrastinate_prune_stalled_workers_v1(double precision)",
    "dawdle_fetch_jobs_v1(varchar[], bigint, integer)",
    CLAIM_FUNCTION,
];
/// The function dawdle's workers claim with: a worker starts once it exists.
pub(crate) const CLAIM_FUNCTION: &str = "dawdle_claim_jobs_v1(varchar[], bigint, integer)";
/// (table, column) pairs of the runbook's extensions.
const EXPECTED_COLUMNS: &[(&str, &str)] = &[
    ("procrastinate_jobs", "created_at"),
    ("procrastinate_jobs", "started_at"),
    ("procrastinate_jobs", "finished_at"),
    ("procrastinate_events", "error"),
    ("procrastinate_events", "error_message"),
    ("procrastinate_events", "error_traceback"),
];

/// Reports pending migrations and missing objects. Reads only.
pub async fn check(conn: &mut PgConnection) -> Result<CheckReport, SchemaError> {
    let mut problems = Vec::new();
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('dawdle_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let recorded = if has_table {
        recorded_migrations(conn).await?
    } else {
        Vec::new()
    };
    let version = recorded.iter().map(|row| row.version).max().unwrap_or(0);
    let mut fix = "run ./scripts/jobs/apply-schema.sh (or `dawdle schema apply`)".to_string();
    let mut notes = Vec::new();
    // A Procrastinate database is adopted, not migrated: listing every
    // migration as pending would bury the line that says so.
    let mut foreign = false;
    if !has_table {
        let source = adopt::detect(&mut *conn).await?;
        foreign = source.is_procrastinate();
        if foreign {
            problems.push(format!(
                "this database has {}, which dawdle did not create",
                source.describe()
            ));
            fix = source.remedy();
        } else {
            problems.push("schema not applied (no dawdle_migrations table)".to_string());
        }
    } else if let Some(note) = adopt::unfinished_note(&mut *conn).await? {
        notes.push(note);
    }
    if let Err(error) = verify_recorded(&recorded) {
        problems.push(
            error
                .to_string()
                .trim_start_matches("apply the schema: ")
                .to_string(),
        );
    }
    for migration in MIGRATIONS.iter().filter(|_| !foreign) {
        if !recorded.iter().any(|row| row.version == migration.version) {
            problems.push(format!(
                "pending migration {:04}_{}",
                migration.version, migration.name
            ));
        }
    }
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT 'missing type ' || name FROM unnest($1::text[]) AS name
             WHERE to_regtype(name) IS NULL
         UNION ALL
         SELECT 'missing table or index ' || name FROM unnest($2::text[]) AS name
             WHERE to_regclass(name) IS NULL
         UNION ALL
         SELECT 'missing function ' || name FROM unnest($3::text[]) AS name
             WHERE to_regtype('procrastinate_job_to_defer_v1') IS NOT NULL
               AND to_regtype('procrastinate_job_status') IS NOT NULL
               AND to_regprocedure(name) IS NULL
         UNION ALL
         SELECT 'missing column ' || t || '.' || c FROM unnest($4::text[], $5::text[]) AS x (t, c)
             WHERE to_regclass(t) IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pg_attribute
                               WHERE attrelid = to_regclass(t) AND attname = c AND NOT attisdropped)",
    )
    .bind(EXPECTED_TYPES)
    .bind(EXPECTED_RELATIONS)
    .bind(EXPECTED_FUNCTIONS)
    .bind(EXPECTED_COLUMNS.iter().map(|(t, _)| *t).collect::<Vec<_>>())
    .bind(EXPECTED_COLUMNS.iter().map(|(_, c)| *c).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    // Before anything is applied every object is missing; listing them all
    // would bury the one line that matters.
    if has_table {
        problems.extend(missing);
    }
    if problems.is_empty() {
        fix.clear();
    }
    Ok(CheckReport {
        version,
        expected_version: latest_version(),
        problems,
        fix,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_strictly_increasing_order() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }
}
