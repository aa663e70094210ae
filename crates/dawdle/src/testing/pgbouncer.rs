//! A real PgBouncer (Debian's `pgbouncer` package, `/usr/sbin/pgbouncer`) in
//! transaction pooling mode in front of a test database, for tests of the
//! worker's PgBouncer mode.
//!
//! [`PgBouncer::start`] writes a `pgbouncer.ini` and a user list into a
//! directory of its own under the test cluster, starts PgBouncer on a free
//! local port (as the `postgres` system user when this process is root,
//! since PgBouncer refuses to run as root, as PostgreSQL does), waits until
//! a connection through it works, and stops it when dropped.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::TestDatabase;

/// Where Debian's package installs the binary.
const DEBIAN_BINARY: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer process in front of one test database, in transaction
/// pooling mode. Killed (and its directory removed) when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    database: String,
}

impl PgBouncer {
    /// The `pgbouncer` binary (`PATH`, then Debian's `/usr/sbin`), or
    /// `None` when it is not installed.
    pub fn binary() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pgbouncer"))
                .find(|path| path.is_file())
        });
        on_path.or_else(|| {
            let debian = PathBuf::from(DEBIAN_BINARY);
            debian.is_file().then_some(debian)
        })
    }

    /// PgBouncer in transaction pooling mode with at most `pool_size`
    /// server connections to `db`; `None`, after saying so loudly, when
    /// PgBouncer is not installed (the test command installs it as root).
    pub async fn start(db: &TestDatabase, pool_size: u32) -> Option<Self> {
        let Some(binary) = Self::binary() else {
            eprintln!(
                "\n!!! SKIPPED: pgbouncer is not installed (apt-get install pgbouncer); the \
                 worker was not tested behind PgBouncer !!!\n"
            );
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let cluster = db.cluster();
        let dir = cluster.base_dir().join(format!(
            "pgbouncer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the pgbouncer directory");
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, "\"postgres\" \"\"\n").expect("write the pgbouncer user list");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 {database} = host={socket} port={socket_port} dbname={database} user=postgres\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {userlist}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 500\n\
                 max_db_connections = {pool_size}\n\
                 server_lifetime = 3600\n\
                 server_idle_timeout = 600\n\
                 logfile = {log}\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                database = db.name(),
                socket = cluster.socket_dir().display(),
                socket_port = crate::local_pg::SOCKET_PORT,
                userlist = userlist.display(),
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let mut command = Command::new(&binary);
        command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = cluster.run_as_ids() {
            for path in [&dir, &ini, &userlist] {
                chown(path, Some(uid), Some(gid)).expect("give the pgbouncer files to postgres");
            }
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", binary.display()));
        let bouncer = Self {
            child,
            dir,
            port,
            database: db.name().to_string(),
        };
        bouncer.wait_until_ready().await;
        Some(bouncer)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of the test database through PgBouncer.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port, self.database
        )
    }

    /// Connect options through PgBouncer, without the startup parameter
    /// (`extra_float_digits`) PgBouncer refuses.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(&self.database)
            .extra_float_digits(None)
    }

    /// Its log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// What it logged so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let options = self.connect_options().disable_statement_logging();
        loop {
            let tried = sqlx::PgConnection::connect_with(&options).await;
            match tried {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return;
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "pgbouncer did not accept a connection within 20 s ({error}); its log:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local TCP port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    listener.local_addr().expect("a bound address").port()
}
