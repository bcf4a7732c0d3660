//! Delegate tokens: public metadata and `K_token` sealed under the master key. Never the
//! token string or its secret.
use ipnet::IpNet;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{i64_of, u64_col, StoreError};

/// A token's lifecycle state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Valid.
    Active,
    /// Valid, being replaced by a rotation's successor.
    Rotating,
    /// Revoked: refused at handshake, live sessions closed.
    Revoked,
    /// Past its expiry.
    Expired,
}

impl TokenState {
    /// Wire/API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Rotating => "rotating",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// A token row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id (the UUID inside the token string).
    pub id: Uuid,
    /// Owning account.
    pub account_id: String,
    /// Unique per account.
    pub name: String,
    /// `K_token` sealed under the master key.
    pub sealed_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Expiry, unix seconds.
    pub expires_at: Option<u64>,
    /// Allowed source networks; empty allows all.
    pub allowed_cidrs: Vec<IpNet>,
    /// When revoked.
    pub revoked_at: Option<u64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Last successful handshake.
    pub last_used_at: Option<u64>,
    /// The unfinished rotation replacing this token.
    pub rotation_id: Option<Uuid>,
    /// Its rotation policy, if any: the manager rotates it itself when due.
    pub policy: Option<RotationPolicy>,
}

/// A token's rotation policy: a rotation starts `every` seconds after the token was created,
/// with a grace window of `grace` seconds; the successor inherits the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Seconds from a token's creation to its rotation.
    pub every: u64,
    /// The rotation's grace window, seconds.
    pub grace: u64,
}

impl RotationPolicy {
    /// Unix seconds at which the token created at `created_at` is due.
    pub fn due_at(&self, created_at: u64) -> u64 {
        created_at.saturating_add(self.every)
    }
}

impl TokenRow {
    /// The state at `now`.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else if self.rotation_id.is_some() {
            TokenState::Rotating
        } else {
            TokenState::Active
        }
    }
}

const COLS: &str = "id, account_id, name, sealed_key, created_at, created_by, expires_at, allowed_cidrs, \
                    revoked_at, revoked_by, last_used_at, rotation_id, rotate_every_secs, rotate_grace_secs";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let id: String = r.get(0)?;
    let cidrs: String = r.get(7)?;
    let rotation: Option<String> = r.get(11)?;
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_owned().into())
    };
    Ok(TokenRow {
        id: id.parse().map_err(|_| bad(0, "token id"))?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        sealed_key: r.get(3)?,
        created_at: u64_col(r.get(4)?),
        created_by: r.get(5)?,
        expires_at: r.get::<_, Option<i64>>(6)?.map(u64_col),
        allowed_cidrs: serde_json::from_str(&cidrs).map_err(|_| bad(7, "allowed_cidrs"))?,
        revoked_at: r.get::<_, Option<i64>>(8)?.map(u64_col),
        revoked_by: r.get(9)?,
        last_used_at: r.get::<_, Option<i64>>(10)?.map(u64_col),
        rotation_id: rotation.map(|s| s.parse().map_err(|_| bad(11, "rotation id"))).transpose()?,
        policy: match (r.get::<_, Option<i64>>(12)?, r.get::<_, Option<i64>>(13)?) {
            (Some(every), Some(grace)) => {
                Some(RotationPolicy { every: u64_col(every), grace: u64_col(grace) })
            }
            _ => None,
        },
    })
}

/// Inserts a token; a duplicate name in the account is a conflict.
pub fn insert(conn: &Connection, t: &TokenRow) -> Result<(), StoreError> {
    if find(conn, &t.account_id, &t.name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a token named `{}` already exists in this account",
            t.name
        )));
    }
    let cidrs = serde_json::to_string(&t.allowed_cidrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.execute(
        &format!(
            "INSERT INTO tokens({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            t.id.to_string(),
            t.account_id,
            t.name,
            t.sealed_key,
            i64_of(t.created_at),
            t.created_by,
            t.expires_at.map(i64_of),
            cidrs,
            t.revoked_at.map(i64_of),
            t.revoked_by,
            t.last_used_at.map(i64_of),
            t.rotation_id.map(|r| r.to_string()),
            t.policy.map(|p| i64_of(p.every)),
            t.policy.map(|p| i64_of(p.grace)),
        ],
    )?;
    Ok(())
}

