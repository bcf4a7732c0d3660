//! The store's domain interface: every read and write the manager makes, each one operation
//! that commits as a whole (a change and its audit entry together) or changes nothing. Two
//! backends implement it: SQLite ([`super::sqlite::SqliteStore`]) and PostgreSQL
//! ([`super::postgres::PgStore`]); [`super::Store`] dispatches to the configured one.
//!
//! Rules every backend keeps (the conformance suite checks them on both):
//! - a method that returns `Ok` has committed durably;
//! - uniqueness (account id, token name per account, admin token and restriction names) holds
//!   under concurrent writers from several processes: the loser gets [`StoreError::Conflict`];
//! - "not found" of the thing a method acts on is [`StoreError::NotFound`] unless the method
//!   returns an `Option` or an outcome enum for it;
//! - no error carries a secret (sealed keys, hashes, successor tokens, the database password).
use std::collections::HashMap;
use std::future::Future;

use uuid::Uuid;

use super::access::RestrictionRow;
use super::accounts::Account;
use super::admin::AdminTokenRow;
use super::audit::{Actor, AuditEntry};
use super::rotations::{AckOutcome, Progress, RotationDelegate, RotationOutcome, RotationRow};
use super::tokens::{RotationPolicy, TokenRow};
use super::StoreError;

/// An admin token found by hash and its restriction when it names one (`Some(None)`: it
/// names one that no longer exists).
pub type AdminLookup = (AdminTokenRow, Option<Option<RestrictionRow>>);

/// An unfinished rotation and its sealed successor, if stored.
pub type Unfinished = (RotationRow, Option<Vec<u8>>);

/// What [`StoreOps::delete_revoked_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // rare, short-lived
pub enum DeleteOutcome {
    /// Deleted (with an audit entry); the row as it was.
    Deleted(TokenRow),
    /// No such token in the account.
    NotFound,
    /// The token is not revoked; nothing changed.
    NotRevoked,
}

/// What [`StoreOps::revoke_admin_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRevoke {
    /// Revoked now (`newly`) or already before; the row after the change.
    Revoked {
        /// The row as stored after the call.
        row: AdminTokenRow,
        /// Whether this call revoked it (an audit entry was written).
        newly: bool,
    },
    /// Refused: it is the last active operator admin token ([`super::admin::is_operator_admin`]).
    LastOperator(AdminTokenRow),
    /// No such admin token.
    NotFound,
}

/// What [`StoreOps::delete_restriction`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestrictionDelete {
    /// Deleted (with an audit entry); its name.
    Deleted(RestrictionRow),
    /// Refused: admin tokens that are not revoked use it.
    InUse {
        /// The restriction.
        row: RestrictionRow,
        /// How many admin tokens use it.
        users: u64,
    },
    /// No such restriction.
    NotFound,
}

/// The writes that start a rotation, made in one transaction by
/// [`StoreOps::begin_rotation`].
#[derive(Debug, Clone)]
pub struct RotationPlan {
    /// The token being replaced, as read when the plan was made (its id, name and account).
    pub old: TokenRow,
    /// The name the old token takes (its own name goes to the successor).
    pub old_new_name: String,
    /// The successor's row (same account, the old token's name).
    pub successor: TokenRow,
    /// The rotation (unfinished).
    pub rotation: RotationRow,
    /// The successor token sealed under the master key for the grace window.
    pub sealed_successor: Vec<u8>,
    /// The audit entry (`token.rotate`).
    pub audit: AuditEntry,
}

/// Everything an installation holds, for `store copy` (and the conformance suite).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Meta values (`initialised_at`, …), by key.
    pub meta: Vec<(String, String)>,
    /// Accounts.
    pub accounts: Vec<Account>,
    /// Delegate tokens, sealed keys included.
    pub tokens: Vec<TokenRow>,
    /// Endpoint restrictions.
    pub restrictions: Vec<RestrictionRow>,
    /// Admin tokens (hashes only).
    pub admin_tokens: Vec<AdminTokenRow>,
    /// Finished rotations and their delegates' progress.
    pub rotations: Vec<(RotationRow, Vec<RotationDelegate>)>,
    /// The audit log, oldest first, ids kept.
    pub audit: Vec<AuditEntry>,
}

impl Snapshot {
    /// Row counts by table, for `store copy` to print and verify.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("meta", self.meta.len()),
            ("accounts", self.accounts.len()),
            ("tokens", self.tokens.len()),
            ("restrictions", self.restrictions.len()),
            ("admin_tokens", self.admin_tokens.len()),
            ("rotations", self.rotations.len()),
            ("rotation_delegates", self.rotations.iter().map(|(_, d)| d.len()).sum()),
            ("audit", self.audit.len()),
        ]
    }
}

