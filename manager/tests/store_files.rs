//! The database and its WAL and shared-memory files are private (0600) whatever the umask,
//! and an existing database that others could read is tightened (issue 10, finding 10).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tether_manager::store::SqliteStore as Store;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_database_and_its_wal_and_shm_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tether.db");
    let store = Store::open(&db).unwrap();
    // A write makes SQLite create the WAL and SHM files.
    store
        .call_blocking(|c| {
            Ok(c.execute_batch("CREATE TABLE probe (x INTEGER); INSERT INTO probe VALUES (1);")?)
        })
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("tether.db{suffix}"));
        assert!(path.exists(), "{} exists", path.display());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn an_existing_database_readable_by_others_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tether.db");
    drop(Store::open(&db).unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("tether.db{suffix}"));
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    drop(Store::open(&db).unwrap());
    assert_eq!(mode(&db), 0o600);
}
