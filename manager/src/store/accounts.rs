//! Accounts: the owners of delegate tokens.
use rusqlite::{params, Connection, OptionalExtension};

use super::{i64_of, u64_col, StoreError};

/// An account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id delegates send as `ACCOUNT_ID`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account { id: r.get(0)?, name: r.get(1)?, created_at: u64_col(r.get(2)?), created_by: r.get(3)? })
}

/// Inserts an account; a duplicate id is a conflict.
pub fn insert(conn: &Connection, account: &Account) -> Result<(), StoreError> {
    if get(conn, &account.id)?.is_some() {
        return Err(StoreError::Conflict(format!("account `{}` already exists", account.id)));
    }
    conn.execute(
        "INSERT INTO accounts(id, name, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
        params![account.id, account.name, i64_of(account.created_at), account.created_by],
    )?;
    Ok(())
}

/// One account.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Account>, StoreError> {
    Ok(conn
        .query_row("SELECT id, name, created_at, created_by FROM accounts WHERE id = ?1", [id], from_row)
        .optional()?)
}

/// Every account, by id.
pub fn list(conn: &Connection) -> Result<Vec<Account>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, name, created_at, created_by FROM accounts ORDER BY id")?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
