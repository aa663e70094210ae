//! The dashboard over HTTP against a real jobs database: every page
//! renders whatever the rows hold (escaped), filters and pages through
//! jobs, and asks for credentials when it has them.

use std::net::SocketAddr;

use dawdle::testing::TestDatabase;
use dawdle::{defer_batch, NewJob};
use dawdle_dashboard::{check_bind, router, BasicAuth, DashboardConfig};
use serde_json::json;

/// Serves the dashboard on a free local port: (origin, base URL).
async fn serve(db: &TestDatabase, config: DashboardConfig) -> (String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let base = config.base_path.clone();
    let app = router(db.pool().clone(), config);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (origin.clone(), format!("{origin}{base}"))
}

/// The target of the page's "Older jobs" link, if any.
fn next_link(body: &str) -> Option<String> {
    let link = body
        .split("class=\"next\" href=\"")
        .nth(1)?
        .split('"')
        .next()?;
    Some(link.replace("&#38;", "&").replace("&amp;", "&"))
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Jobs in every status, with hostile content.
async fn fill(db: &TestDatabase) -> (i64, i64) {
    let ids = defer_batch(
        db.pool(),
        &[
            NewJob::new(
                "email.send",
                json!({"to": "<script>alert('args')</script>"}),
            )
            .unwrap()
            .queue("mail<b>"),
            NewJob::new("<img src=x onerror=alert(1)>", json!({"n": 1})).unwrap(),
            NewJob::new("crm.notify", json!({"id": 7})).unwrap(),
        ],
    )
    .await
    .unwrap();
    sqlx::raw_sql(&format!(
        "UPDATE procrastinate_jobs SET status = 'doing', started_at = now() WHERE id = {crm};
         UPDATE procrastinate_jobs SET status = 'failed', attempts = 3, finished_at = now()
         WHERE id = {crm};
         INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         VALUES ({crm}, 'error', 'ConnectionError', 'refused <b>bold</b>',
                 'Traceback: at <script>alert(\"tb\")</script> line 1');
         UPDATE procrastinate_jobs SET status = 'succeeded', finished_at = now()
         WHERE id = {odd};",
        crm = ids[2],
        odd = ids[1],
    ))
    .execute(db.pool())
    .await
    .unwrap();
    (ids[0], ids[2])
}

#[tokio::test]
async fn every_page_renders_what_rows_hold_as_text() {
    let db = TestDatabase::with_schema().await;
    let (email, failed) = fill(&db).await;
    let (_, base) = serve(&db, DashboardConfig::default()).await;
    for path in [
        "/".to_string(),
        "/jobs".into(),
        "/jobs?status=failed".into(),
        format!("/jobs/{email}"),
        format!("/jobs/{failed}"),
        "/failures".into(),
        "/queues".into(),
        "/workers".into(),
        "/purge".into(),
        "/purge?days=1".into(),
    ] {
        let (status, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}: {body}");
        for raw in ["<script>alert", "<img src=x", "<b>bold", "mail<b>"] {
            assert!(!body.contains(raw), "{path} shows {raw:?} unescaped");
        }
    }
    let (_, job) = get(&format!("{base}/jobs/{failed}")).await;
    assert!(job.contains("ConnectionError"), "{job}");
    assert!(job.contains("Traceback: at &#60;script&#62;"), "{job}");
    let (_, failures) = get(&format!("{base}/failures")).await;
    assert!(failures.contains("crm.notify") && failures.contains("ConnectionError"));
    let (_, overview) = get(&format!("{base}/api/overview")).await;
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["totals"]["failed"], 1);
    let (status, css) = get(&format!("{base}/assets/style.css")).await;
    assert_eq!(status, 200);
    assert!(css.contains(".verdict"));
    assert_eq!(get(&format!("{base}/assets/nothing.js")).await.0, 404);
}

