//! [`StoreOps`] on PostgreSQL: each operation one transaction at READ COMMITTED, made safe
//! under concurrent managers by what it locks before it decides:
//! - names stay unique through the UNIQUE constraints (a violation is a conflict with the
//!   SQLite backend's text);
//! - a token or admin token is read `FOR UPDATE` before it is revoked or deleted, so two
//!   revokes write one audit entry;
//! - the last-operator check of an admin token revoke holds `admin_tokens` in SHARE ROW
//!   EXCLUSIVE mode (revokes run one at a time; reads go on);
//! - a rotation starts with a conditional UPDATE of the old token (unchanged, not revoked, not
//!   rotating), which a concurrent revoke or rotation makes match nothing;
//! - a restriction is deleted under `FOR UPDATE` of its row, which an admin token being created
//!   with it holds `FOR KEY SHARE`.
//!
//! Reads that take several queries run in one REPEATABLE READ, READ ONLY transaction.
use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, IsolationLevel};
use uuid::Uuid;

use super::super::access::RestrictionRow;
use super::super::accounts::Account;
use super::super::admin::{is_operator_admin, AdminTokenRow};
use super::super::audit::{Actor, AuditEntry};
use super::super::ops::{AdminRevoke, DeleteOutcome, RestrictionDelete, RotationPlan, Snapshot, StoreOps};
use super::super::rotations::{
    AckOutcome, DelegateState, Progress, RotationDelegate, RotationOutcome, RotationRow, ShownDelegateState,
};
use super::super::tokens::{policy_detail, RotationPolicy, TokenRow};
use super::super::{i64_of, u64_col, StoreError};
use super::cluster::log_change;
use super::error::{conflict, Failure};
use super::rows::{
    self, ACCOUNT_COLS, ADMIN_COLS, AUDIT_COLS, DELEGATE_COLS, RESTRICTION_COLS, ROTATION_COLS, TOKEN_COLS,
};
use super::PgStore;
use crate::store::cluster::Change;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A limit as the SQL parameter.
fn limit(n: u32) -> i64 {
    i64::from(n)
}

// ---- writes shared by several operations ------------------------------------------------------

async fn insert_audit(c: &impl GenericClient, e: &AuditEntry) -> Result<(), Failure> {
    c.execute(
        "INSERT INTO audit (at, actor, action, target, source_ip, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&i64_of(e.at), &e.actor, &e.action, &e.target, &e.source_ip, &e.detail],
    )
    .await?;
    Ok(())
}

async fn record(
    c: &impl GenericClient,
    actor: &Actor,
    now: u64,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), Failure> {
    insert_audit(c, &actor.entry(now, action, target, detail)).await
}

async fn insert_account(c: &impl GenericClient, a: &Account) -> Result<(), Failure> {
    c.execute(
        &format!("INSERT INTO accounts ({ACCOUNT_COLS}) VALUES ($1, $2, $3, $4)"),
        &[&a.id, &a.name, &i64_of(a.created_at), &a.created_by],
    )
    .await
    .map_err(|e| conflict(e.into(), "accounts_pkey", || format!("account `{}` already exists", a.id)))?;
    Ok(())
}

async fn insert_token(c: &impl GenericClient, t: &TokenRow) -> Result<(), Failure> {
    let cidrs = rows::to_json(&t.allowed_cidrs)?;
    c.execute(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            &t.id.to_string(),
            &t.account_id,
            &t.name,
            &t.sealed_key,
            &i64_of(t.created_at),
            &t.created_by,
            &t.expires_at.map(i64_of),
            &cidrs,
            &t.revoked_at.map(i64_of),
            &t.revoked_by,
            &t.last_used_at.map(i64_of),
            &t.rotation_id.map(|r| r.to_string()),
            &t.policy.map(|p| i64_of(p.every)),
            &t.policy.map(|p| i64_of(p.grace)),
        ],
    )
    .await
    .map_err(|e| {
        conflict(e.into(), "tokens_account_id_name_key", || {
            format!("a token named `{}` already exists in this account", t.name)
        })
    })?;
    Ok(())
}

