//! The SQLite backend (WAL, `synchronous=FULL`, versioned migrations). One connection behind a
//! mutex; async code reaches it only through [`SqliteStore::call`], which runs on the blocking
//! pool. A function that returns `Ok` has committed: the change survives `kill -9`.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::Connection;

use super::{schema, StoreError, Timing};

mod ops;

/// Creates `db` 0600 when missing and tightens it and its `-wal`/`-shm` files to 0600.
fn private_files(db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", db.display()));
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(db).map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::symlink_metadata(file) else { continue };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            tracing::warn!(file = %file.display(), "database file was readable by others; set to 0600");
        }
    }
    Ok(())
}

/// A handle to the SQLite store; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    timing: Option<Arc<Timing>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    ///
    /// The database file is created 0600 before SQLite opens it (SQLite gives its WAL and
    /// shared-memory files the database file's mode), and an existing database, WAL or SHM
    /// file that others may read is tightened to 0600, whatever the process umask.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        private_files(path)?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted and overwritten content is zeroed, not left in free space (a rotation's
        // sealed successor, once its rotation ends).
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), timing: None })
    }

    /// This store, recording the latency of every [`SqliteStore::call`] in `timing`.
    pub fn with_timing(&self, timing: Timing) -> Self {
        Self { conn: self.conn.clone(), timing: Some(Arc::new(timing)) }
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (conn, timing) = (self.conn.clone(), self.timing.clone());
        let queued = Instant::now();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let started = Instant::now();
            let result = f(&mut guard);
            if let Some(t) = timing {
                t.wait.observe(started.duration_since(queued).as_secs_f64());
                t.run.observe(started.elapsed().as_secs_f64());
            }
            result
        })
        .await
        .map_err(|_| StoreError::Task)?
    }

    /// Runs `f` with the connection on this thread (for `init`, outside any runtime).
    pub fn call_blocking<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// Folds the WAL into the database file and truncates it to zero bytes, so content removed
/// from the database leaves no old page image in the WAL file. Best effort: a concurrent
/// reader can make it busy, and a failure is logged, never returned.
pub fn checkpoint_truncate(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}

/// A meta value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Sets a meta value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}