/// A token by id, in any account.
pub fn get(conn: &Connection, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM tokens WHERE id = ?1"), [id.to_string()], from_row)
        .optional()?)
}

/// A token of `account` by id or by name.
pub fn find(conn: &Connection, account: &str, id_or_name: &str) -> Result<Option<TokenRow>, StoreError> {
    if let Ok(id) = id_or_name.parse::<Uuid>() {
        if let Some(t) = get(conn, id)?.filter(|t| t.account_id == account) {
            return Ok(Some(t));
        }
    }
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM tokens WHERE account_id = ?1 AND name = ?2"),
            [account, id_or_name],
            from_row,
        )
        .optional()?)
}

/// The tokens of an account, by creation time.
pub fn list(conn: &Connection, account: &str) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLS} FROM tokens WHERE account_id = ?1 ORDER BY created_at, name"))?;
    let rows = stmt.query_map([account], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a token revoked. Returns `false` if it already was (nothing changes).
pub fn revoke(conn: &Connection, id: Uuid, now: u64, by: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), i64_of(now), by],
    )?;
    Ok(n == 1)
}

/// Deletes a token if it is revoked. Returns whether it was (a token that is not revoked
/// stays).
pub fn delete_revoked(conn: &Connection, id: Uuid) -> Result<bool, StoreError> {
    let n = conn.execute("DELETE FROM tokens WHERE id = ?1 AND revoked_at IS NOT NULL", [id.to_string()])?;
    Ok(n == 1)
}

/// Records a successful handshake.
pub fn touch(conn: &Connection, id: Uuid, now: u64) -> Result<(), StoreError> {
    // Never backwards: another writer (a replica, an earlier handshake) may have recorded a later use.
    conn.execute(
        "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1",
        params![id.to_string(), i64_of(now)],
    )?;
    Ok(())
}

/// Tokens whose rotation policy makes them due at `now` (see
/// [`crate::store::StoreOps::tokens_due_for_rotation`]).
pub fn due_for_rotation(conn: &Connection, now: u64, limit: u32) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM tokens
         WHERE revoked_at IS NULL AND rotation_id IS NULL
           AND rotate_every_secs IS NOT NULL AND rotate_grace_secs IS NOT NULL
           AND (expires_at IS NULL OR expires_at > ?1)
           AND created_at + rotate_every_secs <= ?1
         ORDER BY created_at + rotate_every_secs, id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![i64_of(now), limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets or clears a token's rotation policy.
pub fn set_policy(conn: &Connection, id: Uuid, policy: Option<RotationPolicy>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tokens SET rotate_every_secs = ?2, rotate_grace_secs = ?3 WHERE id = ?1",
        params![id.to_string(), policy.map(|p| i64_of(p.every)), policy.map(|p| i64_of(p.grace))],
    )?;
    Ok(())
}

/// The audit detail of a policy change (the same words on every backend).
pub fn policy_detail(policy: Option<RotationPolicy>) -> String {
    match policy {
        Some(p) => format!("rotate_every_secs={} grace_secs={}", p.every, p.grace),
        None => "rotation policy cleared".to_owned(),
    }
}

/// Renames a token and marks it as replaced by `rotation_id` (or clears the mark).
pub fn set_rotation(
    conn: &Connection,
    id: Uuid,
    new_name: &str,
    rotation_id: Option<Uuid>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tokens SET name = ?2, rotation_id = ?3 WHERE id = ?1",
        params![id.to_string(), new_name, rotation_id.map(|r| r.to_string())],
    )?;
    Ok(())
}
