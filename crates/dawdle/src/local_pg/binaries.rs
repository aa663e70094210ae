//! Finding the server binaries (`initdb`, `pg_ctl`, `postgres`) of one
//! PostgreSQL installation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::LocalPgError;

/// Where the server binaries of one PostgreSQL installation live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Looks in `PATH`, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn find() -> Result<Self, LocalPgError> {
        let has_all = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|name| dir.join(name).is_file())
        };
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_all(&dir) {
                    return Ok(Self { bindir: dir });
                }
            }
        }
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if output.status.success() && has_all(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bindir = entry.path().join("bin");
                has_all(&bindir).then_some((version, bindir))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bindir)| Self { bindir })
            .ok_or(LocalPgError::BinariesNotFound)
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub(super) fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}
