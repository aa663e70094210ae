//! Connecting to the jobs database: session settings a worker opts into.

use dawdle::testing::TestDatabase;
use dawdle::JobsDatabase;

#[tokio::test]
async fn synchronous_commit_off_applies_to_every_session_of_the_pool() {
    let db = TestDatabase::with_schema().await;
    // The throwaway test cluster runs with synchronous_commit = off for
    // speed; this database asks for the production default.
    sqlx::raw_sql(&format!(
        "ALTER DATABASE \"{}\" SET synchronous_commit = on",
        db.name()
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let plain = JobsDatabase::from_url(&db.url())
        .unwrap()
        .connect(2)
        .await
        .unwrap();
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&plain)
        .await
        .unwrap();
    assert_eq!(setting, "on", "the database's setting, untouched");

    let relaxed = JobsDatabase::from_url(&db.url())
        .unwrap()
        .with_synchronous_commit_off()
        .connect(2)
        .await
        .unwrap();
    // Two connections at once: both carry the setting.
    let (mut first, mut second) = (
        relaxed.acquire().await.unwrap(),
        relaxed.acquire().await.unwrap(),
    );
    for conn in [&mut first, &mut second] {
        let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(setting, "off");
    }
}

/// A server that accepts connections and never answers (frozen, say) makes
/// connecting fail after the connect timeout, with why and no password,
/// instead of hanging whoever connects.
#[tokio::test]
async fn a_server_that_never_answers_fails_the_connection_in_bounded_time() {
    // The kernel completes the handshake of a listening socket nobody
    // accepts on; the startup message then waits forever for an answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let error = JobsDatabase::from_url(&format!("postgresql://u:S3cretPw@127.0.0.1:{port}/jobs"))
        .unwrap()
        .connect(1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < dawdle::database::CONNECT_TIMEOUT + std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.contains("no answer within"), "{error}");
    assert!(!error.contains("S3cretPw"), "{error}");
    drop(silent);
}
