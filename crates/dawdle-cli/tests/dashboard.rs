//! `dawdle dashboard` as an operator starts it: what it refuses before
//! serving, and that an unreachable database does not stop it.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dawdle::testing::eventually;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dashboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dawdle"));
    command
        .args([
            "--database-url",
            "postgresql://nobody:sekrit@127.0.0.1:1/jobs",
            "dashboard",
        ])
        .args(args)
        .env_remove("DAWDLE_DASHBOARD_USER")
        .env_remove("DAWDLE_DASHBOARD_PASSWORD");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Status line and body of `GET /` on `address`; `None` while nothing answers.
fn get(address: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
fn serving_beyond_loopback_or_acting_without_credentials_is_refused() {
    let beyond = dashboard(&["--bind", "0.0.0.0:0"], &[]).output().unwrap();
    assert_eq!(beyond.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&beyond.stderr);
    assert!(
        stderr.contains("without authentication") && stderr.contains("DAWDLE_DASHBOARD_USER"),
        "{stderr}"
    );

    let acting = dashboard(&["--actions"], &[]).output().unwrap();
    assert_eq!(acting.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&acting.stderr);
    assert!(stderr.contains("--actions needs credentials"), "{stderr}");

    let half = dashboard(&[], &[("DAWDLE_DASHBOARD_USER", "ops")])
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&half.stderr).contains("set both"));
}

#[tokio::test]
async fn an_unreachable_database_leaves_the_dashboard_serving_and_saying_so() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let log = std::env::temp_dir().join(format!("dawdle-dashboard-{}.log", std::process::id()));
    let _server = Server(
        dashboard(&["--bind", &address], &[])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut answer = None;
    eventually(
        Duration::from_secs(60),
        "the dashboard to answer",
        async || {
            let address = address.clone();
            answer = tokio::task::spawn_blocking(move || get(&address))
                .await
                .unwrap();
            answer.is_some()
        },
    )
    .await;
    let (status, body) = answer.unwrap();
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("The jobs database did not answer"), "{body}");
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(logs.contains("the jobs database is unreachable"), "{logs}");
    assert!(
        !logs.contains("sekrit") && !body.contains("sekrit"),
        "no password shown"
    );
}
