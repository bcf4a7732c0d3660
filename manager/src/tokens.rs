//! Token operations: create accounts, delegate tokens and admin tokens (values returned once,
//! never stored), revoke (committed before anyone is told, then the live sessions are kicked).
use ipnet::IpNet;
use tether_protocol::message::RevokedReason;
use tether_protocol::Token;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::clock::now_unix;
use crate::keys::{self, MasterKey};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::accounts::Account;
use crate::store::admin::AdminTokenRow;
use crate::store::audit::Actor;
use crate::store::tokens::{RotationPolicy, TokenRow};
use crate::store::{DeleteOutcome, Store, StoreError, StoreOps};

/// Name of the token every new account gets.
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// What a new delegate token needs besides its name.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// Expiry, unix seconds.
    pub expires_at: Option<u64>,
    /// Allowed source networks.
    pub allowed_cidrs: Vec<IpNet>,
    /// Rotated by the manager itself, when set.
    pub policy: Option<RotationPolicy>,
}

/// Makes a token and its row (key sealed under `master`).
pub fn new_token(
    master: &MasterKey,
    account: &str,
    name: &str,
    spec: &TokenSpec,
    actor: &Actor,
    now: u64,
) -> (TokenRow, Token) {
    let token = keys::new_delegate_token();
    let row = TokenRow {
        id: token.id(),
        account_id: account.to_owned(),
        name: name.to_owned(),
        sealed_key: master.seal(token.id(), &token.key()),
        created_at: now,
        created_by: actor.who.clone(),
        expires_at: spec.expires_at,
        allowed_cidrs: spec.allowed_cidrs.clone(),
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotation_id: None,
        policy: spec.policy,
    };
    (row, token)
}

/// Creates an account and its default token in one transaction.
pub async fn create_account(
    store: &Store,
    master: &MasterKey,
    id: &str,
    name: &str,
    actor: &Actor,
    now: u64,
) -> Result<(Account, TokenRow, Token), StoreError> {
    let account =
        Account { id: id.to_owned(), name: name.to_owned(), created_at: now, created_by: actor.who.clone() };
    let (row, token) = new_token(master, id, DEFAULT_TOKEN_NAME, &TokenSpec::default(), actor, now);
    let audit = vec![
        actor.entry(now, "account.create", &format!("account:{id}"), ""),
        actor.entry(now, "token.create", &format!("token:{id}/{}", row.id), DEFAULT_TOKEN_NAME),
    ];
    store.create_account(account.clone(), row.clone(), audit).await?;
    Ok((account, row, token))
}

/// Creates a named token in an existing account.
pub async fn create_token(
    store: &Store,
    master: &MasterKey,
    account: &str,
    name: &str,
    spec: &TokenSpec,
    actor: &Actor,
    now: u64,
) -> Result<(TokenRow, Token), StoreError> {
    let (row, token) = new_token(master, account, name, spec, actor, now);
    let audit = actor.entry(now, "token.create", &format!("token:{account}/{}", row.id), name);
    store.create_token(row.clone(), audit).await?;
    Ok((row, token))
}

/// A new admin token bound to no account and with no restriction: its row (only the hash of
/// the value) and the value, to be shown once.
pub fn new_admin_row(
    name: &str,
    scopes: Vec<String>,
    expires_at: Option<u64>,
    allowed_cidrs: Vec<IpNet>,
    actor: &Actor,
    now: u64,
) -> (AdminTokenRow, Zeroizing<String>) {
    let value = keys::new_admin_token();
    let row = AdminTokenRow {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        hash: keys::admin_token_hash(&value),
        scopes,
        created_at: now,
        created_by: actor.who.clone(),
        expires_at,
        allowed_cidrs,
        revoked_at: None,
        last_used_at: None,
        account_id: None,
        restriction_id: None,
    };
    (row, value)
}

/// Creates an admin token; the value is returned once and only its hash is kept.
pub async fn create_admin_token(
    store: &Store,
    name: &str,
    scopes: Vec<String>,
    expires_at: Option<u64>,
    allowed_cidrs: Vec<IpNet>,
    actor: &Actor,
    now: u64,
) -> Result<(AdminTokenRow, Zeroizing<String>), StoreError> {
    let (row, value) = new_admin_row(name, scopes, expires_at, allowed_cidrs, actor, now);
    let audit = actor.entry(
        now,
        "admin_token.create",
        &format!("admin_token:{}", row.id),
        &format!("{name} scopes={}", row.scopes.join(",")),
    );
    store.create_admin_token(row.clone(), audit).await?;
    Ok((row, value))
}

/// Revokes a token of `account` (by id or name): committed, then every live session on it is
/// sent a signed `revoked` and closed. Returns the row and how many sessions were told.
/// Revoking a revoked token changes nothing.
pub async fn revoke(
    store: &Store,
    registry: &Registry,
    metrics: &Metrics,
    account: &str,
    token_ref: &str,
    actor: Actor,
) -> Result<(TokenRow, usize), StoreError> {
    let (row, newly) = store.revoke_token(account, token_ref, now_unix(), &actor).await?;
    if newly {
        metrics.revocations.inc();
    }
    let fanout = std::time::Instant::now();
    let kicked = registry.kick(row.id, RevokedReason::Revoked);
    metrics.revoke_fanout.observe(fanout.elapsed().as_secs_f64());
    // A revocation is logged once: revoking a revoked token again only closes stragglers.
    match newly {
        true => {
            tracing::info!(token_id = %row.id, account = %row.account_id, sessions = kicked, "token revoked")
        }
        false => tracing::debug!(token_id = %row.id, account = %row.account_id, sessions = kicked,
            "token already revoked; nothing changed"),
    }
    Ok((row, kicked))
}

/// Why a token cannot be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No such token in the account.
    #[error("token `{token}` in account `{account}` not found")]
    NotFound {
        /// The account.
        account: String,
        /// The token id or name asked for.
        token: String,
    },
    /// Only a revoked token can be deleted.
    #[error("only a revoked token can be deleted; revoke it first")]
    NotRevoked,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deletes a revoked token of `account`.
pub async fn delete(
    store: &Store,
    account: &str,
    token_ref: &str,
    actor: Actor,
) -> Result<TokenRow, DeleteError> {
    match store.delete_revoked_token(account, token_ref, now_unix(), &actor).await? {
        DeleteOutcome::Deleted(row) => {
            tracing::info!(token_id = %row.id, account = %row.account_id, "token deleted");
            Ok(row)
        }
        DeleteOutcome::NotFound => {
            Err(DeleteError::NotFound { account: account.to_owned(), token: token_ref.to_owned() })
        }
        DeleteOutcome::NotRevoked => Err(DeleteError::NotRevoked),
    }
}
