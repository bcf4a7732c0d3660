//! The storage of the admin access model: endpoint restrictions (named, reusable lists of
//! allowed `METHOD /path/pattern` rules that limit an admin token beyond its scopes, stored as
//! their canonical text and parsed and matched by `api::access`), and the account-scoped reads
//! an account-bound admin token is served from.
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::rotations::{self, RotationRow};
use super::{i64_of, u64_col, StoreError};

/// A restriction row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictionRow {
    /// Id (what admin tokens refer to).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Allowed requests, each `METHOD /api/v1/…` in canonical form.
    pub rules: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
}

const COLS: &str = "id, name, rules, created_at, created_by";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RestrictionRow> {
    let bad = |i: usize| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "malformed".into())
    };
    let id: String = r.get(0)?;
    let rules: String = r.get(2)?;
    Ok(RestrictionRow {
        id: id.parse().map_err(|_| bad(0))?,
        name: r.get(1)?,
        rules: serde_json::from_str(&rules).map_err(|_| bad(2))?,
        created_at: u64_col(r.get(3)?),
        created_by: r.get(4)?,
    })
}

/// Inserts a restriction; a duplicate name is a conflict.
pub fn insert(conn: &Connection, row: &RestrictionRow) -> Result<(), StoreError> {
    if find(conn, &row.name)?.is_some() {
        return Err(StoreError::Conflict(format!("a restriction named `{}` already exists", row.name)));
    }
    let rules = serde_json::to_string(&row.rules).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.execute(
        &format!("INSERT INTO restrictions({COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![row.id.to_string(), row.name, rules, i64_of(row.created_at), row.created_by],
    )?;
    Ok(())
}

/// By id.
pub fn get(conn: &Connection, id: Uuid) -> Result<Option<RestrictionRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM restrictions WHERE id = ?1"), [id.to_string()], from_row)
        .optional()?)
}

/// By id or name.
pub fn find(conn: &Connection, id_or_name: &str) -> Result<Option<RestrictionRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM restrictions WHERE id = ?1 OR name = ?1"),
            [id_or_name],
            from_row,
        )
        .optional()?)
}

/// All restrictions, by name.
pub fn list(conn: &Connection) -> Result<Vec<RestrictionRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLS} FROM restrictions ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every restriction's name by id (to show admin tokens).
pub fn names(conn: &Connection) -> Result<HashMap<Uuid, String>, StoreError> {
    Ok(list(conn)?.into_iter().map(|r| (r.id, r.name)).collect())
}

/// Deletes restriction `id`; `false` if it did not exist.
pub fn delete(conn: &Connection, id: Uuid) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM restrictions WHERE id = ?1", [id.to_string()])? == 1)
}

/// The newest `limit` rotations of `account`, newest first.
pub fn rotations_of(conn: &Connection, account: &str, limit: u32) -> Result<Vec<RotationRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id FROM rotations WHERE account_id = ?1 ORDER BY started_at DESC, id LIMIT ?2")?;
    let ids = stmt.query_map(params![account, limit], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for id in ids {
        let id: Uuid = id?.parse().map_err(|_| StoreError::Corrupt("rotation id".into()))?;
        if let Some(row) = rotations::get(conn, id)? {
            out.push(row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let row = RestrictionRow {
            id: Uuid::new_v4(),
            name: "read-tokens".into(),
            rules: vec!["GET /api/v1/accounts/*/tokens".into()],
            created_at: 5,
            created_by: "admin:x".into(),
        };
        store
            .call_blocking(|c| {
                insert(c, &row)?;
                assert!(matches!(insert(c, &row), Err(StoreError::Conflict(_))));
                assert_eq!(find(c, "read-tokens")?.as_ref(), Some(&row));
                assert_eq!(find(c, &row.id.to_string())?.as_ref(), Some(&row));
                assert_eq!(get(c, row.id)?.as_ref(), Some(&row));
                assert_eq!(list(c)?, vec![row.clone()]);
                assert_eq!(names(c)?.get(&row.id).map(String::as_str), Some("read-tokens"));
                assert!(delete(c, row.id)?);
                assert!(!delete(c, row.id)?);
                assert!(find(c, "read-tokens")?.is_none());
                Ok(())
            })
            .unwrap();
    }
}
