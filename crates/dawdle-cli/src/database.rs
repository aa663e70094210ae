//! Reaching the jobs database: the URL given or the embedded PostgreSQL,
//! and a pool on it once its schema is known to be there.

use dawdle::database::DATABASE_URL_ENV;
use dawdle::JobsDatabase;

use crate::Failure;

/// Resolves the jobs database, saying so when it falls back to the embedded one.
pub(crate) async fn jobs_database(explicit_url: Option<&str>) -> Result<JobsDatabase, Failure> {
    let database = JobsDatabase::resolve(explicit_url).await?;
    if database.is_embedded() {
        // Set but empty is most often a deployment's missing substitution
        // (`${JOBS_URL}`): say so, not "not set".
        let how = match std::env::var_os(DATABASE_URL_ENV) {
            Some(_) => "is set but empty (unset it, or give the jobs database's URL)",
            None => "is not set",
        };
        eprintln!(
            "dawdle: {DATABASE_URL_ENV} {how}; using the embedded PostgreSQL at {}",
            database.display_url()
        );
    }
    Ok(database)
}

/// A pool on the jobs database, after checking that the schema is there.
pub(crate) async fn jobs_pool(explicit_url: Option<&str>) -> Result<sqlx::PgPool, Failure> {
    jobs_pool_sized(explicit_url, 1).await
}

/// [`jobs_pool`] with up to `max_connections`.
pub(crate) async fn jobs_pool_sized(
    explicit_url: Option<&str>,
    max_connections: u32,
) -> Result<sqlx::PgPool, Failure> {
    let pool = jobs_database(explicit_url)
        .await?
        .connect(max_connections)
        .await?;
    let mut conn = pool.acquire().await?;
    dawdle::schema::ensure_present(&mut conn).await?;
    ensure_ours(&mut conn).await?;
    drop(conn);
    Ok(pool)
}

/// A worker's pool of up to `max_connections` on `database` (see
/// `JobsDatabase::connect_for_worker`), after checking that the schema is
/// there.
pub(crate) async fn worker_pool(
    database: JobsDatabase,
    max_connections: u32,
) -> Result<sqlx::PgPool, Failure> {
    let pool = database.connect_for_worker(max_connections).await?;
    if database.is_behind_pgbouncer() {
        // Through PgBouncer in transaction pooling, statements are safe
        // only inside a transaction, with what they prepared closed before
        // it ends (see `dawdle::database::pinned`).
        use sqlx::Connection;
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let present = dawdle::schema::ensure_present(&mut tx).await;
        tx.clear_cached_statements().await?;
        tx.rollback().await?;
        present?;
        drop(conn);
        return Ok(pool);
    }
    ensure_schema(pool).await
}

async fn ensure_schema(pool: sqlx::PgPool) -> Result<sqlx::PgPool, Failure> {
    let mut conn = pool.acquire().await?;
    dawdle::schema::ensure_present(&mut conn).await?;
    drop(conn);
    Ok(pool)
}

/// For the commands, not the worker (which waits for an adoption to end):
/// a jobs table dawdle did not create (Procrastinate's own, not adopted
/// yet, or one made by hand) lacks columns and tables the commands read,
/// so say what it is and what to run, not "column does not exist".
async fn ensure_ours(conn: &mut sqlx::PgConnection) -> Result<(), Failure> {
    let ours: bool = sqlx::query_scalar("SELECT to_regclass('dawdle_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !ours {
        let check = dawdle::schema::check(conn).await?;
        return Err(Failure::new(format!(
            "failed to use the jobs database: {}; {}",
            check.problems.join("; "),
            check.fix
        )));
    }
    Ok(())
}
