//! Rows of the PostgreSQL tables read back into the store's row types: the column lists each
//! query selects and one conversion per row type. Ids are stored as text, times as BIGINT
//! unix seconds, lists as JSON text, sealed keys as BYTEA (the same values as the SQLite file).
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::super::access::RestrictionRow;
use super::super::accounts::Account;
use super::super::admin::AdminTokenRow;
use super::super::audit::AuditEntry;
use super::super::rotations::{AckOutcome, DelegateState, RotationDelegate, RotationOutcome, RotationRow};
use super::super::tokens::{RotationPolicy, TokenRow};
use super::super::{u64_col, StoreError};

/// `accounts` columns, in [`account`]'s order.
pub(super) const ACCOUNT_COLS: &str = "id, name, created_at, created_by";

/// `tokens` columns, in [`token`]'s order.
pub(super) const TOKEN_COLS: &str = "id, account_id, name, sealed_key, created_at, created_by, expires_at, \
     allowed_cidrs, revoked_at, revoked_by, last_used_at, rotation_id, rotate_every_secs, rotate_grace_secs";

/// `admin_tokens` columns, in [`admin_token`]'s order.
pub(super) const ADMIN_COLS: &str =
    "id, name, hash, scopes, created_at, created_by, expires_at, allowed_cidrs, \
     revoked_at, last_used_at, account_id, restriction_id";

/// `restrictions` columns, in [`restriction`]'s order.
pub(super) const RESTRICTION_COLS: &str = "id, name, rules, created_at, created_by";

/// `rotations` columns, in [`rotation`]'s order.
pub(super) const ROTATION_COLS: &str =
    "id, account_id, old_token_id, new_token_id, started_at, started_by, deadline, finished_at, outcome";

/// `rotation_delegates` columns, in [`delegate`]'s order.
pub(super) const DELEGATE_COLS: &str = "instance, name, session_id, state, outcome, detail, updated_at";

/// `audit` columns, in [`audit`]'s order.
pub(super) const AUDIT_COLS: &str = "id, at, actor, action, target, source_ip, detail";

/// Column `i` of `r` (a type mismatch is a malformed stored value, named by column).
fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(|e| StoreError::Corrupt(format!("column {}: {e}", column_name(r, i))))
}

fn column_name(r: &Row, i: usize) -> String {
    r.columns().get(i).map(|c| c.name().to_owned()).unwrap_or_else(|| i.to_string())
}

fn uuid(r: &Row, i: usize) -> Result<Uuid, StoreError> {
    let s: &str = get(r, i)?;
    s.parse().map_err(|_| StoreError::Corrupt(format!("column {}: not a UUID", column_name(r, i))))
}

fn opt_uuid(r: &Row, i: usize) -> Result<Option<Uuid>, StoreError> {
    let s: Option<&str> = get(r, i)?;
    s.map(|s| s.parse().map_err(|_| StoreError::Corrupt(format!("column {}: not a UUID", column_name(r, i)))))
        .transpose()
}

fn secs(r: &Row, i: usize) -> Result<u64, StoreError> {
    Ok(u64_col(get(r, i)?))
}

fn opt_secs(r: &Row, i: usize) -> Result<Option<u64>, StoreError> {
    Ok(get::<Option<i64>>(r, i)?.map(u64_col))
}

fn json<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Result<T, StoreError> {
    let s: &str = get(r, i)?;
    serde_json::from_str(s)
        .map_err(|_| StoreError::Corrupt(format!("column {}: malformed JSON", column_name(r, i))))
}

/// A stored word of one of the rotation enums.
fn word<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> Result<Option<T>, StoreError> {
    let s: Option<&str> = get(r, i)?;
    s.map(|w| {
        parse(w).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {}: unknown word `{}`",
                column_name(r, i),
                tether_protocol::text::bounded(w, 32)
            ))
        })
    })
    .transpose()
}

/// JSON text of a list (allowed CIDRs, scopes, rules).
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An account row.
pub(super) fn account(r: &Row) -> Result<Account, StoreError> {
    Ok(Account { id: get(r, 0)?, name: get(r, 1)?, created_at: secs(r, 2)?, created_by: get(r, 3)? })
}

/// A token row.
pub(super) fn token(r: &Row) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: uuid(r, 0)?,
        account_id: get(r, 1)?,
        name: get(r, 2)?,
        sealed_key: get(r, 3)?,
        created_at: secs(r, 4)?,
        created_by: get(r, 5)?,
        expires_at: opt_secs(r, 6)?,
        allowed_cidrs: json(r, 7)?,
        revoked_at: opt_secs(r, 8)?,
        revoked_by: get(r, 9)?,
        last_used_at: opt_secs(r, 10)?,
        rotation_id: opt_uuid(r, 11)?,
        policy: match (opt_secs(r, 12)?, opt_secs(r, 13)?) {
            (Some(every), Some(grace)) => Some(RotationPolicy { every, grace }),
            _ => None,
        },
    })
}

/// An admin token row.
pub(super) fn admin_token(r: &Row) -> Result<AdminTokenRow, StoreError> {
    Ok(AdminTokenRow {
        id: uuid(r, 0)?,
        name: get(r, 1)?,
        hash: get(r, 2)?,
        scopes: json(r, 3)?,
        created_at: secs(r, 4)?,
        created_by: get(r, 5)?,
        expires_at: opt_secs(r, 6)?,
        allowed_cidrs: json(r, 7)?,
        revoked_at: opt_secs(r, 8)?,
        last_used_at: opt_secs(r, 9)?,
        account_id: get(r, 10)?,
        restriction_id: opt_uuid(r, 11)?,
    })
}

/// A restriction row.
pub(super) fn restriction(r: &Row) -> Result<RestrictionRow, StoreError> {
    Ok(RestrictionRow {
        id: uuid(r, 0)?,
        name: get(r, 1)?,
        rules: json(r, 2)?,
        created_at: secs(r, 3)?,
        created_by: get(r, 4)?,
    })
}

/// A rotation row.
pub(super) fn rotation(r: &Row) -> Result<RotationRow, StoreError> {
    Ok(RotationRow {
        id: uuid(r, 0)?,
        account_id: get(r, 1)?,
        old_token_id: uuid(r, 2)?,
        new_token_id: uuid(r, 3)?,
        started_at: secs(r, 4)?,
        started_by: get(r, 5)?,
        deadline: secs(r, 6)?,
        finished_at: opt_secs(r, 7)?,
        outcome: word(r, 8, RotationOutcome::parse)?,
    })
}

/// A rotation delegate row.
pub(super) fn delegate(r: &Row) -> Result<RotationDelegate, StoreError> {
    Ok(RotationDelegate {
        instance: uuid(r, 0)?,
        name: get(r, 1)?,
        session_id: uuid(r, 2)?,
        state: word(r, 3, DelegateState::parse)?
            .ok_or_else(|| StoreError::Corrupt("column state: NULL".into()))?,
        outcome: word(r, 4, AckOutcome::parse)?,
        detail: get(r, 5)?,
        updated_at: secs(r, 6)?,
    })
}

/// An audit entry.
pub(super) fn audit(r: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: get(r, 0)?,
        at: secs(r, 1)?,
        actor: get(r, 2)?,
        action: get(r, 3)?,
        target: get(r, 4)?,
        source_ip: get(r, 5)?,
        detail: get(r, 6)?,
    })
}

/// Each row converted by `f`.
pub(super) fn all<T>(rows: &[Row], f: fn(&Row) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}
