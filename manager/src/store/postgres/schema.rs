//! The PostgreSQL schema: versioned migrations recorded in `schema_migrations`, applied under a
//! session advisory lock so that managers starting together against an empty database migrate
//! it once (the others wait, then find it done). The tables hold what the SQLite file holds
//! (`super::super::schema`), column for column: text ids, BIGINT unix seconds, BYTEA sealed
//! keys, JSON text lists, a BIGSERIAL audit id.
use tokio_postgres::Client;

use super::super::{i64_of, StoreError};
use super::error::Failure;

/// The advisory lock key of migrations ("tether" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x7465_7468_6572_0001;

/// The oldest server this schema and its queries are written for (`server_version_num`).
pub(super) const MIN_SERVER_VERSION: i32 = 130_000;

/// Each entry migrates from version `index` to `index + 1`; version 1 matches the SQLite
/// file's version 4 (rotation policies), version 2 adds the replica set's tables.
const MIGRATIONS: &[&str] = &[
    // 1: the whole schema as of SQLite's version 4 (a PostgreSQL store starts there). Every
    // text column sorts and compares bytewise (`COLLATE "C"`), as SQLite does, whatever the
    // database's default collation (an `en-US` cluster would otherwise order rows differently
    // and `store copy`'s read-back would not compare equal).
    r#"
    CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT COLLATE "C" NOT NULL);
    CREATE TABLE accounts (
        id TEXT COLLATE "C" CONSTRAINT accounts_pkey PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(id),
        name TEXT COLLATE "C" NOT NULL,
        sealed_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL,
        expires_at BIGINT,
        allowed_cidrs TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        revoked_at BIGINT,
        revoked_by TEXT COLLATE "C",
        last_used_at BIGINT,
        rotation_id TEXT COLLATE "C",
        rotate_every_secs BIGINT,
        rotate_grace_secs BIGINT,
        CONSTRAINT tokens_account_id_name_key UNIQUE (account_id, name)
    );
    -- No foreign key on restriction_id, as in SQLite: a restriction may be deleted once only
    -- revoked tokens name it, and a token whose restriction is gone is refused everything.
    CREATE TABLE admin_tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL CONSTRAINT admin_tokens_name_key UNIQUE,
        hash TEXT COLLATE "C" NOT NULL CONSTRAINT admin_tokens_hash_key UNIQUE,
        scopes TEXT COLLATE "C" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL,
        expires_at BIGINT,
        allowed_cidrs TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        revoked_at BIGINT,
        last_used_at BIGINT,
        account_id TEXT COLLATE "C" REFERENCES accounts(id),
        restriction_id TEXT COLLATE "C"
    );
    CREATE TABLE restrictions (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL CONSTRAINT restrictions_name_key UNIQUE,
        rules TEXT COLLATE "C" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL
    );
    -- sealed_successor: the successor token sealed under the master key while the rotation
    -- runs, set to NULL when it finishes.
    CREATE TABLE rotations (
        id TEXT COLLATE "C" PRIMARY KEY,
        account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(id),
        old_token_id TEXT COLLATE "C" NOT NULL,
        new_token_id TEXT COLLATE "C" NOT NULL,
        started_at BIGINT NOT NULL,
        started_by TEXT COLLATE "C" NOT NULL,
        deadline BIGINT NOT NULL,
        finished_at BIGINT,
        outcome TEXT COLLATE "C",
        sealed_successor BYTEA
    );
    CREATE INDEX rotations_unfinished ON rotations (started_at) WHERE finished_at IS NULL;
    CREATE TABLE rotation_delegates (
        rotation_id TEXT COLLATE "C" NOT NULL REFERENCES rotations(id),
        instance TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        session_id TEXT COLLATE "C" NOT NULL,
        state TEXT COLLATE "C" NOT NULL,
        outcome TEXT COLLATE "C",
        detail TEXT COLLATE "C",
        updated_at BIGINT NOT NULL,
        rotate_sent_session TEXT COLLATE "C",
        PRIMARY KEY (rotation_id, instance)
    );
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT COLLATE "C" NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        target TEXT COLLATE "C" NOT NULL,
        source_ip TEXT COLLATE "C",
        detail TEXT COLLATE "C" NOT NULL DEFAULT ''
    );
    "#,
    // 2: the replica set. `changes` is the numbered change log live sessions must see (written
    // in the transaction of the change, under an advisory lock so numbers commit in order);
    // `leases` holds single-runner jobs; `replicas` and `cluster_sessions` are the cluster-wide
    // view of live sessions (rows of a dead replica are reaped once its lease is over).
    r#"
    CREATE TABLE changes (
        seq BIGINT PRIMARY KEY,
        kind TEXT COLLATE "C" NOT NULL,
        subject TEXT COLLATE "C" NOT NULL,
        origin TEXT COLLATE "C" NOT NULL,
        at BIGINT NOT NULL,
        created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE leases (
        name TEXT COLLATE "C" PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL,
        fence BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE replicas (
        id TEXT COLLATE "C" PRIMARY KEY,
        version TEXT COLLATE "C" NOT NULL,
        host TEXT COLLATE "C" NOT NULL,
        started_at BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL,
        sessions BIGINT NOT NULL DEFAULT 0,
        accepting BOOLEAN NOT NULL DEFAULT TRUE,
        lease_ms BIGINT NOT NULL DEFAULT 15000
    );
    CREATE TABLE cluster_sessions (
        session_id TEXT COLLATE "C" PRIMARY KEY,
        replica_id TEXT COLLATE "C" NOT NULL,
        account_id TEXT COLLATE "C" NOT NULL,
        token_id TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        instance TEXT COLLATE "C" NOT NULL,
        host TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        ip TEXT COLLATE "C" NOT NULL,
        connected_at BIGINT NOT NULL,
        last_heartbeat BIGINT NOT NULL
    );
    -- A `delegate ping` asked through one replica of a session another holds: the holder
    -- answers in the row (rows older than a minute are reaped).
    CREATE TABLE pings (
        id TEXT COLLATE "C" PRIMARY KEY,
        session_id TEXT COLLATE "C" NOT NULL,
        payload TEXT COLLATE "C" NOT NULL,
        created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        ok BOOLEAN,
        reply TEXT COLLATE "C"
    );
    CREATE INDEX cluster_sessions_replica ON cluster_sessions (replica_id);
    CREATE INDEX cluster_sessions_token ON cluster_sessions (token_id);
    "#,
];

/// The schema version this binary writes.
pub(super) fn supported() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database to the newest schema, one transaction per step, holding the migration
/// lock throughout; refuses a schema newer than this binary ([`StoreError::TooNew`]). Returns
/// the version found and the version now. `client` should be a connection of its own: the lock is a
/// session lock, released when the connection closes should this fail half-way.
pub(super) async fn migrate(client: &mut Client, now: u64) -> Result<(i64, i64), Failure> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = migrate_locked(client, now).await;
    // Best effort: closing the connection releases it in any case.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

async fn migrate_locked(client: &mut Client, now: u64) -> Result<(i64, i64), Failure> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             )",
        )
        .await?;
    let version = current(client).await?;
    let supported = supported();
    if version > supported {
        return Err(StoreError::TooNew { found: version, supported }.into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&((i + 1) as i64), &i64_of(now)],
        )
        .await?;
        tx.commit().await?;
    }
    Ok((version, supported))
}

/// The schema version recorded (0: none yet).
async fn current(client: &Client) -> Result<i64, Failure> {
    let row = client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?;
    Ok(row.try_get(0)?)
}