#[tokio::test]
async fn jobs_are_filtered_and_paged_by_id() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..120)
        .map(|n| {
            NewJob::new("t", json!({ "n": n }))
                .unwrap()
                .queue(if n % 2 == 0 { "even" } else { "odd" })
        })
        .collect();
    defer_batch(db.pool(), &jobs).await.unwrap();
    let (origin, base) = serve(&db, DashboardConfig::default()).await;
    let rows = |body: &str| body.matches("<td class=\"status").count();

    let (_, first) = get(&format!("{base}/jobs")).await;
    assert_eq!(rows(&first), 50);
    let next = next_link(&first).expect("a link to the next page");
    let (_, second) = get(&format!("{origin}{next}")).await;
    assert_eq!(rows(&second), 50);
    let last = next_link(&second).expect("a third page");
    let (_, third) = get(&format!("{origin}{last}")).await;
    assert_eq!(rows(&third), 20);
    assert_eq!(next_link(&third), None, "no page after the last");

    let (_, even) = get(&format!("{base}/jobs?queue=even")).await;
    assert_eq!(rows(&even), 50);
    assert!(!even.contains("<td>odd</td>"));
    let last_page = next_link(&even).unwrap();
    assert!(
        last_page.contains("queue=even"),
        "the filter is kept: {last_page}"
    );

    let (status, bad) = get(&format!("{base}/jobs?status=nonsense")).await;
    assert_eq!(status, 200);
    assert!(bad.contains("unknown status"), "{bad}");
    assert_eq!(get(&format!("{base}/jobs/999999")).await.0, 404);
    assert_eq!(get(&format!("{base}/jobs/abc")).await.0, 404);
}