async fn insert_admin_token(c: &impl GenericClient, t: &AdminTokenRow) -> Result<(), Failure> {
    let scopes = rows::to_json(&t.scopes)?;
    let cidrs = rows::to_json(&t.allowed_cidrs)?;
    c.execute(
        &format!("INSERT INTO admin_tokens ({ADMIN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
        &[
            &t.id.to_string(),
            &t.name,
            &t.hash,
            &scopes,
            &i64_of(t.created_at),
            &t.created_by,
            &t.expires_at.map(i64_of),
            &cidrs,
            &t.revoked_at.map(i64_of),
            &t.last_used_at.map(i64_of),
            &t.account_id,
            &t.restriction_id.map(|r| r.to_string()),
        ],
    )
    .await
    .map_err(|e| {
        conflict(e.into(), "admin_tokens_name_key", || format!("an admin token named `{}` already exists", t.name))
    })?;
    Ok(())
}

async fn insert_restriction(c: &impl GenericClient, r: &RestrictionRow) -> Result<(), Failure> {
    let rules = rows::to_json(&r.rules)?;
    c.execute(
        &format!("INSERT INTO restrictions ({RESTRICTION_COLS}) VALUES ($1, $2, $3, $4, $5)"),
        &[&r.id.to_string(), &r.name, &rules, &i64_of(r.created_at), &r.created_by],
    )
    .await
    .map_err(|e| {
        conflict(e.into(), "restrictions_name_key", || {
            format!("a restriction named `{}` already exists", r.name)
        })
    })?;
    Ok(())
}

async fn insert_rotation(
    c: &impl GenericClient,
    r: &RotationRow,
    sealed: Option<&[u8]>,
) -> Result<(), Failure> {
    c.execute(
        &format!("INSERT INTO rotations ({ROTATION_COLS}, sealed_successor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[
            &r.id.to_string(),
            &r.account_id,
            &r.old_token_id.to_string(),
            &r.new_token_id.to_string(),
            &i64_of(r.started_at),
            &r.started_by,
            &i64_of(r.deadline),
            &r.finished_at.map(i64_of),
            &r.outcome.map(RotationOutcome::as_str),
            &sealed,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_delegate(
    c: &impl GenericClient,
    rotation: Uuid,
    d: &RotationDelegate,
) -> Result<(), Failure> {
    c.execute(
        "INSERT INTO rotation_delegates (rotation_id, instance, name, session_id, state, outcome, detail, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rotation_id, instance) DO NOTHING",
        &[
            &rotation.to_string(),
            &d.instance.to_string(),
            &d.name,
            &d.session_id.to_string(),
            &d.state.as_str(),
            &d.outcome.map(AckOutcome::as_str),
            &d.detail,
            &i64_of(d.updated_at),
        ],
    )
    .await?;
    Ok(())
}

// ---- reads shared by several operations -------------------------------------------------------

async fn select_opt<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    f: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, Failure> {
    Ok(c.query_opt(sql, params).await?.as_ref().map(f).transpose()?)
}

async fn select_all<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    f: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, Failure> {
    Ok(rows::all(&c.query(sql, params).await?, f)?)
}

async fn get_token(c: &impl GenericClient, id: Uuid) -> Result<Option<TokenRow>, Failure> {
    select_opt(c, &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1"), &[&id.to_string()], rows::token)
        .await
}

/// A token of `account` by id, else by name; `lock` reads it `FOR UPDATE`.
async fn find_token(
    c: &impl GenericClient,
    account: &str,
    id_or_name: &str,
    lock: bool,
) -> Result<Option<TokenRow>, Failure> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    if let Ok(id) = id_or_name.parse::<Uuid>() {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1 AND account_id = $2{lock}");
        if let Some(t) = select_opt(c, &sql, &[&id.to_string(), &account], rows::token).await? {
            return Ok(Some(t));
        }
    }
    let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE account_id = $1 AND name = $2{lock}");
    // A locking read that waited for a concurrent rotation start sees the old token renamed
    // (`name~…`, so it no longer matches) but not the successor that took the name, which
    // that transaction inserted after this statement's snapshot. A fresh statement sees it:
    // look again, a bounded number of times, before saying there is no such token.
    let attempts = if lock.is_empty() { 1 } else { 3 };
    for _ in 1..attempts {
        if let Some(t) = select_opt(c, &sql, &[&account, &id_or_name], rows::token).await? {
            return Ok(Some(t));
        }
    }
    select_opt(c, &sql, &[&account, &id_or_name], rows::token).await
}

async fn get_restriction(c: &impl GenericClient, id: Uuid) -> Result<Option<RestrictionRow>, Failure> {
    let sql = format!("SELECT {RESTRICTION_COLS} FROM restrictions WHERE id = $1");
    select_opt(c, &sql, &[&id.to_string()], rows::restriction).await
}

async fn get_rotation(c: &impl GenericClient, id: Uuid) -> Result<Option<RotationRow>, Failure> {
    let sql = format!("SELECT {ROTATION_COLS} FROM rotations WHERE id = $1");
    select_opt(c, &sql, &[&id.to_string()], rows::rotation).await
}

async fn delegates_of(c: &impl GenericClient, rotation: Uuid) -> Result<Vec<RotationDelegate>, Failure> {
    let sql = format!(
        "SELECT {DELEGATE_COLS} FROM rotation_delegates WHERE rotation_id = $1 ORDER BY name, instance"
    );
    select_all(c, &sql, &[&rotation.to_string()], rows::delegate).await
}

/// Each rotation with its delegates.
async fn with_delegates(
    c: &impl GenericClient,
    rotations: Vec<RotationRow>,
) -> Result<Vec<(RotationRow, Vec<RotationDelegate>)>, Failure> {
    let mut out = Vec::with_capacity(rotations.len());
    for r in rotations {
        let d = delegates_of(c, r.id).await?;
        out.push((r, d));
    }
    Ok(out)
}

async fn count(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, Failure> {
    Ok(u64_col(c.query_one(sql, params).await?.try_get(0)?))
}

async fn is_empty(c: &impl GenericClient) -> Result<bool, Failure> {
    let row = c
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM accounts) AND NOT EXISTS (SELECT 1 FROM tokens)
                 AND NOT EXISTS (SELECT 1 FROM admin_tokens) AND NOT EXISTS (SELECT 1 FROM audit)",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

impl PgStore {
    /// A READ COMMITTED transaction on a pooled connection.
    pub(super) async fn write<'c>(
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<Transaction<'c>, Failure> {
        Ok(client.build_transaction().isolation_level(IsolationLevel::ReadCommitted).start().await?)
    }

    /// A REPEATABLE READ, READ ONLY transaction: several reads of one snapshot.
    async fn read<'c>(client: &'c mut deadpool_postgres::Object) -> Result<Transaction<'c>, Failure> {
        Ok(client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    }

    /// Wipes what PostgreSQL can of a finished rotation's sealed successor after the commit
    /// that set it to NULL. An UPDATE leaves the old row version as a dead tuple in the table's
    /// page (and its image in the WAL until the segment is recycled); `VACUUM` removes the dead
    /// tuple so its space is reused. PostgreSQL has no equivalent of SQLite's `secure_delete`:
    /// this is best effort, and the successor is sealed under the master key in any case.
    /// `VACUUM` cannot run inside a transaction; a failure (e.g. the role does not own the
    /// table) is logged, never returned.
    async fn vacuum_rotations(&self) {
        let result = async {
            let client = self.client().await?;
            client.batch_execute("VACUUM rotations").await?;
            Ok::<_, Failure>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e.into_store(), "VACUUM rotations after a finished rotation failed");
        }
    }
}

impl StoreOps for PgStore {
    // ---- meta ---------------------------------------------------------------------------------

    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run("meta_get", || async move {
            let client = self.client().await?;
            Ok(client
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
        .await
    }

    async fn meta_claim(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.run("meta_claim", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
            let stored: String =
                tx.query_one("SELECT value FROM meta WHERE key = $1", &[&key]).await?.try_get(0)?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }

    async fn meta_set(
        &self,
        values: Vec<(String, String)>,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        let (values, audit) = (&values, &audit);
        self.run("meta_set", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            for (key, value) in values {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[key, value],
                )
                .await?;
            }
            for e in audit {
                insert_audit(&*tx, e).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    // ---- accounts -------------------------------------------------------------------------------

    async fn create_account(
        &self,
        account: Account,
        default_token: TokenRow,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        let (account, default_token, audit) = (&account, &default_token, &audit);
        self.run("create_account", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            insert_account(&*tx, account).await?;
            insert_token(&*tx, default_token).await?;
            for e in audit {
                insert_audit(&*tx, e).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.run("account", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1");
            select_opt(&**client, &sql, &[&id], rows::account).await
        })
        .await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.run("accounts", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id");
            select_all(&**client, &sql, &[], rows::account).await
        })
        .await
    }

    // ---- delegate tokens ---------------------------------------------------------------------------

    async fn create_token(&self, row: TokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        let (row, audit) = (&row, &audit);
        self.run("create_token", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // The account row is held FOR KEY SHARE until the commit (the foreign key would
            // fail too; this names what is missing).
            if tx
                .query_opt("SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE", &[&row.account_id])
                .await?
                .is_none()
            {
                return Err(StoreError::NotFound(format!("account `{}`", row.account_id)).into());
            }
            insert_token(&*tx, row).await?;
            insert_audit(&*tx, audit).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn token(&self, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
        self.run("token", || async move {
            let client = self.client().await?;
            get_token(&**client, id).await
        })
        .await
    }

    async fn find_token(&self, account: &str, id_or_name: &str) -> Result<Option<TokenRow>, StoreError> {
        self.run("find_token", || async move {
            let client = self.client().await?;
            find_token(&**client, account, id_or_name, false).await
        })
        .await
    }

    async fn tokens(&self, account: &str) -> Result<Option<Vec<TokenRow>>, StoreError> {
        self.run("tokens", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            if tx.query_opt("SELECT 1 FROM accounts WHERE id = $1", &[&account]).await?.is_none() {
                return Ok(None);
            }
            let sql =
                format!("SELECT {TOKEN_COLS} FROM tokens WHERE account_id = $1 ORDER BY created_at, name");
            let list = select_all(&*tx, &sql, &[&account], rows::token).await?;
            tx.commit().await?;
            Ok(Some(list))
        })
        .await
    }

    async fn revoke_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<(TokenRow, bool), StoreError> {
        self.run("revoke_token", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            let Some(row) = find_token(&*tx, account, id_or_name, true).await? else {
                return Err(
                    StoreError::NotFound(format!("token `{id_or_name}` in account `{account}`")).into()
                );
            };
            if row.revoked_at.is_some() {
                return Ok((row, false));
            }
            let sql = format!(
                "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1 RETURNING {TOKEN_COLS}"
            );
            let updated =
                rows::token(&tx.query_one(&sql, &[&row.id.to_string(), &i64_of(now), &actor.who]).await?)?;
            record(&*tx, actor, now, "token.revoke", &format!("token:{account}/{}", row.id), &row.name)
                .await?;
            log_change(&*tx, self.replica, Change::Token(row.id), now).await?;
            tx.commit().await?;
            Ok((updated, true))
        })
        .await
    }

    async fn delete_revoked_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<DeleteOutcome, StoreError> {
        self.run("delete_revoked_token", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            let Some(row) = find_token(&*tx, account, id_or_name, true).await? else {
                return Ok(DeleteOutcome::NotFound);
            };
            if row.revoked_at.is_none() {
                return Ok(DeleteOutcome::NotRevoked);
            }
            tx.execute("DELETE FROM tokens WHERE id = $1", &[&row.id.to_string()]).await?;
            record(&*tx, actor, now, "token.delete", &format!("token:{account}/{}", row.id), &row.name)
                .await?;
            log_change(&*tx, self.replica, Change::Token(row.id), now).await?;
            tx.commit().await?;
            Ok(DeleteOutcome::Deleted(row))
        })
        .await
    }

    async fn set_token_policy(
        &self,
        account: &str,
        id_or_name: &str,
        policy: Option<RotationPolicy>,
        now: u64,
        actor: &Actor,
    ) -> Result<TokenRow, StoreError> {
        self.run("set_token_policy", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // FOR UPDATE: a concurrent revoke waits, or this waits for it and sees it.
            let Some(row) = find_token(&*tx, account, id_or_name, true).await? else {
                return Err(StoreError::NotFound(format!("token `{id_or_name}` in account `{account}`")).into());
            };
            if row.revoked_at.is_some() {
                return Err(StoreError::Conflict(format!("token `{}` is revoked", row.name)).into());
            }
            if row.rotation_id.is_some() {
                return Err(StoreError::Conflict(format!(
                    "token `{}` is being replaced by a rotation; change the policy of its successor",
                    row.name
                )).into());
            }
            let sql = format!(
                "UPDATE tokens SET rotate_every_secs = $2, rotate_grace_secs = $3 WHERE id = $1 RETURNING {TOKEN_COLS}"
            );
            let every = policy.map(|p| i64_of(p.every));
            let grace = policy.map(|p| i64_of(p.grace));
            let after = rows::token(&tx.query_one(&sql, &[&row.id.to_string(), &every, &grace]).await?)?;
            let target = format!("token:{account}/{}", row.id);
            record(&*tx, actor, now, "token.update", &target, &policy_detail(policy)).await?;
            tx.commit().await?;
            Ok(after)
        })
        .await
    }

    async fn touch_token(&self, id: Uuid, now: u64) -> Result<Option<TokenRow>, StoreError> {
        let touched = self
            .run("touch_token", || async move {
                let client = self.client().await?;
                client
                    .execute(
                        // Never backwards: another replica may have recorded a later use.
                        "UPDATE tokens SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $1",
                        &[&id.to_string(), &i64_of(now)],
                    )
                    .await?;
                Ok(())
            })
            .await;
        if let Err(e) = touched {
            tracing::warn!(token_id = %id, error = %e, "recording a token's last use failed");
        }
        self.token(id).await
    }

    // ---- admin tokens ------------------------------------------------------------------------------

    async fn create_admin_token(&self, row: AdminTokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        let (row, audit) = (&row, &audit);
        self.run("create_admin_token", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // Held FOR KEY SHARE until the commit: a concurrent delete of the restriction
            // (which reads it FOR UPDATE) waits, then counts this token as a user.
            if let Some(r) = row.restriction_id {
                let sql = "SELECT 1 FROM restrictions WHERE id = $1 FOR KEY SHARE";
                if tx.query_opt(sql, &[&r.to_string()]).await?.is_none() {
                    return Err(StoreError::NotFound(format!("restriction `{r}`")).into());
                }
            }
            if let Some(a) = &row.account_id {
                if tx.query_opt("SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE", &[a]).await?.is_none() {
                    return Err(StoreError::NotFound(format!("account `{a}`")).into());
                }
            }
            insert_admin_token(&*tx, row).await?;
            insert_audit(&*tx, audit).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn admin_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(AdminTokenRow, Option<Option<RestrictionRow>>)>, StoreError> {
        self.run("admin_token_by_hash", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            let sql = format!("SELECT {ADMIN_COLS} FROM admin_tokens WHERE hash = $1");
            let Some(row) = select_opt(&*tx, &sql, &[&hash], rows::admin_token).await? else {
                return Ok(None);
            };
            let restriction = match row.restriction_id {
                Some(id) => Some(get_restriction(&*tx, id).await?),
                None => None,
            };
            tx.commit().await?;
            Ok(Some((row, restriction)))
        })
        .await
    }

    async fn touch_admin_token(&self, id: Uuid, now: u64) -> Result<(), StoreError> {
        self.run("touch_admin_token", || async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE admin_tokens SET last_used_at = $2 WHERE id = $1",
                    &[&id.to_string(), &i64_of(now)],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn find_admin_token(&self, id_or_name: &str) -> Result<Option<AdminTokenRow>, StoreError> {
        self.run("find_admin_token", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {ADMIN_COLS} FROM admin_tokens WHERE id = $1 OR name = $1");
            select_opt(&**client, &sql, &[&id_or_name], rows::admin_token).await
        })
        .await
    }

    async fn admin_tokens(
        &self,
        account: Option<&str>,
    ) -> Result<(Vec<AdminTokenRow>, HashMap<Uuid, String>), StoreError> {
        self.run("admin_tokens", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            let sql = format!(
                "SELECT {ADMIN_COLS} FROM admin_tokens WHERE $1::TEXT IS NULL OR account_id = $1 ORDER BY created_at, name"
            );
            let list = select_all(&*tx, &sql, &[&account], rows::admin_token).await?;
            let sql = format!("SELECT {RESTRICTION_COLS} FROM restrictions");
            let names = select_all(&*tx, &sql, &[], rows::restriction).await?.into_iter().map(|r| (r.id, r.name)).collect();
            tx.commit().await?;
            Ok((list, names))
        })
        .await
    }

    async fn revoke_admin_token(&self, id: Uuid, now: u64, actor: &Actor) -> Result<AdminRevoke, StoreError> {
        self.run("revoke_admin_token", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // Revokes (and creates) of admin tokens wait for each other from here to the
            // commit, so the count of operator tokens below cannot change under this check.
            tx.batch_execute("LOCK TABLE admin_tokens IN SHARE ROW EXCLUSIVE MODE").await?;
            let sql = format!("SELECT {ADMIN_COLS} FROM admin_tokens WHERE id = $1");
            let Some(row) = select_opt(&*tx, &sql, &[&id.to_string()], rows::admin_token).await? else {
                return Ok(AdminRevoke::NotFound);
            };
            if row.revoked_at.is_some() {
                return Ok(AdminRevoke::Revoked { row, newly: false });
            }
            if is_operator_admin(&row, now) {
                let sql = format!(
                    "SELECT {ADMIN_COLS} FROM admin_tokens
                     WHERE revoked_at IS NULL AND account_id IS NULL AND restriction_id IS NULL"
                );
                let operators = select_all(&*tx, &sql, &[], rows::admin_token).await?;
                if operators.iter().filter(|t| is_operator_admin(t, now)).count() <= 1 {
                    return Ok(AdminRevoke::LastOperator(row));
                }
            }
            let sql = format!("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 RETURNING {ADMIN_COLS}");
            let updated = rows::admin_token(&tx.query_one(&sql, &[&id.to_string(), &i64_of(now)]).await?)?;
            record(&*tx, actor, now, "admin_token.revoke", &format!("admin_token:{id}"), &row.name).await?;
            tx.commit().await?;
            Ok(AdminRevoke::Revoked { row: updated, newly: true })
        })
        .await
    }

    // ---- endpoint restrictions ---------------------------------------------------------------------

    async fn create_restriction(&self, row: RestrictionRow, audit: AuditEntry) -> Result<(), StoreError> {
        let (row, audit) = (&row, &audit);
        self.run("create_restriction", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            insert_restriction(&*tx, row).await?;
            insert_audit(&*tx, audit).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn find_restriction(&self, id_or_name: &str) -> Result<Option<RestrictionRow>, StoreError> {
        self.run("find_restriction", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {RESTRICTION_COLS} FROM restrictions WHERE id = $1 OR name = $1");
            select_opt(&**client, &sql, &[&id_or_name], rows::restriction).await
        })
        .await
    }

    async fn restrictions(&self) -> Result<Vec<RestrictionRow>, StoreError> {
        self.run("restrictions", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {RESTRICTION_COLS} FROM restrictions ORDER BY name");
            select_all(&**client, &sql, &[], rows::restriction).await
        })
        .await
    }

    async fn delete_restriction(
        &self,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<RestrictionDelete, StoreError> {
        self.run("delete_restriction", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            let sql =
                format!("SELECT {RESTRICTION_COLS} FROM restrictions WHERE id = $1 OR name = $1 FOR UPDATE");
            let Some(row) = select_opt(&*tx, &sql, &[&id_or_name], rows::restriction).await? else {
                return Ok(RestrictionDelete::NotFound);
            };
            let users = count(
                &*tx,
                "SELECT COUNT(*) FROM admin_tokens WHERE restriction_id = $1 AND revoked_at IS NULL",
                &[&row.id.to_string()],
            )
            .await?;
            if users > 0 {
                return Ok(RestrictionDelete::InUse { row, users });
            }
            tx.execute("DELETE FROM restrictions WHERE id = $1", &[&row.id.to_string()]).await?;
            record(&*tx, actor, now, "restriction.delete", &format!("restriction:{}", row.id), &row.name)
                .await?;
            tx.commit().await?;
            Ok(RestrictionDelete::Deleted(row))
        })
        .await
    }

    // ---- audit -------------------------------------------------------------------------------------

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let entry = &entry;
        self.run("append_audit", || async move {
            let client = self.client().await?;
            insert_audit(&**client, entry).await
        })
        .await
    }

    async fn audit(&self, limit_n: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        self.run("audit", || async move {
            let client = self.client().await?;
            let sql = format!("SELECT {AUDIT_COLS} FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2");
            select_all(&**client, &sql, &[&before.unwrap_or(i64::MAX), &limit(limit_n)], rows::audit).await
        })
        .await
    }

    // ---- rotations ---------------------------------------------------------------------------------

    async fn begin_rotation(&self, plan: RotationPlan) -> Result<bool, StoreError> {
        let plan = &plan;
        self.run("begin_rotation", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // Matches nothing when a concurrent revoke, rotation or rename got there first (it
            // waits for that transaction's commit, then reads the row again).
            let renamed = tx
                .execute(
                    "UPDATE tokens SET name = $4, rotation_id = $5
                     WHERE id = $1 AND account_id = $2 AND name = $3 AND revoked_at IS NULL AND rotation_id IS NULL
                       AND (NOT $6 OR rotate_every_secs IS NOT NULL)",
                    &[
                        &plan.old.id.to_string(),
                        &plan.old.account_id,
                        &plan.old.name,
                        &plan.old_new_name,
                        &plan.rotation.id.to_string(),
                        &plan.by_policy,
                    ],
                )
                .await
                .map_err(|e| {
                    conflict(e.into(), "tokens_account_id_name_key", || {
                        format!("a token named `{}` already exists in this account", plan.old_new_name)
                    })
                })?;
            if renamed != 1 {
                return Ok(false);
            }
            insert_token(&*tx, &plan.successor).await?;
            insert_rotation(&*tx, &plan.rotation, Some(plan.sealed_successor.as_slice())).await?;
            insert_audit(&*tx, &plan.audit).await?;
            let change = Change::RotationStarted(plan.rotation.id);
            log_change(&*tx, self.replica, change, plan.rotation.started_at).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn rotation(&self, id: Uuid) -> Result<Option<RotationRow>, StoreError> {
        self.run("rotation", || async move {
            let client = self.client().await?;
            get_rotation(&**client, id).await
        })
        .await
    }

    async fn rotations(
        &self,
        account: Option<&str>,
        limit_n: u32,
    ) -> Result<Vec<(RotationRow, Vec<RotationDelegate>)>, StoreError> {
        self.run("rotations", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            let sql = format!(
                "SELECT {ROTATION_COLS} FROM rotations WHERE $1::TEXT IS NULL OR account_id = $1
                 ORDER BY started_at DESC, id LIMIT $2"
            );
            let list = select_all(&*tx, &sql, &[&account, &limit(limit_n)], rows::rotation).await?;
            let out = with_delegates(&*tx, list).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    async fn unfinished_rotations(
        &self,
        limit_n: u32,
    ) -> Result<Vec<(RotationRow, Option<Vec<u8>>)>, StoreError> {
        self.run("unfinished_rotations", || async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {ROTATION_COLS}, sealed_successor FROM rotations WHERE finished_at IS NULL
                 ORDER BY started_at DESC, id LIMIT $1"
            );
            let found = client.query(&sql, &[&limit(limit_n)]).await?;
            let mut out = Vec::with_capacity(found.len());
            for r in &found {
                out.push((rows::rotation(r)?, r.try_get::<_, Option<Vec<u8>>>(9)?));
            }
            Ok(out)
        })
        .await
    }

    async fn rotation_delegates(&self, rotation: Uuid) -> Result<Vec<RotationDelegate>, StoreError> {
        self.run("rotation_delegates", || async move {
            let client = self.client().await?;
            delegates_of(&**client, rotation).await
        })
        .await
    }

    async fn claim_rotate_push(&self, rotation: Uuid, d: RotationDelegate) -> Result<bool, StoreError> {
        let d = &d;
        self.run("claim_rotate_push", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            insert_delegate(&*tx, rotation, d).await?;
            // A concurrent claim of the same session waits on the row, then finds it sent.
            let claimed = tx
                .execute(
                    "UPDATE rotation_delegates SET rotate_sent_session = $3
                     WHERE rotation_id = $1 AND instance = $2
                       AND (rotate_sent_session IS NULL OR rotate_sent_session <> $3)",
                    &[&rotation.to_string(), &d.instance.to_string(), &d.session_id.to_string()],
                )
                .await?;
            tx.commit().await?;
            Ok(claimed == 1)
        })
        .await
    }

    async fn add_rotation_delegate(&self, rotation: Uuid, d: RotationDelegate) -> Result<(), StoreError> {
        let d = &d;
        self.run("add_rotation_delegate", || async move {
            let client = self.client().await?;
            insert_delegate(&**client, rotation, d).await
        })
        .await
    }

    async fn rotation_ack(
        &self,
        rotation: Uuid,
        instance: Uuid,
        outcome: AckOutcome,
        detail: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        let detail = &detail;
        self.run("rotation_ack", || async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    "UPDATE rotation_delegates SET outcome = $3, detail = $4, updated_at = $5,
                         state = CASE WHEN state = $6 THEN $6 ELSE $7 END
                     WHERE rotation_id = $1 AND instance = $2
                       AND EXISTS (SELECT 1 FROM rotations r WHERE r.id = $1 AND r.finished_at IS NULL)",
                    &[
                        &rotation.to_string(),
                        &instance.to_string(),
                        &outcome.as_str(),
                        detail,
                        &i64_of(now),
                        &DelegateState::Reconnected.as_str(),
                        &DelegateState::Acked.as_str(),
                    ],
                )
                .await?;
            Ok(n > 0)
        })
        .await
    }

    async fn rotation_reconnected(
        &self,
        rotation: Uuid,
        instance: Uuid,
        name: &str,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.run("rotation_reconnected", || async move {
            let client = self.client().await?;
            Ok(client
                .execute(
                    "UPDATE rotation_delegates SET state = $5, updated_at = $4
                     WHERE rotation_id = $1 AND (instance = $2 OR name = $3) AND state <> $5",
                    &[
                        &rotation.to_string(),
                        &instance.to_string(),
                        &name,
                        &i64_of(now),
                        &DelegateState::Reconnected.as_str(),
                    ],
                )
                .await?)
        })
        .await
    }

    async fn finish_rotation(
        &self,
        rotation: Uuid,
        old_token: Uuid,
        now: u64,
        outcome: RotationOutcome,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let finished = self
            .run("finish_rotation", || async move {
                let mut client = self.client().await?;
                let tx = Self::write(&mut client).await?;
                let finished = tx
                    .execute(
                        "UPDATE rotations SET finished_at = $2, outcome = $3, sealed_successor = NULL
                         WHERE id = $1 AND finished_at IS NULL",
                        &[&rotation.to_string(), &i64_of(now), &outcome.as_str()],
                    )
                    .await?
                    == 1;
                let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1 FOR UPDATE");
                if let Some(old) = select_opt(&*tx, &sql, &[&old_token.to_string()], rows::token).await? {
                    if old.revoked_at.is_none() {
                        tx.execute(
                            "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1",
                            &[&old_token.to_string(), &i64_of(now), &actor.who],
                        )
                        .await?;
                        let target = format!("token:{}/{old_token}", old.account_id);
                        record(&*tx, actor, now, "token.revoke", &target, outcome.as_str()).await?;
                        log_change(&*tx, self.replica, Change::Token(old_token), now).await?;
                    }
                    tx.execute(
                        "UPDATE tokens SET rotation_id = NULL WHERE id = $1",
                        &[&old_token.to_string()],
                    )
                    .await?;
                }
                if finished {
                    record(
                        &*tx,
                        actor,
                        now,
                        "rotation.finish",
                        &format!("rotation:{rotation}"),
                        outcome.as_str(),
                    )
                    .await?;
                    log_change(&*tx, self.replica, Change::RotationFinished(rotation), now).await?;
                }
                tx.commit().await?;
                Ok(finished)
            })
            .await?;
        if finished {
            self.vacuum_rotations().await;
        }
        Ok(finished)
    }

    async fn tokens_due_for_rotation(&self, now: u64, limit_n: u32) -> Result<Vec<TokenRow>, StoreError> {
        self.run("tokens_due_for_rotation", || async move {
            let client = self.client().await?;
            // `rotate_every_secs <= now - created_at` rather than `created_at + every <= now`:
            // the sum of two large stored values would overflow BIGINT.
            let sql = format!(
                "SELECT {TOKEN_COLS} FROM tokens
                 WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) AND rotation_id IS NULL
                   AND rotate_every_secs IS NOT NULL AND rotate_grace_secs IS NOT NULL
                   AND rotate_every_secs <= $1 - created_at
                 ORDER BY created_at::NUMERIC + rotate_every_secs, id LIMIT $2"
            );
            select_all(&**client, &sql, &[&i64_of(now), &limit(limit_n)], rows::token).await
        })
        .await
    }

    async fn rotation_progress(&self, now: u64) -> Result<Progress, StoreError> {
        self.run("rotation_progress", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            let mut p = Progress::default();
            for r in tx.query("SELECT started_at, deadline FROM rotations WHERE finished_at IS NULL", &[]).await? {
                let (started, deadline) = (u64_col(r.try_get(0)?), u64_col(r.try_get(1)?));
                p.running += 1;
                let half = started.saturating_add(deadline.saturating_sub(started) / 2);
                if now > half {
                    p.past_half_grace += 1;
                }
            }
            let found = tx
                .query(
                    "SELECT d.state, d.outcome, COUNT(*) FROM rotation_delegates d JOIN rotations r ON r.id = d.rotation_id
                     WHERE r.finished_at IS NULL GROUP BY d.state, d.outcome",
                    &[],
                )
                .await?;
            tx.commit().await?;
            for r in found {
                let state: &str = r.try_get(0)?;
                let state = DelegateState::parse(state)
                    .ok_or_else(|| StoreError::Corrupt("rotation_delegates.state: unknown word".into()))?;
                let outcome = r.try_get::<_, Option<&str>>(1)?.and_then(AckOutcome::parse);
                let n = u64_col(r.try_get(2)?);
                let shown = match outcome {
                    Some(AckOutcome::Manual) => ShownDelegateState::Manual,
                    _ => state.into(),
                };
                match p.delegates.iter_mut().find(|(s, _)| *s == shown) {
                    Some((_, total)) => *total += n,
                    None => p.delegates.push((shown, n)),
                }
            }
            Ok(p)
        })
        .await
    }

    // ---- whole-store ---------------------------------------------------------------------------------

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.run("snapshot", || async move {
            let mut client = self.client().await?;
            let tx = Self::read(&mut client).await?;
            if count(&*tx, "SELECT COUNT(*) FROM rotations WHERE finished_at IS NULL", &[]).await? > 0 {
                return Err(StoreError::Conflict(
                    "a rotation is running; copy the store after it has finished".into(),
                )
                .into());
            }
            // The orders of the SQLite backend's snapshot, so that snapshots of the two compare
            // equal (`store copy` checks its copy so).
            let meta = tx
                .query("SELECT key, value FROM meta ORDER BY key", &[])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, Failure>>()?;
            let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id");
            let accounts = select_all(&*tx, &sql, &[], rows::account).await?;
            let sql = format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY account_id, created_at, name");
            let tokens = select_all(&*tx, &sql, &[], rows::token).await?;
            let sql = format!("SELECT {RESTRICTION_COLS} FROM restrictions ORDER BY name");
            let restrictions = select_all(&*tx, &sql, &[], rows::restriction).await?;
            let sql = format!("SELECT {ADMIN_COLS} FROM admin_tokens ORDER BY created_at, name");
            let admin_tokens = select_all(&*tx, &sql, &[], rows::admin_token).await?;
            let sql = format!("SELECT {ROTATION_COLS} FROM rotations ORDER BY started_at DESC, id");
            let rotations = with_delegates(&*tx, select_all(&*tx, &sql, &[], rows::rotation).await?).await?;
            let sql = format!("SELECT {AUDIT_COLS} FROM audit ORDER BY id");
            let audit = select_all(&*tx, &sql, &[], rows::audit).await?;
            tx.commit().await?;
            Ok(Snapshot { meta, accounts, tokens, restrictions, admin_tokens, rotations, audit })
        })
        .await
    }

    async fn restore(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let s = &snapshot;
        self.run("restore", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            // Two restores into one empty store: the second waits here, then finds it full.
            tx.batch_execute("LOCK TABLE accounts, tokens, admin_tokens, audit IN SHARE ROW EXCLUSIVE MODE").await?;
            if !is_empty(&*tx).await? {
                return Err(StoreError::Conflict("the target store is not empty".into()).into());
            }
            for (key, value) in &s.meta {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[key, value],
                )
                .await?;
            }
            for a in &s.accounts {
                insert_account(&*tx, a).await?;
            }
            for r in &s.restrictions {
                insert_restriction(&*tx, r).await?;
            }
            for t in &s.tokens {
                insert_token(&*tx, t).await?;
            }
            for t in &s.admin_tokens {
                insert_admin_token(&*tx, t).await?;
            }
            for (r, delegates) in &s.rotations {
                insert_rotation(&*tx, r, None).await?;
                for d in delegates {
                    insert_delegate(&*tx, r.id, d).await?;
                }
            }
            for e in &s.audit {
                tx.execute(
                    &format!("INSERT INTO audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                    &[&e.id, &i64_of(e.at), &e.actor, &e.action, &e.target, &e.source_ip, &e.detail],
                )
                .await?;
            }
            // New entries continue after the restored ids.
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('audit', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM audit",
                &[],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.run("is_empty", || async move {
            let client = self.client().await?;
            is_empty(&**client).await
        })
        .await
    }
}
