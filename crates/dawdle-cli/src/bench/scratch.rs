//! Scratch databases on the jobs database's server: created with dawdle's
//! schema for one benchmark run, emptied between rounds, and dropped at the
//! end whether or not the run succeeded.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{BenchError, OrFailedTo};

/// Runs `measure` with a connection to the server's maintenance database,
/// between two drops of the scratch databases `names`: before, since an
/// interrupted run may have left them behind, and after, whether or not the
/// measurement succeeded, so that a failed run does not leave its data (a
/// few hundred thousand jobs) on the server.
pub(super) async fn with_databases<T>(
    server: &PgConnectOptions,
    names: &[&str],
    measure: impl AsyncFnOnce(&mut PgConnection) -> Result<T, BenchError>,
) -> Result<T, BenchError> {
    let mut maintenance = connect_maintenance(server).await?;
    let outcome = match drop_databases(&mut maintenance, names).await {
        Ok(()) => measure(&mut maintenance).await,
        Err(error) => Err(error),
    };
    let dropped = drop_databases(&mut maintenance, names).await;
    let report = outcome?;
    dropped?;
    disconnect(maintenance, "the server's `postgres` database").await?;
    Ok(report)
}

async fn drop_databases(maintenance: &mut PgConnection, names: &[&str]) -> Result<(), BenchError> {
    for name in names {
        drop_database(maintenance, name).await?;
    }
    Ok(())
}

/// Closes a connection to `database` (named as in "disconnect from …").
pub(super) async fn disconnect(conn: PgConnection, database: &str) -> Result<(), BenchError> {
    conn.close()
        .await
        .or_failed_to(|| format!("disconnect from {database}"))
}

/// Connects to the server's maintenance database, from which scratch
/// databases are created and dropped: CREATE and DROP DATABASE cannot run in
/// the database they name.
async fn connect_maintenance(server: &PgConnectOptions) -> Result<PgConnection, BenchError> {
    PgConnection::connect_with(&server.clone().database("postgres"))
        .await
        .or_failed_to(|| "connect to the server's `postgres` database".to_string())
}

pub(super) async fn server_version(maintenance: &mut PgConnection) -> Result<String, BenchError> {
    sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut *maintenance)
        .await
        .or_failed_to(|| "read the server version".to_string())
}

/// Drops a scratch database if it exists.
async fn drop_database(maintenance: &mut PgConnection, database: &str) -> Result<(), BenchError> {
    // FORCE: a connection left over from a failed step (or a benchmarked
    // process that was killed) must not keep the database alive.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut *maintenance)
        .await
        .or_failed_to(|| format!("drop the scratch database {database}"))?;
    Ok(())
}

/// Creates a scratch database with dawdle's schema and connects to it.
pub(super) async fn create_database(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    database: &'static str,
) -> Result<PgConnection, BenchError> {
    let mut conn = create_empty_database(server, maintenance, database).await?;
    dawdle::schema::apply(&mut conn)
        .await
        .map_err(|source| BenchError::Schema { database, source })?;
    Ok(conn)
}

/// Creates an empty scratch database and connects to it.
pub(super) async fn create_empty_database(
    server: &PgConnectOptions,
    maintenance: &mut PgConnection,
    database: &'static str,
) -> Result<PgConnection, BenchError> {
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut *maintenance)
        .await
        .or_failed_to(|| {
            format!(
                "create the scratch database {database} (the benchmark needs a role allowed \
                 to create databases)"
            )
        })?;
    PgConnection::connect_with(&server.clone().database(database))
        .await
        .or_failed_to(|| format!("connect to {database}"))
}

pub(super) async fn reset(conn: &mut PgConnection, database: &str) -> Result<(), BenchError> {
    sqlx::raw_sql("TRUNCATE procrastinate_jobs, procrastinate_events CASCADE")
        .execute(&mut *conn)
        .await
        .or_failed_to(|| format!("empty the jobs tables of {database}"))?;
    Ok(())
}
