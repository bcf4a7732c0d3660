//! Rotations and each delegate's progress through one.
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{i64_of, u64_col, StoreError};

/// A rotation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRow {
    /// Rotation id (also the AEAD associated data of `sealed_token`).
    pub id: Uuid,
    /// Account.
    pub account_id: String,
    /// The token being replaced.
    pub old_token_id: Uuid,
    /// Its successor.
    pub new_token_id: Uuid,
    /// Unix seconds.
    pub started_at: u64,
    /// Who started it.
    pub started_by: String,
    /// End of the grace window: the old token is revoked then at the latest.
    pub deadline: u64,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// `completed` (every delegate moved) or `grace_expired`.
    pub outcome: Option<String>,
}

/// One delegate's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDelegate {
    /// The delegate instance (from its hello).
    pub instance: Uuid,
    /// Its name.
    pub name: String,
    /// The session the rotate went to.
    pub session_id: Uuid,
    /// `pending`, `acked` or `reconnected`.
    pub state: String,
    /// The ack's outcome: applied, failed, manual.
    pub outcome: Option<String>,
    /// The ack's detail.
    pub detail: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: u64,
}

const COLS: &str =
    "id, account_id, old_token_id, new_token_id, started_at, started_by, deadline, finished_at, outcome";

fn uuid_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(i)?;
    s.parse()
        .map_err(|_| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "uuid".into()))
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RotationRow> {
    Ok(RotationRow {
        id: uuid_col(r, 0)?,
        account_id: r.get(1)?,
        old_token_id: uuid_col(r, 2)?,
        new_token_id: uuid_col(r, 3)?,
        started_at: u64_col(r.get(4)?),
        started_by: r.get(5)?,
        deadline: u64_col(r.get(6)?),
        finished_at: r.get::<_, Option<i64>>(7)?.map(u64_col),
        outcome: r.get(8)?,
    })
}

/// Inserts a rotation.
pub fn insert(conn: &Connection, r: &RotationRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO rotations({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            r.id.to_string(),
            r.account_id,
            r.old_token_id.to_string(),
            r.new_token_id.to_string(),
            i64_of(r.started_at),
            r.started_by,
            i64_of(r.deadline),
            r.finished_at.map(i64_of),
            r.outcome,
        ],
    )?;
    Ok(())
}

/// One rotation.
pub fn get(conn: &Connection, id: Uuid) -> Result<Option<RotationRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM rotations WHERE id = ?1"), [id.to_string()], from_row)
        .optional()?)
}

/// Rotations, newest first; only unfinished ones with `unfinished`.
pub fn list(conn: &Connection, unfinished: bool, limit: u32) -> Result<Vec<RotationRow>, StoreError> {
    let filter = if unfinished { "WHERE finished_at IS NULL" } else { "" };
    let mut stmt = conn
        .prepare(&format!("SELECT {COLS} FROM rotations {filter} ORDER BY started_at DESC, id LIMIT ?1"))?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a rotation finished.
pub fn finish(conn: &Connection, id: Uuid, now: u64, outcome: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE rotations SET finished_at = ?2, outcome = ?3 WHERE id = ?1 AND finished_at IS NULL",
        params![id.to_string(), i64_of(now), outcome],
    )?;
    Ok(n == 1)
}

/// Adds a delegate as `pending` unless the instance is already tracked.
pub fn add_delegate(conn: &Connection, rotation: Uuid, d: &RotationDelegate) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO rotation_delegates(rotation_id, instance, name, session_id, state, outcome, detail, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            rotation.to_string(),
            d.instance.to_string(),
            d.name,
            d.session_id.to_string(),
            d.state,
            d.outcome,
            d.detail,
            i64_of(d.updated_at)
        ],
    )?;
    Ok(())
}

/// Records an ack for the delegate of `instance` (a `reconnected` delegate stays so).
/// Returns whether a tracked delegate matched.
pub fn ack(
    conn: &Connection,
    rotation: Uuid,
    instance: Uuid,
    outcome: &str,
    detail: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE rotation_delegates SET outcome = ?3, detail = ?4, updated_at = ?5,
             state = CASE state WHEN 'reconnected' THEN 'reconnected' ELSE 'acked' END
         WHERE rotation_id = ?1 AND instance = ?2",
        params![rotation.to_string(), instance.to_string(), outcome, detail, i64_of(now)],
    )?;
    Ok(n > 0)
}

/// Marks delegates of this instance or name as reconnected on the new token.
pub fn reconnected(
    conn: &Connection,
    rotation: Uuid,
    instance: Uuid,
    name: &str,
    now: u64,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE rotation_delegates SET state = 'reconnected', updated_at = ?4
         WHERE rotation_id = ?1 AND (instance = ?2 OR name = ?3) AND state != 'reconnected'",
        params![rotation.to_string(), instance.to_string(), name, i64_of(now)],
    )?)
}

/// The delegates of a rotation.
pub fn delegates(conn: &Connection, rotation: Uuid) -> Result<Vec<RotationDelegate>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT instance, name, session_id, state, outcome, detail, updated_at FROM rotation_delegates
         WHERE rotation_id = ?1 ORDER BY name, instance",
    )?;
    let rows = stmt.query_map([rotation.to_string()], |r| {
        Ok(RotationDelegate {
            instance: uuid_col(r, 0)?,
            name: r.get(1)?,
            session_id: uuid_col(r, 2)?,
            state: r.get(3)?,
            outcome: r.get(4)?,
            detail: r.get(5)?,
            updated_at: u64_col(r.get(6)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
