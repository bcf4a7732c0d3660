//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.
use rusqlite::Connection;

use super::StoreError;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        sealed_key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER,
        allowed_cidrs TEXT NOT NULL DEFAULT '[]',
        revoked_at INTEGER,
        revoked_by TEXT,
        last_used_at INTEGER,
        rotation_id TEXT,
        UNIQUE (account_id, name)
    );
    CREATE TABLE admin_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER,
        allowed_cidrs TEXT NOT NULL DEFAULT '[]',
        revoked_at INTEGER,
        last_used_at INTEGER
    );
    CREATE TABLE rotations (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        old_token_id TEXT NOT NULL,
        new_token_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        started_by TEXT NOT NULL,
        deadline INTEGER NOT NULL,
        finished_at INTEGER,
        outcome TEXT
    );
    CREATE TABLE rotation_delegates (
        rotation_id TEXT NOT NULL REFERENCES rotations(id),
        instance TEXT NOT NULL,
        name TEXT NOT NULL,
        session_id TEXT NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        detail TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (rotation_id, instance)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        source_ip TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    "#,
    // 2: the access model of admin tokens: named endpoint restrictions, and an optional account
    // binding and restriction on each admin token (NULL: all accounts, no restriction).
    // `restriction_id` has no foreign key on purpose: a restriction may be deleted once only
    // revoked tokens name it, and a token whose restriction is gone is refused everything.
    r#"
    CREATE TABLE restrictions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        rules TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    ALTER TABLE admin_tokens ADD COLUMN account_id TEXT REFERENCES accounts(id);
    ALTER TABLE admin_tokens ADD COLUMN restriction_id TEXT;
    "#,
    // 3: rotations survive a restart. `sealed_successor` holds the successor token sealed
    // under the master key (never in clear) while the rotation runs, and is wiped when it
    // finishes; `rotate_sent_session` is the session a delegate was last sent `rotate` on, so
    // no session is sent the same rotation twice.
    r#"
    ALTER TABLE rotations ADD COLUMN sealed_successor BLOB;
    ALTER TABLE rotation_delegates ADD COLUMN rotate_sent_session TEXT;
    "#,
    // 4: rotation policies: a token rotated by the manager itself every `rotate_every_secs`
    // from its creation, with a grace window of `rotate_grace_secs` (both or neither).
    r#"
    ALTER TABLE tokens ADD COLUMN rotate_every_secs INTEGER;
    ALTER TABLE tokens ADD COLUMN rotate_grace_secs INTEGER;
    "#,
];

/// Brings the database to the newest schema in one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew { found: version, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew { found: 99, .. })));
    }

    #[test]
    fn version_1_databases_gain_the_access_model_and_keep_their_admin_tokens() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO admin_tokens(id, name, hash, scopes, created_at, created_by) \
             VALUES ('00000000-0000-4000-8000-000000000001', 'old', 'h', '[\"admin\"]', 1, 'init')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (account, restriction): (Option<String>, Option<String>) = conn
            .query_row("SELECT account_id, restriction_id FROM admin_tokens WHERE name = 'old'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((account, restriction), (None, None), "existing tokens stay unbound and unrestricted");
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM restrictions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }
}
