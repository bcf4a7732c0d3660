//! The store a benchmark's manager runs on: the SQLite file in its data dir (the default) or
//! PostgreSQL, either a private server started from Debian's binaries ([`crate::pg`]: fsync
//! on, in a temporary directory, removed at the end) or a server given by URL; a fresh
//! database per scenario either way. Also what a run reads back about the store: the
//! manager's `store_operation_duration_seconds` histogram and the PostgreSQL server's CPU time.
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::procfs;
use crate::harness::manager::Manager;
use crate::pg::PgServer;

/// Where the manager keeps its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// `tether.db` in the data dir.
    Sqlite,
    /// A database of its own on a PostgreSQL server.
    Postgres,
}

impl Store {
    /// Its name in `--stores` and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl FromStr for Store {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other => bail!("unknown store `{other}` (sqlite, postgres)"),
        }
    }
}

/// The PostgreSQL server the benchmark's managers use.
#[derive(Debug)]
pub enum PgSource {
    /// Started here, stopped and removed on drop.
    Own(PgServer),
    /// Given by `--database`: a URL whose role may `CREATE DATABASE`.
    Url(String),
}

/// `url` with its database name replaced by `db` (the path of a `postgres://` URL).
pub fn with_database(url: &str, db: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("a postgres:// URL")?;
    let path_at = rest.find('/').unwrap_or(rest.len());
    let (authority, after) = rest.split_at(path_at);
    let query = after.find('?').map_or("", |q| &after[q..]);
    Ok(format!("{scheme}://{authority}/{db}{query}"))
}

impl PgSource {
    /// The server at `url`, or (`None`) a private one started from Debian's binaries.
    pub async fn start(url: Option<String>) -> Result<Self> {
        match url {
            Some(url) => Ok(Self::Url(url)),
            None => {
                let server = tokio::task::spawn_blocking(PgServer::start)
                    .await
                    .map_err(|e| anyhow!("starting PostgreSQL: {e}"))??;
                Ok(Self::Own(server))
            }
        }
    }

    /// A new, empty database: its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        match self {
            Self::Own(server) => server.create_database().await,
            Self::Url(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .context("connecting to --database")?;
                tokio::spawn(connection);
                let name = format!("tether_bench_{}", uuid::Uuid::new_v4().simple());
                client.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
                with_database(url, &name)
            }
        }
    }

    /// The postmaster's process id (a private server only).
    fn postmaster(&self) -> Option<u32> {
        let Self::Own(server) = self else { return None };
        let pid = std::fs::read_to_string(server.dir.join("data").join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// CPU time of the private server so far, in clock ticks: the postmaster and its live
    /// children, plus the children it has reaped (its `cutime` and `cstime`).
    pub fn cpu_ticks(&self) -> Option<u64> {
        let postmaster = self.postmaster()?;
        let mut ticks = procfs::cpu_ticks_with_children(postmaster).ok()?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if procfs::parent(pid).ok() == Some(postmaster) {
                ticks += procfs::cpu_ticks(pid).unwrap_or(0);
            }
        }
        Some(ticks)
    }

    /// The private server's directory (its log is `server.log`).
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            Self::Own(server) => Some(server.dir.clone()),
            Self::Url(_) => None,
        }
    }
}

/// The manager's store histogram (`tether_store_operation_duration_seconds`) at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCalls {
    run_count: f64,
    run_sum: f64,
    wait_sum: f64,
}

/// Store calls between two readings.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    /// Store operations run.
    pub calls: u64,
    /// Mean time an operation ran (its statements and commit), ms.
    pub run_mean_ms: f64,
    /// Mean wait before it ran (for the blocking pool, the connection), ms.
    pub wait_mean_ms: f64,
}

impl StoreCalls {
    /// Reads `/metrics` of `manager`.
    pub async fn read(manager: &Manager) -> Result<Self> {
        let body = manager
            .http()
            .get(format!("{}/metrics", manager.url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let value = |name: &str, phase: &str| -> f64 {
            let prefix = format!("tether_store_operation_duration_seconds_{name}{{phase=\"{phase}\"}}");
            body.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(Self {
            run_count: value("count", "run"),
            run_sum: value("sum", "run"),
            wait_sum: value("sum", "wait"),
        })
    }

    /// What happened from `earlier` to this reading.
    pub fn since(&self, earlier: &Self) -> StoreSummary {
        let calls = (self.run_count - earlier.run_count).max(0.0);
        let per = |sum: f64| if calls > 0.0 { sum * 1000.0 / calls } else { 0.0 };
        StoreSummary {
            calls: calls as u64,
            run_mean_ms: per(self.run_sum - earlier.run_sum),
            wait_mean_ms: per(self.wait_sum - earlier.wait_sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_parameters_kept() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable", "t_1").unwrap(),
            "postgres://u:p@127.0.0.1:5432/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "x").unwrap(), "postgresql://h/x");
        assert_eq!("postgresql".parse::<Store>().unwrap(), Store::Postgres);
        assert!("mysql".parse::<Store>().is_err());
    }
}
