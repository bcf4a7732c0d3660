//! Admin tokens: bearer credentials of the REST API, stored as SHA-256 only, each optionally
//! bound to one account and limited by one endpoint restriction.
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
    /// Last successful authentication.
    pub last_used_at: Option<u64>,
    /// The one account it may act on; `None`: every account (the operator's own tokens).
    pub account_id: Option<String>,
    /// The endpoint restriction it is limited by; `None`: no restriction beyond its scopes.
    pub restriction_id: Option<Uuid>,
}

const COLS: &str = "id, name, hash, scopes, created_at, created_by, expires_at, allowed_cidrs, revoked_at, \
                    last_used_at, account_id, restriction_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminTokenRow> {
    let bad = |i: usize| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "malformed".into())
    };
    let id: String = r.get(0)?;
    let scopes: String = r.get(3)?;
    let cidrs: String = r.get(7)?;
    let restriction: Option<String> = r.get(11)?;
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
        account_id: r.get(10)?,
        restriction_id: restriction.map(|s| s.parse().map_err(|_| bad(11))).transpose()?,
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
        &format!(
            "INSERT INTO admin_tokens({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ),
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
            t.account_id,
            t.restriction_id.map(|r| r.to_string()),
        ],
    )?;
    Ok(())
}

/// By hash (authentication). Changes nothing: record a successful use with [`touch`].
pub fn by_hash(conn: &Connection, hash: &str) -> Result<Option<AdminTokenRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM admin_tokens WHERE hash = ?1"), [hash], from_row)
        .optional()?)
}

/// Records a successful authentication at `now` (`last_used_at`).
pub fn touch(conn: &Connection, id: Uuid, now: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE admin_tokens SET last_used_at = ?2 WHERE id = ?1",
        params![id.to_string(), i64_of(now)],
    )?;
    Ok(())
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

/// All admin tokens, by creation; only those bound to `account` when given.
pub fn list(conn: &Connection, account: Option<&str>) -> Result<Vec<AdminTokenRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM admin_tokens WHERE ?1 IS NULL OR account_id = ?1 ORDER BY created_at, name"
    ))?;
    let rows = stmt.query_map([account], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many admin tokens that are not revoked use restriction `id`.
pub fn using_restriction(conn: &Connection, id: Uuid) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM admin_tokens WHERE restriction_id = ?1 AND revoked_at IS NULL",
        [id.to_string()],
        |r| r.get(0),
    )?;
    Ok(u64_col(n))
}

/// Whether `row` keeps the operator in: active at `now` (not revoked, not expired), with the
/// `admin` scope, bound to no account and limited by no restriction. The last such token is
/// never revoked through the API (a lock-out with no way back but the offline recovery).
pub fn is_operator_admin(row: &AdminTokenRow, now: u64) -> bool {
    row.revoked_at.is_none()
        && row.expires_at.is_none_or(|e| e > now)
        && row.account_id.is_none()
        && row.restriction_id.is_none()
        && row.scopes.iter().any(|s| s == "admin")
}

/// How many admin tokens keep the operator in at `now` ([`is_operator_admin`]).
pub fn operator_admins(conn: &Connection, now: u64) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM admin_tokens WHERE revoked_at IS NULL AND account_id IS NULL \
         AND restriction_id IS NULL"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    let mut n = 0;
    for row in rows {
        if is_operator_admin(&row?, now) {
            n += 1;
        }
    }
    Ok(n)
}

/// Revokes; `false` if it already was.
pub fn revoke(conn: &Connection, id: Uuid, now: u64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), i64_of(now)],
    )?;
    Ok(n == 1)
}
