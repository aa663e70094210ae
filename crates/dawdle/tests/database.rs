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
