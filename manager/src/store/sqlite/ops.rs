//! [`StoreOps`] on SQLite: each operation is one closure on the blocking pool, and each write
//! one transaction (IMMEDIATE where a read decides the write, so the read cannot go stale).
use std::collections::HashMap;

use rusqlite::{params, Connection, TransactionBehavior};
use uuid::Uuid;

use super::{checkpoint_truncate, meta_get, meta_set, SqliteStore};
use crate::store::access::{self, RestrictionRow};
use crate::store::accounts::{self, Account};
use crate::store::admin::{self, AdminTokenRow};
use crate::store::audit::{self, Actor, AuditEntry};
use crate::store::ops::{
    AdminLookup, AdminRevoke, DeleteOutcome, RestrictionDelete, RotationPlan, Snapshot, StoreOps, Unfinished,
};
use crate::store::rotations::{self, AckOutcome, Progress, RotationDelegate, RotationOutcome, RotationRow};
use crate::store::tokens::{self, policy_detail, RotationPolicy, TokenRow};
use crate::store::{i64_of, StoreError};

/// How many rows `snapshot` reads of one kind at most (a sanity bound, far above real use).
const SNAPSHOT_LIMIT: u32 = 10_000_000;

fn immediate(c: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    Ok(c.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

impl StoreOps for SqliteStore {
    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| meta_get(c, &key)).await
    }

    async fn meta_set(
        &self,
        values: Vec<(String, String)>,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            for (k, v) in &values {
                meta_set(&tx, k, v)?;
            }
            for e in &audit {
                audit::append(&tx, e)?;
            }
            Ok(tx.commit()?)
        })
        .await
    }

    async fn create_account(
        &self,
        account: Account,
        default_token: TokenRow,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            accounts::insert(&tx, &account)?;
            tokens::insert(&tx, &default_token)?;
            for e in &audit {
                audit::append(&tx, e)?;
            }
            Ok(tx.commit()?)
        })
        .await
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| accounts::get(c, &id)).await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.call(|c| accounts::list(c)).await
    }

    async fn create_token(&self, row: TokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            if accounts::get(&tx, &row.account_id)?.is_none() {
                return Err(StoreError::NotFound(format!("account `{}`", row.account_id)));
            }
            tokens::insert(&tx, &row)?;
            audit::append(&tx, &audit)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn token(&self, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
        self.call(move |c| tokens::get(c, id)).await
    }

    async fn find_token(&self, account: &str, id_or_name: &str) -> Result<Option<TokenRow>, StoreError> {
        let (account, key) = (account.to_owned(), id_or_name.to_owned());
        self.call(move |c| tokens::find(c, &account, &key)).await
    }

    async fn tokens(&self, account: &str) -> Result<Option<Vec<TokenRow>>, StoreError> {
        let account = account.to_owned();
        self.call(move |c| match accounts::get(c, &account)? {
            Some(_) => Ok(Some(tokens::list(c, &account)?)),
            None => Ok(None),
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
        let (account, key, actor) = (account.to_owned(), id_or_name.to_owned(), actor.clone());
        self.call(move |c| {
            let tx = immediate(c)?;
            let row = tokens::find(&tx, &account, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("token `{key}` in account `{account}`")))?;
            let newly = tokens::revoke(&tx, row.id, now, &actor.who)?;
            if newly {
                actor.record(&tx, now, "token.revoke", &format!("token:{account}/{}", row.id), &row.name)?;
            }
            let after = tokens::get(&tx, row.id)?.unwrap_or(row);
            tx.commit()?;
            Ok((after, newly))
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
        let (account, key, actor) = (account.to_owned(), id_or_name.to_owned(), actor.clone());
        self.call(move |c| {
            let tx = immediate(c)?;
            let Some(row) = tokens::find(&tx, &account, &key)? else { return Ok(DeleteOutcome::NotFound) };
            if !tokens::delete_revoked(&tx, row.id)? {
                return Ok(DeleteOutcome::NotRevoked);
            }
            actor.record(&tx, now, "token.delete", &format!("token:{account}/{}", row.id), &row.name)?;
            tx.commit()?;
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
        let (account, key, actor) = (account.to_owned(), id_or_name.to_owned(), actor.clone());
        self.call(move |c| {
            let tx = immediate(c)?;
            let row = tokens::find(&tx, &account, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("token `{key}` in account `{account}`")))?;
            if row.revoked_at.is_some() {
                return Err(StoreError::Conflict(format!("token `{}` is revoked", row.name)));
            }
            tokens::set_policy(&tx, row.id, policy)?;
            actor.record(
                &tx,
                now,
                "token.update",
                &format!("token:{account}/{}", row.id),
                &policy_detail(policy),
            )?;
            let after = tokens::get(&tx, row.id)?.unwrap_or(row);
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn touch_token(&self, id: Uuid, now: u64) -> Result<Option<TokenRow>, StoreError> {
        self.call(move |c| {
            if let Err(e) = tokens::touch(c, id, now) {
                tracing::warn!(token_id = %id, error = %e, "could not record the token's last use");
            }
            tokens::get(c, id)
        })
        .await
    }

    async fn create_admin_token(&self, row: AdminTokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            if let Some(a) = &row.account_id {
                if accounts::get(&tx, a)?.is_none() {
                    return Err(StoreError::NotFound(format!("account `{a}`")));
                }
            }
            if let Some(r) = row.restriction_id {
                if access::get(&tx, r)?.is_none() {
                    return Err(StoreError::NotFound(format!("restriction `{r}`")));
                }
            }
            admin::insert(&tx, &row)?;
            audit::append(&tx, &audit)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminLookup>, StoreError> {
        let hash = hash.to_owned();
        self.call(move |c| {
            let Some(row) = admin::by_hash(c, &hash)? else { return Ok(None) };
            let restriction = row.restriction_id.map(|id| access::get(c, id)).transpose()?;
            Ok(Some((row, restriction)))
        })
        .await
    }

    async fn touch_admin_token(&self, id: Uuid, now: u64) -> Result<(), StoreError> {
        self.call(move |c| admin::touch(c, id, now)).await
    }

    async fn find_admin_token(&self, id_or_name: &str) -> Result<Option<AdminTokenRow>, StoreError> {
        let key = id_or_name.to_owned();
        self.call(move |c| admin::find(c, &key)).await
    }

    async fn admin_tokens(
        &self,
        account: Option<&str>,
    ) -> Result<(Vec<AdminTokenRow>, HashMap<Uuid, String>), StoreError> {
        let account = account.map(str::to_owned);
        self.call(move |c| Ok((admin::list(c, account.as_deref())?, access::names(c)?))).await
    }

    async fn revoke_admin_token(&self, id: Uuid, now: u64, actor: &Actor) -> Result<AdminRevoke, StoreError> {
        let actor = actor.clone();
        self.call(move |c| {
            let tx = immediate(c)?;
            let Some(row) = admin::find(&tx, &id.to_string())? else { return Ok(AdminRevoke::NotFound) };
            if admin::is_operator_admin(&row, now) && admin::operator_admins(&tx, now)? <= 1 {
                return Ok(AdminRevoke::LastOperator(row));
            }
            let newly = admin::revoke(&tx, row.id, now)?;
            if newly {
                actor.record(
                    &tx,
                    now,
                    "admin_token.revoke",
                    &format!("admin_token:{}", row.id),
                    &row.name,
                )?;
            }
            let after = admin::find(&tx, &id.to_string())?.unwrap_or(row);
            tx.commit()?;
            Ok(AdminRevoke::Revoked { row: after, newly })
        })
        .await
    }

    async fn create_restriction(&self, row: RestrictionRow, audit: AuditEntry) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            access::insert(&tx, &row)?;
            audit::append(&tx, &audit)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn find_restriction(&self, id_or_name: &str) -> Result<Option<RestrictionRow>, StoreError> {
        let key = id_or_name.to_owned();
        self.call(move |c| access::find(c, &key)).await
    }

    async fn restrictions(&self) -> Result<Vec<RestrictionRow>, StoreError> {
        self.call(|c| access::list(c)).await
    }

    async fn delete_restriction(
        &self,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<RestrictionDelete, StoreError> {
        let (key, actor) = (id_or_name.to_owned(), actor.clone());
        self.call(move |c| {
            let tx = immediate(c)?;
            let Some(row) = access::find(&tx, &key)? else { return Ok(RestrictionDelete::NotFound) };
            let users = admin::using_restriction(&tx, row.id)?;
            if users > 0 {
                return Ok(RestrictionDelete::InUse { row, users });
            }
            access::delete(&tx, row.id)?;
            actor.record(&tx, now, "restriction.delete", &format!("restriction:{}", row.id), &row.name)?;
            tx.commit()?;
            Ok(RestrictionDelete::Deleted(row))
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.call(move |c| audit::append(c, &entry)).await
    }

    async fn audit(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |c| audit::list(c, limit, before)).await
    }

    async fn begin_rotation(&self, plan: RotationPlan) -> Result<bool, StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            let old = &plan.old;
            // The token as the plan read it: still not revoked, not rotating, same name.
            let n = tx.execute(
                "UPDATE tokens SET name = ?2, rotation_id = ?3
                 WHERE id = ?1 AND account_id = ?4 AND name = ?5 AND revoked_at IS NULL AND rotation_id IS NULL",
                params![
                    old.id.to_string(),
                    plan.old_new_name,
                    plan.rotation.id.to_string(),
                    old.account_id,
                    old.name
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            tokens::insert(&tx, &plan.successor)?;
            rotations::insert(&tx, &plan.rotation)?;
            rotations::set_sealed_successor(&tx, plan.rotation.id, &plan.sealed_successor)?;
            audit::append(&tx, &plan.audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn rotation(&self, id: Uuid) -> Result<Option<RotationRow>, StoreError> {
        self.call(move |c| rotations::get(c, id)).await
    }

    async fn rotations(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(RotationRow, Vec<RotationDelegate>)>, StoreError> {
        let account = account.map(str::to_owned);
        self.call(move |c| {
            let rows = match &account {
                None => rotations::list_recent(c, limit)?,
                Some(a) => access::rotations_of(c, a, limit)?,
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let ds = rotations::delegates(c, r.id)?;
                out.push((r, ds));
            }
            Ok(out)
        })
        .await
    }

    async fn unfinished_rotations(&self, limit: u32) -> Result<Vec<Unfinished>, StoreError> {
        self.call(move |c| {
            let rows = rotations::list_unfinished(c, limit)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let sealed = rotations::sealed_successor(c, r.id)?;
                out.push((r, sealed));
            }
            Ok(out)
        })
        .await
    }

    async fn rotation_delegates(&self, rotation: Uuid) -> Result<Vec<RotationDelegate>, StoreError> {
        self.call(move |c| rotations::delegates(c, rotation)).await
    }

    async fn claim_rotate_push(&self, rotation: Uuid, d: RotationDelegate) -> Result<bool, StoreError> {
        self.call(move |c| rotations::track_and_claim_push(c, rotation, &d)).await
    }

    async fn add_rotation_delegate(&self, rotation: Uuid, d: RotationDelegate) -> Result<(), StoreError> {
        self.call(move |c| rotations::add_delegate(c, rotation, &d)).await
    }

    async fn rotation_ack(
        &self,
        rotation: Uuid,
        instance: Uuid,
        outcome: AckOutcome,
        detail: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            match rotations::get(&tx, rotation)? {
                Some(r) if r.finished_at.is_none() => {}
                _ => return Ok(false),
            }
            let matched = rotations::ack(&tx, rotation, instance, outcome, &detail, now)?;
            tx.commit()?;
            Ok(matched)
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
        let name = name.to_owned();
        self.call(move |c| Ok(rotations::reconnected(c, rotation, instance, &name, now)? as u64)).await
    }

    async fn finish_rotation(
        &self,
        rotation: Uuid,
        old_token: Uuid,
        now: u64,
        outcome: RotationOutcome,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let actor = actor.clone();
        self.call(move |c| {
            let tx = immediate(c)?;
            let finished = rotations::finish(&tx, rotation, now, outcome)?;
            if let Some(old) = tokens::get(&tx, old_token)? {
                if tokens::revoke(&tx, old_token, now, &actor.who)? {
                    actor.record(
                        &tx,
                        now,
                        "token.revoke",
                        &format!("token:{}/{old_token}", old.account_id),
                        outcome.as_str(),
                    )?;
                }
                tokens::set_rotation(&tx, old_token, &old.name, None)?;
            }
            if finished {
                actor.record(
                    &tx,
                    now,
                    "rotation.finish",
                    &format!("rotation:{rotation}"),
                    outcome.as_str(),
                )?;
            }
            tx.commit()?;
            // The sealed successor is gone from the tables (secure_delete zeroes its pages);
            // fold the WAL, which still holds the page images, and truncate it.
            checkpoint_truncate(c);
            Ok(finished)
        })
        .await
    }

    async fn tokens_due_for_rotation(&self, now: u64, limit: u32) -> Result<Vec<TokenRow>, StoreError> {
        self.call(move |c| tokens::due_for_rotation(c, now, limit)).await
    }

    async fn rotation_progress(&self, now: u64) -> Result<Progress, StoreError> {
        self.call(move |c| rotations::progress(c, now)).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.call(|c| {
            // One read transaction: a consistent picture even while a manager writes.
            let tx = c.transaction()?;
            if !rotations::list_unfinished(&tx, 1)?.is_empty() {
                return Err(StoreError::Conflict(
                    "a rotation is running; copy the store after it has finished".into(),
                ));
            }
            let meta = {
                let mut stmt = tx.prepare("SELECT key, value FROM meta ORDER BY key")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let accounts = accounts::list(&tx)?;
            let mut all_tokens = Vec::new();
            for a in &accounts {
                all_tokens.extend(tokens::list(&tx, &a.id)?);
            }
            let mut rots = Vec::new();
            for r in rotations::list_recent(&tx, SNAPSHOT_LIMIT)? {
                let ds = rotations::delegates(&tx, r.id)?;
                rots.push((r, ds));
            }
            let mut log = audit::list(&tx, SNAPSHOT_LIMIT, None)?;
            log.reverse();
            Ok(Snapshot {
                meta,
                accounts,
                tokens: all_tokens,
                restrictions: access::list(&tx)?,
                admin_tokens: admin::list(&tx, None)?,
                rotations: rots,
                audit: log,
            })
        })
        .await
    }

    async fn restore(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = immediate(c)?;
            if !is_empty(&tx)? {
                return Err(StoreError::Conflict("the target store is not empty".into()));
            }
            for (k, v) in &snapshot.meta {
                meta_set(&tx, k, v)?;
            }
            for a in &snapshot.accounts {
                accounts::insert(&tx, a)?;
            }
            // A rotation's old token is renamed `name~id`, so names stay unique in any order.
            for t in &snapshot.tokens {
                tokens::insert(&tx, t)?;
            }
            for r in &snapshot.restrictions {
                access::insert(&tx, r)?;
            }
            for t in &snapshot.admin_tokens {
                admin::insert(&tx, t)?;
            }
            for (r, ds) in &snapshot.rotations {
                rotations::insert(&tx, r)?;
                for d in ds {
                    rotations::add_delegate(&tx, r.id, d)?;
                }
            }
            for e in &snapshot.audit {
                tx.execute(
                    "INSERT INTO audit(id, at, actor, action, target, source_ip, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![e.id, i64_of(e.at), e.actor, e.action, e.target, e.source_ip, e.detail],
                )?;
            }
            Ok(tx.commit()?)
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.call(|c| is_empty(c)).await
    }
}

/// Whether the database holds no account, token, admin token, restriction or audit entry.
fn is_empty(c: &Connection) -> Result<bool, StoreError> {
    let n: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM accounts) + (SELECT COUNT(*) FROM tokens)
              + (SELECT COUNT(*) FROM admin_tokens) + (SELECT COUNT(*) FROM restrictions)
              + (SELECT COUNT(*) FROM audit)",
        [],
        |r| r.get(0),
    )?;
    Ok(n == 0)
}
