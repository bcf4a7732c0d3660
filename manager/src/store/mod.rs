//! The manager's store: one domain interface ([`StoreOps`]) over two backends, the embedded
//! SQLite file (the default) and PostgreSQL, chosen by one setting ([`Location`]). [`Store`] is
//! the handle the rest of the manager holds; it dispatches each operation to its backend.
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;

pub mod access;
pub mod accounts;
pub mod admin;
pub mod audit;
pub mod cluster;
mod dispatch;
pub mod ops;
pub mod postgres;
pub mod rotations;
mod schema;
pub mod sqlite;
pub mod token_cache;
pub mod tokens;

pub use ops::{AdminRevoke, DeleteOutcome, RestrictionDelete, RotationPlan, Snapshot, StoreOps};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use token_cache::TokenCache;

/// Database file name in the data dir.
pub const DB_FILE: &str = "tether.db";

/// Store errors. Never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed or cannot be reached (the message never carries the password).
    #[error("database: {0}")]
    Postgres(String),
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A name that must be unique is taken (an account id, a token name in its account, an
    /// admin token or restriction name). Domain rules (a token already rotating, a restriction
    /// in use) are the domain's own errors, not this.
    #[error("{0}")]
    Conflict(String),
    /// The database was written by a newer version.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Found in the file.
        found: i64,
        /// Known to this binary.
        supported: i64,
    },
    /// The blocking task died.
    #[error("store task failed")]
    Task,
    /// The database file's permissions could not be set.
    #[error("database file: {0}")]
    Io(String),
    /// A stored value is malformed.
    #[error("stored value is malformed: {0}")]
    Corrupt(String),
}

/// Where [`Store::call`] records its latency: the wait for the blocking pool and the
/// connection, and the run.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Queued until the closure starts.
    pub wait: Histogram,
    /// The closure.
    pub run: Histogram,
}

/// Where the store lives: one setting (`--database` / `TETHER_DATABASE_URL` / `database`).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The SQLite file (in the data dir unless given).
    Sqlite(PathBuf),
    /// A PostgreSQL server, by `postgres://` URL (holds the password: never printed whole).
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Self::Postgres(_) => f.write_str("Postgres(<url>)"),
        }
    }
}

/// The backend a [`Store`] dispatches to.
#[derive(Debug)]
pub(crate) enum Backend {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// The handshake's token cache, emptied by every operation that writes a token.
    tokens: Arc<TokenCache>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Self::from(SqliteStore::open(path)?))
    }

    /// Connects to the store at `location`: opens (creating if needed) and migrates the SQLite
    /// file, on the blocking pool, or connects to PostgreSQL and migrates its schema.
    pub async fn connect(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                    .await
                    .map_err(|_| StoreError::Task)??;
                Ok(Self::from(store))
            }
            Location::Postgres(url) => Ok(Self::from(PgStore::connect(url).await?)),
        }
    }

    /// The SQLite backend, when that is the one in use (for SQLite-only maintenance: WAL
    /// checkpoints, tests of the file itself).
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        match &*self.backend {
            Backend::Sqlite(s) => Some(s),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL backend, when that is the one in use (the replica set's feed, leases
    /// and cluster view live there).
    pub fn postgres(&self) -> Option<&PgStore> {
        match &*self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// Which backend this is, for logs: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &*self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// This store, recording the latency of every call in `timing`.
    pub fn with_timing(&self, timing: Timing) -> Self {
        match &*self.backend {
            Backend::Sqlite(s) => Self { tokens: self.tokens.clone(), ..Self::from(s.with_timing(timing)) },
            Backend::Postgres(p) => Self { tokens: self.tokens.clone(), ..Self::from(p.with_timing(timing)) },
        }
    }

    /// The handshake's token cache (see [`token_cache`]).
    pub fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }
}

impl From<SqliteStore> for Store {
    fn from(s: SqliteStore) -> Self {
        Self { backend: Arc::new(Backend::Sqlite(s)), tokens: Arc::default() }
    }
}

impl From<PgStore> for Store {
    fn from(p: PgStore) -> Self {
        Self { backend: Arc::new(Backend::Postgres(p)), tokens: Arc::default() }
    }
}

pub(crate) fn u64_col(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