/// The manager's persistence, one domain operation per method.
pub trait StoreOps: Send + Sync {
    // ---- meta -------------------------------------------------------------------------------

    /// A meta value.
    fn meta_get(&self, key: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Sets meta values and appends audit entries, in one transaction.
    fn meta_set(
        &self,
        values: Vec<(String, String)>,
        audit: Vec<AuditEntry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    // ---- accounts -----------------------------------------------------------------------------

    /// Creates an account with its default token and the audit entries. A taken account id is
    /// a conflict.
    fn create_account(
        &self,
        account: Account,
        default_token: TokenRow,
        audit: Vec<AuditEntry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One account.
    fn account(&self, id: &str) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Every account, by id.
    fn accounts(&self) -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;

    // ---- delegate tokens ---------------------------------------------------------------------

    /// Creates a token in an existing account (NotFound when the account is missing; a taken
    /// name in the account is a conflict), with its audit entry.
    fn create_token(
        &self,
        row: TokenRow,
        audit: AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A token by id, in any account.
    fn token(&self, id: Uuid) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;

    /// A token of `account` by id or by name (an id matches first).
    fn find_token(
        &self,
        account: &str,
        id_or_name: &str,
    ) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;

    /// The tokens of an account by creation time then name; `None` when the account is missing.
    fn tokens(&self, account: &str)
        -> impl Future<Output = Result<Option<Vec<TokenRow>>, StoreError>> + Send;

    /// Revokes a token of `account` (by id or name), by `actor`, with an audit entry
    /// `token.revoke` on `token:<account>/<id>`, detail its name (written only when this call
    /// revoked it). Returns the row after the change and whether this call revoked it.
    /// NotFound when there is no such token.
    fn revoke_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> impl Future<Output = Result<(TokenRow, bool), StoreError>> + Send;

    /// Deletes a revoked token (by id or name) with an audit entry `token.delete` (target and
    /// detail as for [`StoreOps::revoke_token`]).
    fn delete_revoked_token(
        &self,
        account: &str,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> impl Future<Output = Result<DeleteOutcome, StoreError>> + Send;

    /// Sets (or, with `None`, clears) the rotation policy of a token of `account` (by id or
    /// name) that is not revoked, with an audit entry `token.update` on `token:<account>/<id>`
    /// by `actor`. Returns the row after the change; NotFound when there is no such token,
    /// Conflict when it is revoked.
    fn set_token_policy(
        &self,
        account: &str,
        id_or_name: &str,
        policy: Option<RotationPolicy>,
        now: u64,
        actor: &Actor,
    ) -> impl Future<Output = Result<TokenRow, StoreError>> + Send;

    /// Records a successful handshake (`last_used_at = now`; a failure to record is logged, not
    /// returned) and reads the token again.
    fn touch_token(
        &self,
        id: Uuid,
        now: u64,
    ) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;

    // ---- admin tokens ------------------------------------------------------------------------

    /// Creates an admin token with its audit entry. A taken name is a conflict; an account or
    /// restriction the row names that does not exist (any more) is NotFound.
    fn create_admin_token(
        &self,
        row: AdminTokenRow,
        audit: AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// By hash (authentication), with its restriction when it names one (`Some(None)`: it
    /// names one that no longer exists). Changes nothing.
    fn admin_token_by_hash(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<AdminLookup>, StoreError>> + Send;

    /// Records a successful authentication.
    fn touch_admin_token(&self, id: Uuid, now: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// By id or name.
    fn find_admin_token(
        &self,
        id_or_name: &str,
    ) -> impl Future<Output = Result<Option<AdminTokenRow>, StoreError>> + Send;

    /// Every admin token by creation time then name (only those bound to `account` when
    /// given), and every restriction's name by id.
    fn admin_tokens(
        &self,
        account: Option<&str>,
    ) -> impl Future<Output = Result<(Vec<AdminTokenRow>, HashMap<Uuid, String>), StoreError>> + Send;

    /// Revokes admin token `id` with an audit entry `admin_token.revoke` on
    /// `admin_token:<id>`, detail its name (only when this call revoked it), unless it is the
    /// last active operator admin token at `now`: that check and the revoke are one
    /// transaction, so two concurrent revokes of the last two never both succeed.
    fn revoke_admin_token(
        &self,
        id: Uuid,
        now: u64,
        actor: &Actor,
    ) -> impl Future<Output = Result<AdminRevoke, StoreError>> + Send;

    // ---- endpoint restrictions ---------------------------------------------------------------

    /// Creates a restriction with its audit entry; a taken name is a conflict.
    fn create_restriction(
        &self,
        row: RestrictionRow,
        audit: AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// By id or name.
    fn find_restriction(
        &self,
        id_or_name: &str,
    ) -> impl Future<Output = Result<Option<RestrictionRow>, StoreError>> + Send;

    /// Every restriction, by name.
    fn restrictions(&self) -> impl Future<Output = Result<Vec<RestrictionRow>, StoreError>> + Send;

    /// Deletes a restriction (by id or name) unless an admin token that is not revoked uses it,
    /// with an audit entry `restriction.delete` on `restriction:<id>`, detail its name.
    fn delete_restriction(
        &self,
        id_or_name: &str,
        now: u64,
        actor: &Actor,
    ) -> impl Future<Output = Result<RestrictionDelete, StoreError>> + Send;

    // ---- audit ---------------------------------------------------------------------------------

    /// Appends one audit entry (its `id` is ignored).
    fn append_audit(&self, entry: AuditEntry) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest `limit` entries, newest first, only those with an id below `before` if given.
    fn audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    // ---- rotations -----------------------------------------------------------------------------

    /// Starts a rotation in one transaction: the old token is renamed and marked with the
    /// rotation, the successor inserted, the rotation inserted with its sealed successor, the
    /// audit entry appended. Returns `false`, changing nothing, when the old token changed since
    /// the plan was read (revoked, already rotating, renamed or gone), so the caller reads it
    /// again and says why.
    fn begin_rotation(&self, plan: RotationPlan) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// One rotation.
    fn rotation(&self, id: Uuid) -> impl Future<Output = Result<Option<RotationRow>, StoreError>> + Send;

    /// The newest `limit` rotations (of `account` only, when given), newest first, each with
    /// its delegates.
    fn rotations(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(RotationRow, Vec<RotationDelegate>)>, StoreError>> + Send;

    /// Unfinished rotations, newest first, each with its sealed successor if stored.
    fn unfinished_rotations(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Unfinished>, StoreError>> + Send;

    /// The delegates of a rotation, by name then instance.
    fn rotation_delegates(
        &self,
        rotation: Uuid,
    ) -> impl Future<Output = Result<Vec<RotationDelegate>, StoreError>> + Send;

    /// Tracks `d` (as `pending`, unless its instance is tracked already) and claims sending
    /// `rotate` to its session: true when that session was not sent this rotation yet (now
    /// recorded as sent), false when it was. One transaction.
    fn claim_rotate_push(
        &self,
        rotation: Uuid,
        d: RotationDelegate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Tracks `d` (as `pending`) unless its instance is tracked already.
    fn add_rotation_delegate(
        &self,
        rotation: Uuid,
        d: RotationDelegate,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records an ack of the delegate `instance` in an unfinished rotation (`acked`; a
    /// `reconnected` delegate stays so). Whether a tracked delegate matched.
    fn rotation_ack(
        &self,
        rotation: Uuid,
        instance: Uuid,
        outcome: AckOutcome,
        detail: String,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks the delegates of `instance` or `name` reconnected on the successor. How many
    /// changed.
    fn rotation_reconnected(
        &self,
        rotation: Uuid,
        instance: Uuid,
        name: &str,
        now: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Finishes a rotation in one transaction: marks it finished with `outcome`, wipes its
    /// sealed successor (from free space and logs too, where the backend can), revokes the old
    /// token if it still exists (by `actor`, with an audit entry `token.revoke` on
    /// `token:<account>/<old>`, detail the outcome's word, when this call revoked it) and clears
    /// the old token's rotation mark; when this call finished it, also an audit entry
    /// `rotation.finish` on `rotation:<id>`, detail the outcome's word. Returns whether this
    /// call finished it.
    fn finish_rotation(
        &self,
        rotation: Uuid,
        old_token: Uuid,
        now: u64,
        outcome: RotationOutcome,
        actor: &Actor,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Tokens with a rotation policy whose next rotation is due at `now`: not revoked, not
    /// expired, not rotating, `created_at + rotate_every <= now`; oldest due first, at most
    /// `limit`.
    fn tokens_due_for_rotation(
        &self,
        now: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TokenRow>, StoreError>> + Send;

    /// The running rotations' progress at `now`, for the metrics.
    fn rotation_progress(&self, now: u64) -> impl Future<Output = Result<Progress, StoreError>> + Send;

    // ---- whole-store -----------------------------------------------------------------------------

    /// Everything but unfinished rotations; fails with a conflict while a rotation is running
    /// (its sealed successor must not leave the installation).
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Loads a snapshot into an empty store in one transaction (conflict when not empty).
    fn restore(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store holds no account, token, admin token or audit entry.
    fn is_empty(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
