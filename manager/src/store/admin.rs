//! Admin tokens: bearer credentials of the REST API, stored as SHA-256 only.
use ipnet::IpNet;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{i64_of, u64_col, StoreError};

/// An admin token row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRow {
    /// Public id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Hex SHA-256 of the token string.
    pub hash: String,
    /// Granted scopes (names).
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// Allowed source networks; empty allows all.
    pub allowed_cidrs: Vec<IpNet>,
    /// When revoked.
    pub revoked_at: Option<u64>,
    /// Last use.
    pub last_used_at: Option<u64>,
}

const COLS: &str =
    "id, name, hash, scopes, created_at, created_by, expires_at, allowed_cidrs, revoked_at, last_used_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminTokenRow> {
    let bad = |i: usize| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "malformed".into())
    };
    let id: String = r.get(0)?;
    let scopes: String = r.get(3)?;
    let cidrs: String = r.get(7)?;
    Ok(AdminTokenRow {
        id: id.parse().map_err(|_| bad(0))?,
        name: r.get(1)?,
        hash: r.get(2)?,
        scopes: serde_json::from_str(&scopes).map_err(|_| bad(3))?,
        created_at: u64_col(r.get(4)?),
        created_by: r.get(5)?,
        expires_at: r.get::<_, Option<i64>>(6)?.map(u64_col),
        allowed_cidrs: serde_json::from_str(&cidrs).map_err(|_| bad(7))?,
        revoked_at: r.get::<_, Option<i64>>(8)?.map(u64_col),
        last_used_at: r.get::<_, Option<i64>>(9)?.map(u64_col),
    })
}

/// Inserts an admin token; a duplicate name is a conflict.
pub fn insert(conn: &Connection, t: &AdminTokenRow) -> Result<(), StoreError> {
    if find(conn, &t.name)?.is_some() {
        return Err(StoreError::Conflict(format!("an admin token named `{}` already exists", t.name)));
    }
    let scopes = serde_json::to_string(&t.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let cidrs = serde_json::to_string(&t.allowed_cidrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.execute(
        &format!("INSERT INTO admin_tokens({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            t.id.to_string(),
            t.name,
            t.hash,
            scopes,
            i64_of(t.created_at),
            t.created_by,
            t.expires_at.map(i64_of),
            cidrs,
            t.revoked_at.map(i64_of),
            t.last_used_at.map(i64_of),
        ],
    )?;
    Ok(())
}

/// By hash (authentication); updates `last_used_at` to `now` when found.
pub fn authenticate(conn: &Connection, hash: &str, now: u64) -> Result<Option<AdminTokenRow>, StoreError> {
    let row = conn
        .query_row(&format!("SELECT {COLS} FROM admin_tokens WHERE hash = ?1"), [hash], from_row)
        .optional()?;
    if let Some(row) = &row {
        conn.execute(
            "UPDATE admin_tokens SET last_used_at = ?2 WHERE id = ?1",
            params![row.id.to_string(), i64_of(now)],
        )?;
    }
    Ok(row)
}

/// By id or name.
pub fn find(conn: &Connection, id_or_name: &str) -> Result<Option<AdminTokenRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM admin_tokens WHERE id = ?1 OR name = ?1"),
            [id_or_name],
            from_row,
        )
        .optional()?)
}

/// All admin tokens, by creation.
pub fn list(conn: &Connection) -> Result<Vec<AdminTokenRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLS} FROM admin_tokens ORDER BY created_at, name"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes; `false` if it already was.
pub fn revoke(conn: &Connection, id: Uuid, now: u64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), i64_of(now)],
    )?;
    Ok(n == 1)
}
