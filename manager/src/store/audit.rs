//! The audit log: who did what, when, from where. Written in the same transaction as the
//! change it records.
use rusqlite::{params, Connection};

use super::{i64_of, u64_col, StoreError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id (0 before insert).
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who: `admin:<name>`, `init`, `rotation:<id>`, `system`.
    pub actor: String,
    /// What, e.g. `token.revoke`.
    pub action: String,
    /// On what, e.g. `token:<account>/<id>`.
    pub target: String,
    /// The caller's address, if from the network.
    pub source_ip: Option<String>,
    /// More detail (never secrets).
    pub detail: String,
}

/// Who is acting and from where: attached to every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub who: String,
    /// From where.
    pub source_ip: Option<String>,
}

impl Actor {
    /// An internal actor (init, rotation driver, expiry).
    pub fn system(who: impl Into<String>) -> Self {
        Self { who: who.into(), source_ip: None }
    }

    /// The audit entry of `action` on `target` at `now` by this actor (to hand to the store).
    pub fn entry(&self, now: u64, action: &str, target: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: now,
            actor: self.who.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            source_ip: self.source_ip.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Records `action` on `target` at `now` through `conn` (inside the caller's transaction).
    pub fn record(
        &self,
        conn: &Connection,
        now: u64,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        conn.execute(
            "INSERT INTO audit(at, actor, action, target, source_ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i64_of(now), self.who, action, target, self.source_ip, detail],
        )?;
        Ok(())
    }
}

/// Appends `e` (its id is ignored) through `conn` (inside the caller's transaction).
pub fn append(conn: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit(at, actor, action, target, source_ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![i64_of(e.at), e.actor, e.action, e.target, e.source_ip, e.detail],
    )?;
    Ok(())
}

/// The newest `limit` entries, newest first, optionally only those before id `before`.
pub fn list(conn: &Connection, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, action, target, source_ip, detail FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: u64_col(r.get(1)?),
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            source_ip: r.get(5)?,
            detail: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
