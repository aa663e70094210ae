//! One cluster's lifecycle: lay it out in a directory, initdb it, write its
//! settings, start it on a private socket, stop it, remove it; and, as root,
//! run all of it as the `postgres` system user.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::PgConnectOptions;

use super::{fnv1a, quote_identifier, LocalPgError, PgBinaries};

/// The port number in the socket file name. Nothing listens on TCP, so the
/// value only has to agree between server and clients.
pub(crate) const SOCKET_PORT: u16 = 5432;

/// Longest socket directory we use in place; a Unix socket path (directory plus
/// `/.s.PGSQL.5432`) must fit in 107 bytes.
const MAX_SOCKET_DIR_LEN: usize = 90;

fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPgError {
    let action = action.into();
    move |source| LocalPgError::Io { action, source }
}

/// How a local cluster is laid out and tuned.
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// Directory holding everything: `data/`, `run/` (the socket), `server.log`.
    pub base_dir: PathBuf,
    /// `false` turns off fsync and full-page writes: for throwaway test
    /// clusters, never for data anyone keeps.
    pub durable: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
}

impl LocalClusterConfig {
    /// A cluster whose data is kept: the embedded default of the CLI and the
    /// reference service.
    pub fn persistent(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
            durable: true,
            max_connections: 200,
        }
    }

    /// A cluster that only lives for a test run.
    pub fn throwaway(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
            durable: false,
            max_connections: 400,
        }
    }
}

/// The system user the server runs as when this process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A PostgreSQL cluster in a local directory, reachable on a private socket.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    binaries: PgBinaries,
    config: LocalClusterConfig,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
}