#[tokio::test]
async fn with_credentials_every_page_asks_for_them() {
    let db = TestDatabase::with_schema().await;
    fill(&db).await;
    let auth = BasicAuth::new("ops", "s3cret").unwrap();
    let (_, base) = serve(
        &db,
        DashboardConfig {
            base_path: "/admin/jobs".into(),
            auth: Some(auth),
            actions: false,
        },
    )
    .await;
    let client = reqwest::Client::new();
    for path in [
        "",
        "/",
        "/jobs",
        "/jobs/1",
        "/failures",
        "/queues",
        "/workers",
        "/api/overview",
        "/assets/style.css",
    ] {
        let url = format!("{base}{path}");
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{path}");
        assert!(refused.headers().contains_key("www-authenticate"));
        let wrong = client
            .get(&url)
            .basic_auth("ops", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path}");
        let admitted = client
            .get(&url)
            .basic_auth("ops", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(admitted.status().as_u16(), 200, "{path}");
        let body = admitted.text().await.unwrap();
        if path == "/" {
            assert!(
                body.contains("href=\"/admin/jobs/jobs\""),
                "links carry the mount point"
            );
        }
    }
}

#[test]
fn only_loopback_addresses_are_served_without_credentials() {
    let auth = BasicAuth::new("ops", "pw").unwrap();
    let address = |text: &str| text.parse::<SocketAddr>().unwrap();
    assert!(check_bind(address("127.0.0.1:9188"), None).is_ok());
    assert!(check_bind(address("[::1]:9188"), None).is_ok());
    let refused = check_bind(address("0.0.0.0:9188"), None).unwrap_err();
    assert!(refused.contains("DAWDLE_DASHBOARD_USER"), "{refused}");
    assert!(check_bind(address("10.1.2.3:80"), None).is_err());
    assert!(check_bind(address("0.0.0.0:9188"), Some(&auth)).is_ok());
    assert!(BasicAuth::new("", "pw").is_err());
    assert!(BasicAuth::new("a:b", "pw").is_err());
}

#[tokio::test]
async fn merged_into_an_application_it_serves_under_its_mount_point() {
    let db = TestDatabase::with_schema().await;
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                next.run(request).await
            },
        ))
        .merge(router(
            db.pool().clone(),
            DashboardConfig {
                base_path: "/admin/jobs".into(),
                auth: None,
                actions: false,
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for path in [
        "/health",
        "/admin/jobs",
        "/admin/jobs/",
        "/admin/jobs/queues",
    ] {
        assert_eq!(get(&format!("{origin}{path}")).await.0, 200, "{path}");
    }
}

/// The action form's token on `page`.
fn token(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an action form with a token")
        .to_string()
}

#[tokio::test]
async fn actions_need_credentials_and_the_pages_token() {
    let db = TestDatabase::with_schema().await;
    let (_, failed) = fill(&db).await;
    let (_, base) = serve(
        &db,
        DashboardConfig {
            base_path: String::new(),
            auth: Some(BasicAuth::new("ops", "s3cret").unwrap()),
            actions: true,
        },
    )
    .await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{base}/jobs/{failed}"))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = token(&page);
    let retry = format!("{base}/jobs/{failed}/retry");
    let post = |form: Vec<(&'static str, String)>| {
        client
            .post(&retry)
            .basic_auth("ops", Some("s3cret"))
            .form(&form)
    };
    let status_of = |id: i64| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT status::text FROM procrastinate_jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // No credentials, no token, a wrong token, a cross-site form: refused,
    // and the job is untouched.
    let anonymous = client
        .post(&retry)
        .form(&[("csrf", csrf.clone())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let tokenless = post(vec![]).send().await.unwrap();
    assert_eq!(
        tokenless.status().as_u16(),
        403,
        "{}",
        tokenless.text().await.unwrap()
    );
    let wrong = post(vec![("csrf", "0".repeat(64))]).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    let forged = post(vec![("csrf", csrf.clone())])
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(status_of(failed).await, "failed");

    // The dashboard's own form: done, and it says what changed.
    let done = post(vec![("csrf", csrf.clone())])
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().as_u16(), 200);
    assert!(done.text().await.unwrap().contains("1 job changed"));
    assert_eq!(status_of(failed).await, "todo");
    // Again: the database refuses (not failed any more), nothing changes.
    let again = post(vec![("csrf", csrf.clone())]).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);

    // Pause and resume a queue, recorded with who did it.
    let pause = client
        .post(format!("{base}/queues/default/pause"))
        .basic_auth("ops", Some("s3cret"))
        .form(&[("csrf", csrf.as_str()), ("reason", "<b>deploy</b>")])
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status().as_u16(), 200);
    let paused = dawdle::admin::paused_queues(db.pool()).await.unwrap();
    assert_eq!(paused[0].queue, "default");
    assert_eq!(paused[0].paused_by.as_deref(), Some("ops"));
    let queues = client
        .get(format!("{base}/queues"))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        queues.contains("paused since") && !queues.contains("<b>deploy"),
        "{queues}"
    );
    let resume = client
        .post(format!("{base}/queues/default/resume"))
        .basic_auth("ops", Some("s3cret"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resume.status().as_u16(), 200);
    assert!(dawdle::admin::paused_queues(db.pool())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_read_only_dashboard_offers_no_action_and_refuses_every_one() {
    let db = TestDatabase::with_schema().await;
    let (_, failed) = fill(&db).await;
    for config in [
        DashboardConfig::default(),
        // Actions asked for without credentials stay off.
        DashboardConfig {
            actions: true,
            ..DashboardConfig::default()
        },
    ] {
        let (_, base) = serve(&db, config).await;
        let (_, page) = get(&format!("{base}/jobs/{failed}")).await;
        assert!(!page.contains("name=\"csrf\""), "no action form");
        let client = reqwest::Client::new();
        for path in [
            format!("/jobs/{failed}/retry"),
            format!("/jobs/{failed}/cancel"),
            format!("/jobs/{failed}/reset"),
            "/failures/retry".to_string(),
            "/queues/default/pause".to_string(),
            "/queues/default/resume".to_string(),
            "/purge".to_string(),
        ] {
            let response = client
                .post(format!("{base}{path}"))
                .form(&[("csrf", "x")])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 403, "{path}");
        }
        let status: String =
            sqlx::query_scalar("SELECT status::text FROM procrastinate_jobs WHERE id = $1")
                .bind(failed)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(status, "failed");
        assert!(dawdle::admin::paused_queues(db.pool())
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn the_workers_page_shows_heartbeats_running_jobs_and_periodic_defers() {
    let db = TestDatabase::with_schema().await;
    let (email, _) = fill(&db).await;
    sqlx::raw_sql(&format!(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now()), (now() - interval '1 hour');
         UPDATE procrastinate_jobs SET status = 'doing', started_at = now(),
                worker_id = (SELECT min(id) FROM procrastinate_workers) WHERE id = {email};
         INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp, job_id)
         VALUES ('<i>cleanup</i>', '', 1700000000, NULL), ('<i>cleanup</i>', '', 1700003600, {email});"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let (_, base) = serve(&db, DashboardConfig::default()).await;
    let (status, page) = get(&format!("{base}/workers")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("live") && page.contains("silent (stalled or stopping)"),
        "{page}"
    );
    assert!(page.contains("&#60;i&#62;cleanup"), "escaped: {page}");
    assert!(
        page.contains("2023-11-14 23:13:20 UTC"),
        "the latest tick: {page}"
    );
    assert!(
        page.contains(&format!("/jobs/{email}\">{email}</a>")),
        "{page}"
    );
}

#[tokio::test]
async fn a_purge_is_previewed_then_confirmed_and_says_what_it_deleted() {
    let db = TestDatabase::with_schema().await;
    let (email, failed) = fill(&db).await;
    // Two finished jobs a year old (one failed), the rest recent.
    sqlx::raw_sql(&format!(
        "UPDATE procrastinate_jobs SET finished_at = now() - interval '1 year'
         WHERE id IN ({failed}, (SELECT id FROM procrastinate_jobs WHERE status = 'succeeded'))"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let (_, base) = serve(
        &db,
        DashboardConfig {
            base_path: String::new(),
            auth: Some(BasicAuth::new("ops", "s3cret").unwrap()),
            actions: true,
        },
    )
    .await;
    let client = reqwest::Client::new();
    let page = |query: &str| {
        let url = format!("{base}/purge{query}");
        let client = client.clone();
        async move {
            client
                .get(url)
                .basic_auth("ops", Some("s3cret"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let preview = page("?days=30").await;
    assert!(preview.contains("1 job(s) would be deleted"), "{preview}");
    let with_failed = page("?days=30&include_failed=on").await;
    assert!(
        with_failed.contains("2 job(s) would be deleted"),
        "{with_failed}"
    );
    let bad = page("?days=soon").await;
    assert!(bad.contains("is not a number of days"), "{bad}");
    let jobs = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM procrastinate_jobs")
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(jobs().await, 3, "a preview deletes nothing");

    let csrf = token(&with_failed);
    let purged = client
        .post(format!("{base}/purge"))
        .basic_auth("ops", Some("s3cret"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("days", "30"),
            ("include_failed", "on"),
            ("queue", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status().as_u16(), 200);
    assert!(purged.text().await.unwrap().contains("Deleted 2 job(s)"));
    assert_eq!(jobs().await, 1);
    let left: i64 = sqlx::query_scalar("SELECT id FROM procrastinate_jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(left, email, "the waiting job stays");
}

#[tokio::test]
async fn jobs_are_found_by_their_arguments_and_creation_time() {
    let db = TestDatabase::with_schema().await;
    let ids = defer_batch(
        db.pool(),
        &[
            NewJob::new("t", json!({"email": "ada@example.com"})).unwrap(),
            NewJob::new("t", json!({"note": "100% sure_thing"})).unwrap(),
            NewJob::new("t", json!({"email": "bob@example.com"})).unwrap(),
        ],
    )
    .await
    .unwrap();
    sqlx::query("UPDATE procrastinate_jobs SET created_at = '2026-01-01T12:00:00Z' WHERE id = $1")
        .bind(ids[0])
        .execute(db.pool())
        .await
        .unwrap();
    let (_, base) = serve(&db, DashboardConfig::default()).await;
    let ids_on = |page: &str| -> Vec<i64> {
        page.split("<td><a href=\"/jobs/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next()?.parse().ok())
            .collect()
    };
    let (_, page) = get(&format!("{base}/jobs?text=ADA%40")).await;
    assert_eq!(ids_on(&page), [ids[0]], "any case");
    // `%` and `_` are matched as themselves, not as patterns.
    let (_, page) = get(&format!("{base}/jobs?text=0%25%20sure_")).await;
    assert_eq!(ids_on(&page), [ids[1]]);
    let (_, page) = get(&format!("{base}/jobs?text=%25x%25")).await;
    assert!(ids_on(&page).is_empty());
    let (_, page) = get(&format!(
        "{base}/jobs?from=2026-01-01T11:00&to=2026-01-01T13:00"
    ))
    .await;
    assert_eq!(ids_on(&page), [ids[0]]);
    let (_, page) = get(&format!("{base}/jobs?from=2026-01-02")).await;
    assert_eq!(ids_on(&page), [ids[2], ids[1]]);
    let (status, page) = get(&format!("{base}/jobs?from=yesterday")).await;
    assert_eq!(status, 200);
    assert!(page.contains("is not a time such as"), "{page}");
    assert_eq!(ids_on(&page).len(), 3, "the bad bound is ignored");
}

#[tokio::test]
async fn the_overview_charts_the_last_days_outcomes_per_hour() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..6)
        .map(|_| NewJob::new("t", json!({})).unwrap())
        .collect();
    let ids = defer_batch(db.pool(), &jobs).await.unwrap();
    // Two hours ago: 3 succeeded and 1 failed; 30 hours ago (out of the
    // chart): 1 succeeded; one still waiting.
    sqlx::raw_sql(&format!(
        "UPDATE procrastinate_jobs SET status = 'succeeded',
                finished_at = date_trunc('hour', now()) - interval '2 hours' + interval '5 minutes'
         WHERE id IN ({}, {}, {});
         UPDATE procrastinate_jobs SET status = 'failed',
                finished_at = date_trunc('hour', now()) - interval '2 hours' + interval '9 minutes'
         WHERE id = {};
         UPDATE procrastinate_jobs SET status = 'succeeded', finished_at = now() - interval '30 hours'
         WHERE id = {};",
        ids[0], ids[1], ids[2], ids[3], ids[4]
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let hours = dawdle::admin::hourly_outcomes(db.pool(), 24).await.unwrap();
    assert_eq!(hours.len(), 24, "every hour, zeros included");
    let counts: Vec<(i64, i64)> = hours.iter().map(|h| (h.succeeded, h.failed)).collect();
    assert_eq!(counts[21], (3, 1), "{counts:?}");
    assert_eq!(counts.iter().map(|c| c.0 + c.1).sum::<i64>(), 4);

    let (_, base) = serve(&db, DashboardConfig::default()).await;
    let (status, page) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<svg id=\"outcomes\""), "{page}");
    assert_eq!(page.matches("<rect class=\"ok\"").count(), 24);
    assert!(page.contains(": 3 succeeded, 1 failed</title>"), "{page}");
    assert!(
        page.contains("succeeded (3)") && page.contains("failed (1)"),
        "{page}"
    );
}

#[tokio::test]
async fn failed_jobs_are_retried_by_selection_or_by_filter() {
    let db = TestDatabase::with_schema().await;
    let jobs: Vec<NewJob> = (0..5)
        .map(|n| NewJob::new(if n < 3 { "mail.send" } else { "crm.call" }, json!({})).unwrap())
        .collect();
    let ids = defer_batch(db.pool(), &jobs).await.unwrap();
    sqlx::query(
        "UPDATE procrastinate_jobs SET status = 'failed', finished_at = now() WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(db.pool())
    .await
    .unwrap();
    let (_, base) = serve(
        &db,
        DashboardConfig {
            base_path: String::new(),
            auth: Some(BasicAuth::new("ops", "s3cret").unwrap()),
            actions: true,
        },
    )
    .await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{base}/jobs?status=failed"))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"retry-matching\""), "{page}");
    let csrf = token(&page);
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap()
    };

    // Two ticked boxes: those two.
    let body = format!("csrf={csrf}&id={}&id={}", ids[0], ids[3]);
    let selected = client
        .post(format!("{base}/jobs/retry"))
        .basic_auth("ops", Some("s3cret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(selected.status().as_u16(), 200);
    assert!(selected
        .text()
        .await
        .unwrap()
        .contains("2 job(s) are waiting"));
    assert_eq!(waiting().await, 2);
    // The same selection again: nothing left to retry, said so.
    let again = client
        .post(format!("{base}/jobs/retry"))
        .basic_auth("ops", Some("s3cret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("0 job(s) are waiting to run again. 2 were not failed"));

    // A megabyte of form is refused before anything reads it.
    let huge = client
        .post(format!("{base}/jobs/retry"))
        .basic_auth("ops", Some("s3cret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&note={}", "x".repeat(1 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 409);
    assert!(huge.text().await.unwrap().contains("too large"));
    assert_eq!(waiting().await, 2);

    // Everything matching the filter: the other failed jobs of mail.send.
    let matching = client
        .post(format!("{base}/failures/retry"))
        .basic_auth("ops", Some("s3cret"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("task", "mail.send"),
            ("queue", ""),
        ])
        .send()
        .await
        .unwrap();
    assert!(matching
        .text()
        .await
        .unwrap()
        .contains("2 failed job(s) are waiting"));
    assert_eq!(waiting().await, 4);
    // A filter retry-failed cannot express offers no such button.
    let page = client
        .get(format!("{base}/jobs?status=failed&text=x"))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("id=\"retry-matching\""));
}

/// Rows too large to show whole: the pages stay small and quick, say what
/// they left out, and show control characters escaped as the CLI does.
#[tokio::test]
async fn huge_and_control_character_rows_are_shown_bounded_and_escaped() {
    let db = TestDatabase::with_schema().await;
    let lock = "L".repeat(960_000);
    let kind = "K".repeat(1_000_000);
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, lock)
         SELECT 'bulk', E'task\\u202e\\x1b[31m\\r', jsonb_build_object('blob',
                repeat(E'A\\x1b[31m', 2500000)), 'failed', '{lock}'
         FROM generate_series(1, 20)
         RETURNING id"
    ))
    .fetch_all(db.pool())
    .await
    .unwrap();
    let busy = ids[0];
    sqlx::query(&format!(
        "INSERT INTO procrastinate_events (job_id, type, error, error_message, error_traceback)
         SELECT $1, 'error', CASE WHEN n = 20000 THEN '{kind}' ELSE 'Kind' END,
                E'message\\u202e\\x1b[0m', repeat(E'line\\n', 1000)
         FROM generate_series(1, 20000) AS n"
    ))
    .bind(busy)
    .execute(db.pool())
    .await
    .unwrap();
    let (_, base) = serve(&db, DashboardConfig::default()).await;

    let started = std::time::Instant::now();
    let (status, jobs) = get(&format!("{base}/jobs")).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < std::time::Duration::from_secs(3),
        "/jobs took {took:?}"
    );
    assert!(!jobs.contains("took longer"), "{jobs}");
    assert!(
        jobs.contains(&format!("dawdle job {}", ids[19])),
        "args left out: {jobs}"
    );
    assert!(jobs.len() < 100_000, "/jobs is {} bytes", jobs.len());

    let (status, job) = get(&format!("{base}/jobs/{busy}")).await;
    assert_eq!(status, 200);
    assert!(job.len() < 2_000_000, "/jobs/{busy} is {} bytes", job.len());
    assert!(
        job.contains("events left out"),
        "the left-out events are counted"
    );
    assert!(
        job.contains(&format!("dawdle job {busy} --json")),
        "how to get the arguments"
    );

    let (status, failures) = get(&format!("{base}/failures")).await;
    assert_eq!(status, 200);
    assert!(
        failures.len() < 100_000,
        "/failures is {} bytes",
        failures.len()
    );

    for (path, body) in [
        ("/jobs", &jobs),
        ("/jobs/ID", &job),
        ("/failures", &failures),
    ] {
        for raw in ['\u{202e}', '\u{1b}', '\r'] {
            assert!(!body.contains(raw), "{path} holds a raw {raw:?}");
        }
        assert!(body.contains("\\u{202e}"), "{path} shows U+202E escaped");
    }
}
