//! [`Store`] dispatches each [`StoreOps`] operation to its backend; those that write token
//! rows empty the handshake's token cache ([`super::token_cache`]) on their way back.
use std::collections::HashMap;

use uuid::Uuid;

use super::access::RestrictionRow;
use super::accounts::Account;
use super::admin::AdminTokenRow;
use super::audit::{Actor, AuditEntry};
use super::ops::{
    AdminLookup, AdminRevoke, DeleteOutcome, RestrictionDelete, RotationPlan, Snapshot, StoreOps, Unfinished,
};
use super::rotations::{AckOutcome, Progress, RotationDelegate, RotationOutcome, RotationRow};
use super::tokens::{RotationPolicy, TokenRow};
use super::{Backend, Store, StoreError};

/// Calls `$method` on whichever backend `$self` holds.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &*$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

/// [`dispatch!`] for an operation that writes token rows: the handshake's token cache is
/// emptied when it returns, whatever the outcome (an error may come after the commit), and
/// before the caller tells any live session.
macro_rules! dispatch_token_write {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let result = dispatch!($self.$method($($arg),*));
        $self.token_cache().invalidate();
        result
    }};
}

impl StoreOps for Store {
    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self.meta_get(key))
    }

    async fn meta_claim(&self, key: &str, value: &str) -> Result<String, StoreError> {
        dispatch!(self.meta_claim(key, value))
    }

    async fn meta_set(
        &self,
        values: Vec<(String, String)>,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        dispatch!(self.meta_set(values, audit))
    }

    async fn create_account(
        &self,
        account: Account,
        default_token: TokenRow,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        dispatch_token_write!(self.create_account(account, default_token, audit))
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        dispatch!(self.account(id))
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        dispatch!(self.accounts())
    }

    async fn create_token(&self, row: TokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        dispatch_token_write!(self.create_token(row, audit))
    }

    async fn token(&self, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
        dispatch!(self.token(id))
    }

    async fn find_token(&self, account: &str, id_or_name: &str) -> Result<Option<TokenRow>, StoreError> {
        dispatch!(self.find_token(account, id_or_name))
    }

    async fn tokens(&self, account: &str) -> Result<Option<Vec<TokenRow>>, StoreError> {
        dispatch!(self.tokens(account))
    }

    async fn revoke_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<(TokenRow, bool), StoreError> {
        dispatch_token_write!(self.revoke_token(account, id_or_name, now, actor))
    }

    async fn delete_revoked_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<DeleteOutcome, StoreError> {
        dispatch_token_write!(self.delete_revoked_token(account, id_or_name, now, actor))
    }

    async fn set_token_policy(
        &self,
        account: &str,
        id_or_name: &str,
        policy: Option<RotationPolicy>,
        now: u64,
        actor: &Actor,
    ) -> Result<TokenRow, StoreError> {
        dispatch_token_write!(self.set_token_policy(account, id_or_name, policy, now, actor))
    }

    async fn touch_token(&self, id: Uuid, now: u64) -> Result<Option<TokenRow>, StoreError> {
        dispatch!(self.touch_token(id, now))
    }

    async fn create_admin_token(&self, row: AdminTokenRow, audit: AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.create_admin_token(row, audit))
    }

    async fn admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminLookup>, StoreError> {
        dispatch!(self.admin_token_by_hash(hash))
    }

    async fn touch_admin_token(&self, id: Uuid, now: u64) -> Result<(), StoreError> {
        dispatch!(self.touch_admin_token(id, now))
    }

    async fn find_admin_token(&self, id_or_name: &str) -> Result<Option<AdminTokenRow>, StoreError> {
        dispatch!(self.find_admin_token(id_or_name))
    }

    async fn admin_tokens(
        &self,
        account: Option<&str>,
    ) -> Result<(Vec<AdminTokenRow>, HashMap<Uuid, String>), StoreError> {
        dispatch!(self.admin_tokens(account))
    }

    async fn revoke_admin_token(&self, id: Uuid, now: u64, actor: &Actor) -> Result<AdminRevoke, StoreError> {
        dispatch!(self.revoke_admin_token(id, now, actor))
    }

    async fn create_restriction(&self, row: RestrictionRow, audit: AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.create_restriction(row, audit))
    }

    async fn find_restriction(&self, id_or_name: &str) -> Result<Option<RestrictionRow>, StoreError> {
        dispatch!(self.find_restriction(id_or_name))
    }

    async fn restrictions(&self) -> Result<Vec<RestrictionRow>, StoreError> {
        dispatch!(self.restrictions())
    }

    async fn delete_restriction(
        &self,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> Result<RestrictionDelete, StoreError> {
        dispatch!(self.delete_restriction(id_or_name, now, actor))
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.append_audit(entry))
    }

    async fn audit(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self.audit(limit, before))
    }

    async fn begin_rotation(&self, plan: RotationPlan) -> Result<bool, StoreError> {
        dispatch_token_write!(self.begin_rotation(plan))
    }

    async fn rotation(&self, id: Uuid) -> Result<Option<RotationRow>, StoreError> {
        dispatch!(self.rotation(id))
    }

    async fn rotations(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(RotationRow, Vec<RotationDelegate>)>, StoreError> {
        dispatch!(self.rotations(account, limit))
    }

    async fn unfinished_rotations(&self, limit: u32) -> Result<Vec<Unfinished>, StoreError> {
        dispatch!(self.unfinished_rotations(limit))
    }

    async fn rotation_delegates(&self, rotation: Uuid) -> Result<Vec<RotationDelegate>, StoreError> {
        dispatch!(self.rotation_delegates(rotation))
    }

    async fn claim_rotate_push(&self, rotation: Uuid, d: RotationDelegate) -> Result<bool, StoreError> {
        dispatch!(self.claim_rotate_push(rotation, d))
    }

    async fn add_rotation_delegate(&self, rotation: Uuid, d: RotationDelegate) -> Result<(), StoreError> {
        dispatch!(self.add_rotation_delegate(rotation, d))
    }

    async fn rotation_ack(
        &self,
        rotation: Uuid,
        instance: Uuid,
        outcome: AckOutcome,
        detail: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self.rotation_ack(rotation, instance, outcome, detail, now))
    }

    async fn rotation_reconnected(
        &self,
        rotation: Uuid,
        instance: Uuid,
        name: &str,
        now: u64,
    ) -> Result<u64, StoreError> {
        dispatch!(self.rotation_reconnected(rotation, instance, name, now))
    }

    async fn finish_rotation(
        &self,
        rotation: Uuid,
        old_token: Uuid,
        now: u64,
        outcome: RotationOutcome,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        dispatch_token_write!(self.finish_rotation(rotation, old_token, now, outcome, actor))
    }

    async fn tokens_due_for_rotation(&self, now: u64, limit: u32) -> Result<Vec<TokenRow>, StoreError> {
        dispatch!(self.tokens_due_for_rotation(now, limit))
    }

    async fn rotation_progress(&self, now: u64) -> Result<Progress, StoreError> {
        dispatch!(self.rotation_progress(now))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        dispatch!(self.snapshot())
    }

    async fn restore(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        dispatch_token_write!(self.restore(snapshot))
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        dispatch!(self.is_empty())
    }
}