impl LocalCluster {
    /// Finds the binaries and works out paths; touches nothing on disk.
    pub fn new(config: LocalClusterConfig) -> Result<Self, LocalPgError> {
        let binaries = PgBinaries::find()?;
        let base_dir = absolute(&config.base_dir)?;
        let config = LocalClusterConfig { base_dir, ..config };
        let run_as = if effective_uid_is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let in_place = config.base_dir.join("run");
        let socket_dir = if in_place.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            in_place
        } else {
            // Too long for a socket path: use a short directory named after
            // the base directory, so the same cluster always gets the same one.
            std::env::temp_dir().join(format!(
                "dawdle-{:016x}",
                fnv1a(config.base_dir.as_os_str().as_encoded_bytes())
            ))
        };
        Ok(Self {
            binaries,
            config,
            socket_dir,
            run_as,
        })
    }

    pub fn base_dir(&self) -> &Path {
        &self.config.base_dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.base_dir.join("data")
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    #[cfg(feature = "testing")]
    /// The user and group the server runs as (`postgres`), when this
    /// process is root; `None` otherwise.
    pub(crate) fn run_as_ids(&self) -> Option<(u32, u32)> {
        self.run_as.map(|user| (user.uid, user.gid))
    }

    pub fn log_file(&self) -> PathBuf {
        self.config.base_dir.join("server.log")
    }

    /// Creates the cluster if needed and starts it if it is not running.
    /// Safe to call from several processes at once: they serialise on a lock
    /// file in the base directory.
    pub fn ensure_running(&self) -> Result<(), LocalPgError> {
        fs::create_dir_all(&self.config.base_dir).map_err(io_error(format!(
            "create {}",
            self.config.base_dir.display()
        )))?;
        let lock_path = self.config.base_dir.join(".lock");
        let lock = fs::File::create(&lock_path)
            .map_err(io_error(format!("create {}", lock_path.display())))?;
        lock.lock()
            .map_err(io_error(format!("lock {}", lock_path.display())))?;
        self.prepare_directories()?;
        if !self.data_dir().join("PG_VERSION").is_file() {
            self.init_data_dir()?;
        }
        if !self.is_running()? {
            self.write_settings()?;
            self.start()?;
        }
        Ok(())
    }

    /// Whether a server is running on this cluster's data directory.
    pub fn is_running(&self) -> Result<bool, LocalPgError> {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let output = self.run_pg_ctl(&["status", "-D"], "check the local PostgreSQL")?;
        // pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        Ok(output.status.success())
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&self) -> Result<(), LocalPgError> {
        if !self.is_running()? {
            return Ok(());
        }
        let output = self.run_pg_ctl(
            &["stop", "-m", "fast", "-w", "-D"],
            "stop the local PostgreSQL",
        )?;
        self.expect_success(output, "pg_ctl", "stop the local PostgreSQL")
    }

    /// Stops the server and deletes every file of the cluster.
    pub fn destroy(&self) -> Result<(), LocalPgError> {
        self.stop()?;
        for dir in [&self.config.base_dir, &self.socket_dir] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(format!("remove {}", dir.display()))(error)),
            }
        }
        Ok(())
    }

    /// Connection options for one database of this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username("postgres")
            .database(database)
            .application_name("dawdle")
    }

    /// A libpq-style URL for one database of this cluster, usable by psql,
    /// the Python library and `JOB_QUEUE_DATABASE_URL`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@localhost:{SOCKET_PORT}/{database}?host={}",
            encode_query_value(&self.socket_dir.to_string_lossy())
        )
    }

    /// Creates `database` unless it exists. The server must be running.
    pub async fn ensure_database(&self, database: &str) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&self.connect_options("postgres")).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            let statement = format!("CREATE DATABASE {}", quote_identifier(database));
            match sqlx::query(&statement).execute(&mut conn).await {
                Ok(_) => {}
                // Another process created it between our check and our CREATE.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
                Err(error) => return Err(error),
            }
        }
        conn.close().await
    }

    fn prepare_directories(&self) -> Result<(), LocalPgError> {
        for dir in [&self.config.base_dir, &self.socket_dir] {
            fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        }
        if let Some(user) = self.run_as {
            for dir in [&self.config.base_dir, &self.socket_dir] {
                chown(dir, Some(user.uid), Some(user.gid))
                    .map_err(io_error(format!("give {} to postgres", dir.display())))?;
            }
            // The server writes the socket and its log here; make sure the
            // whole path is reachable for it before initdb gives an obscure error.
            let probe = Command::new("test")
                .arg("-w")
                .arg(&self.config.base_dir)
                .uid(user.uid)
                .gid(user.gid)
                .status()
                .map_err(io_error("run `test` as postgres"))?;
            if !probe.success() {
                return Err(LocalPgError::Unreachable {
                    dir: self.config.base_dir.clone(),
                });
            }
        }
        Ok(())
    }

    fn init_data_dir(&self) -> Result<(), LocalPgError> {
        let data_dir = self.data_dir();
        let mut command = self.command("initdb");
        command.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if !self.config.durable {
            command.arg("--no-sync");
        }
        let output = command
            .output()
            .map_err(io_error("run initdb for the local PostgreSQL"))?;
        self.expect_success(output, "initdb", "create the local PostgreSQL cluster")?;
        let conf = data_dir.join("postgresql.conf");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_error(format!("open {}", conf.display())))?;
        file.write_all(
            b"\n# Settings written by dawdle on every start.\ninclude_if_exists = 'dawdle.conf'\n",
        )
        .map_err(io_error(format!("write {}", conf.display())))
    }

    /// Writes `dawdle.conf` (included by postgresql.conf): the socket
    /// directory may change when the base directory moves, so it is written
    /// fresh before every start.
    fn write_settings(&self) -> Result<(), LocalPgError> {
        let mut settings = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = {SOCKET_PORT}\n\
             max_connections = {}\nshared_buffers = '128MB'\nlog_min_messages = warning\n",
            self.socket_dir.to_string_lossy().replace('\'', "''"),
            self.config.max_connections,
        );
        if !self.config.durable {
            settings.push_str("fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n");
        }
        let path = self.data_dir().join("dawdle.conf");
        fs::write(&path, settings).map_err(io_error(format!("write {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(io_error(format!("set permissions of {}", path.display())))
    }

    fn start(&self) -> Result<(), LocalPgError> {
        let mut command = self.command("pg_ctl");
        command
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file());
        let output = command
            .output()
            .map_err(io_error("run pg_ctl for the local PostgreSQL"))?;
        let log_tail = fs::read_to_string(self.log_file())
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_default();
        if output.status.success() {
            return Ok(());
        }
        Err(LocalPgError::Command {
            action: "start the local PostgreSQL".into(),
            program: "pg_ctl".into(),
            status: output.status,
            output: format!("{}\nserver log:\n{log_tail}", combined_output(&output)),
        })
    }

    fn run_pg_ctl(&self, args: &[&str], action: &str) -> Result<Output, LocalPgError> {
        self.command("pg_ctl")
            .args(args)
            .arg(self.data_dir())
            .output()
            .map_err(io_error(format!("{action} (running pg_ctl)")))
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.binaries.program(program));
        // A relative working directory may be unreadable for the postgres user.
        command.current_dir("/");
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    fn expect_success(
        &self,
        output: Output,
        program: &str,
        action: &str,
    ) -> Result<(), LocalPgError> {
        if output.status.success() {
            return Ok(());
        }
        Err(LocalPgError::Command {
            action: action.into(),
            program: program.into(),
            status: output.status,
            output: combined_output(&output),
        })
    }
}

fn combined_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn absolute(path: &Path) -> Result<PathBuf, LocalPgError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(io_error("read the working directory"))?;
    Ok(cwd.join(path))
}

#[expect(unsafe_code, reason = "geteuid has no safe wrapper in std")]
fn effective_uid_is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up the `postgres` system user through NSS (`getent`), as the
/// Debian package creates it.
fn postgres_user() -> Result<RunAs, LocalPgError> {
    let output = Command::new("getent")
        .args(["passwd", "postgres"])
        .output()
        .map_err(|_| LocalPgError::NoPostgresUser)?;
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (output.status.success(), fields.get(2), fields.get(3)) {
        (true, Some(uid), Some(gid)) => Ok(RunAs {
            uid: uid.parse().map_err(|_| LocalPgError::NoPostgresUser)?,
            gid: gid.parse().map_err(|_| LocalPgError::NoPostgresUser)?,
        }),
        _ => Err(LocalPgError::NoPostgresUser),
    }
}

/// Percent-encodes the few characters that would break a URL query value.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            ' ' | '%' | '&' | '#' | '?' | '+' | '=' => {
                encoded.push_str(&format!("%{:02X}", ch as u32))
            }
            _ => encoded.push(ch),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_awkward_socket_paths() {
        assert_eq!(encode_query_value("/tmp/a b&c"), "/tmp/a%20b%26c");
        assert_eq!(encode_query_value("/plain/path"), "/plain/path");
    }
}
