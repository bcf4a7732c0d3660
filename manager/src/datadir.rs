//! The data directory: database, master key and generated TLS material, created on first use
//! with private permissions.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keys::{KeyError, MasterKey};
use crate::store::{Store, StoreError, DB_FILE};
use crate::tls::TlsError;

/// Master key file name in the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Problems opening the data dir.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory cannot be created or read.
    #[error("data dir {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The master key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// An opened data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Its path (absolute).
    pub path: PathBuf,
    /// The database.
    pub store: Store,
    /// The master key.
    pub master: Arc<MasterKey>,
}

/// Warns when others may read or enter the data dir (it holds the master key and the
/// database; `chmod 700` it). Not refused: a group-shared directory can be deliberate.
fn warn_if_open(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(data_dir = %path.display(), mode = %format!("{:o}", mode & 0o777),
                "the data dir is accessible to other users; run `chmod 700` on it");
        }
    }
}

impl DataDir {
    /// Opens `path`, creating the directory (0700), the master key (0600) and the database.
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let (path, master) = Self::open_files(path)?;
        let store = Store::open(&path.join(DB_FILE))?;
        Ok(Self { path, store, master })
    }

    /// Opens `path` (creating the directory and the master key as [`DataDir::open`] does)
    /// with `store` as its store: the PostgreSQL store, where the data dir keeps only the
    /// master key and the TLS files.
    pub fn open_with(path: &Path, store: Store) -> Result<Self, DataDirError> {
        let (path, master) = Self::open_files(path)?;
        Ok(Self { path, store, master })
    }

    /// Whether `path` holds a master key (a data dir that `init` made), creating nothing.
    pub fn has_master_key(path: &Path) -> bool {
        path.join(MASTER_KEY_FILE).exists()
    }

    fn open_files(path: &Path) -> Result<(PathBuf, Arc<MasterKey>), DataDirError> {
        let io = |source| DataDirError::Io { path: path.display().to_string(), source };
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(io)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let path = std::fs::canonicalize(path).map_err(io)?;
        warn_if_open(&path);
        let (master, _) = MasterKey::load_or_create(&path.join(MASTER_KEY_FILE))?;
        Ok((path, Arc::new(master)))
    }

    /// Whether `path` holds an initialised store, without creating anything.
    pub fn initialised_at(path: &Path) -> Result<Option<String>, DataDirError> {
        let db = path.join(DB_FILE);
        if !db.exists() {
            return Ok(None);
        }
        let store = crate::store::SqliteStore::open(&db)?;
        Ok(store.call_blocking(|c| crate::store::sqlite::meta_get(c, "initialised_at"))?)
    }
}
