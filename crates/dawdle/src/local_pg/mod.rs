//! Local PostgreSQL without Docker: find the server binaries, create a cluster
//! in a directory, start it on a private Unix socket, stop it.
//!
//! Two users share this module. The test suite runs one throwaway cluster per
//! test run (see [`crate::testing`]), and the CLI and the reference service
//! fall back to a persistent cluster under `.dawdle/` when
//! `JOB_QUEUE_DATABASE_URL` is unset. Either way the cluster listens on a Unix
//! socket only (`listen_addresses = ''`), so it never collides with another
//! PostgreSQL on the machine's TCP ports.
//!
//! PostgreSQL refuses to run as root. When this process is root (CI is), the
//! cluster's files are owned by the `postgres` system user, which Debian's
//! `postgresql` package creates, and `initdb` and `pg_ctl` run as that user.
//!
//! Everything here is blocking (it spawns processes and waits for them); async
//! callers wrap it in `tokio::task::spawn_blocking`.

mod binaries;
mod cluster;

use std::path::PathBuf;

pub use binaries::PgBinaries;
#[cfg(feature = "testing")]
pub(crate) use cluster::SOCKET_PORT;
pub use cluster::{LocalCluster, LocalClusterConfig};

/// Failures of the local cluster, worded to read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "find the PostgreSQL server binaries (initdb, pg_ctl, postgres): looked in PATH, \
         `pg_config --bindir` and /usr/lib/postgresql/*/bin. Install them with \
         `apt-get install postgresql` (Debian/Ubuntu) or set JOB_QUEUE_DATABASE_URL \
         to an existing server"
    )]
    BinariesNotFound,
    #[error(
        "find the `postgres` system user to run the server as (PostgreSQL refuses to run \
         as root); install Debian's `postgresql` package, which creates it, or run as a \
         non-root user"
    )]
    NoPostgresUser,
    #[error(
        "use {dir}: the `postgres` system user cannot write there (a parent directory is \
         probably not searchable by other users); set DAWDLE_HOME to a directory it can \
         reach, for example /var/tmp/dawdle"
    )]
    Unreachable { dir: PathBuf },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{action}: {program} exited with {status}; its output:\n{output}")]
    Command {
        action: String,
        program: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// Double-quotes an SQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// FNV-1a, 64 bits: a hash that is stable across Rust releases, for names
/// and checksums that are stored or shared between processes.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("jobs"), "\"jobs\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn fnv1a_is_stable() {
        // Known value of FNV-1a 64 for "a": a stored checksum must never change.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
