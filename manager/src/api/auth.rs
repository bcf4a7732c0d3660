//! Admin bearer authentication: `Authorization: Bearer tat_…`, looked up by SHA-256, checked
//! for revocation, expiry and allowed CIDRs, failures counted per source address with a lockout
//! ([`super::lockout`]); then the token's endpoint restriction; then, in each handler, its
//! scope and account-binding checks.
//!
//! Account binding: a bound token acting on another account's objects (a route under
//! `/api/v1/accounts/{other}/…`, a rotation, a delegate session or an admin token of another
//! account) is answered **404**, exactly as if the object did not exist, so a bound token learns
//! nothing about other accounts. What a bound token may never do (create accounts, read the
//! cluster-wide audit log, manage restrictions) is answered **403**.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use ipnet::IpNet;
use uuid::Uuid;

use super::access::{Power, Rule};
use super::error::AppError;
use super::lockout::{AdminLockout, Attempt, Refusal};
use crate::clock::now_unix;
use crate::keys::{admin_token_hash, ADMIN_PREFIX};
use crate::state::AppState;
use crate::store::access::RestrictionRow;
use crate::store::admin::AdminTokenRow;
use crate::store::audit::Actor;
use crate::store::{Store, StoreOps};
use crate::validate::ip_allowed;

/// Every scope an admin token may hold. `admin` implies all others.
pub const SCOPES: &[&str] = &["tokens:read", "tokens:write", "delegates:read", "delegates:write", "admin"];

/// A scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read accounts, tokens, rotations.
    TokensRead,
    /// Create, revoke, rotate, delete tokens.
    TokensWrite,
    /// List delegates.
    DelegatesRead,
    /// Disconnect and ping delegates.
    DelegatesWrite,
    /// Everything, including accounts, admin tokens and the audit log.
    Admin,
}

impl Scope {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokensRead => "tokens:read",
            Self::TokensWrite => "tokens:write",
            Self::DelegatesRead => "delegates:read",
            Self::DelegatesWrite => "delegates:write",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Admin token id.
    pub id: Uuid,
    /// Admin token name.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Source address.
    pub ip: Option<IpAddr>,
    /// The one account this token may act on; `None`: all.
    pub account: Option<String>,
    /// Its endpoint restriction.
    pub restriction: Option<Uuid>,
    /// Its expiry.
    pub expires_at: Option<u64>,
    /// Where it may be used from (empty: anywhere).
    pub allowed_cidrs: Vec<IpNet>,
}

impl Caller {
    /// Refuses unless the caller holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.iter().any(|s| s == scope.as_str() || s == "admin") {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("this admin token lacks the `{}` scope", scope.as_str())))
        }
    }

    /// Whether the caller may see `account`'s objects.
    pub fn sees(&self, account: &str) -> bool {
        self.account.as_deref().is_none_or(|own| own == account)
    }

    /// Refuses another account than the caller's binding as if it did not exist (404).
    pub fn check_account(&self, account: &str) -> Result<(), AppError> {
        if self.sees(account) {
            Ok(())
        } else {
            Err(AppError::NotFound(format!("account `{account}`")))
        }
    }

    /// Refuses an account-bound caller (403): `what` needs a token bound to no account.
    pub fn require_unbound(&self, what: &str) -> Result<(), AppError> {
        match &self.account {
            None => Ok(()),
            Some(own) => Err(AppError::Forbidden(format!(
                "this admin token is bound to account `{own}`; {what} needs an admin token that is not bound to an account"
            ))),
        }
    }

    /// What this caller may hand on to an admin token it creates.
    pub fn power(&self) -> Power {
        Power {
            scopes: self.scopes.clone(),
            account: self.account.clone(),
            restriction: self.restriction,
            expires_at: self.expires_at,
            allowed_cidrs: self.allowed_cidrs.clone(),
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor { who: format!("admin:{}", self.name), source_ip: self.ip.map(|ip| ip.to_string()) }
    }
}

/// The outcome of looking up a presented token.
enum Lookup {
    Unknown,
    Revoked,
    Expired,
    NotFromHere,
    /// Valid: the row, and its restriction when it has one (`Some(None)`: named but gone).
    Valid(Box<AdminTokenRow>, Option<Option<RestrictionRow>>),
}

/// Looks the token up and, only when it is valid from `ip` at `now` and its restriction allows
/// `request`, records its use (a refused request never moves `last_used_at`).
async fn lookup(
    store: &Store,
    hash: &str,
    ip: Option<IpAddr>,
    now: u64,
    request: &RequestLine,
) -> Result<Lookup, crate::store::StoreError> {
    let Some((row, restriction)) = store.admin_token_by_hash(hash).await? else { return Ok(Lookup::Unknown) };
    if row.revoked_at.is_some() {
        return Ok(Lookup::Revoked);
    }
    if row.expires_at.is_some_and(|e| e <= now) {
        return Ok(Lookup::Expired);
    }
    let allowed = match ip {
        Some(ip) => ip_allowed(&row.allowed_cidrs, ip),
        None => row.allowed_cidrs.is_empty(),
    };
    if !allowed {
        return Ok(Lookup::NotFromHere);
    }
    if check_restriction(&restriction, request).is_ok() {
        store.touch_admin_token(row.id, now).await?;
    }
    Ok(Lookup::Valid(Box::new(row), restriction))
}

/// Counts a failed authentication and starts (and logs, rate-limited) a lockout when due.
fn failed(
    state: &AppState,
    lockout: &AdminLockout,
    attempt: Attempt,
    ip: Option<IpAddr>,
    now: u64,
    reason: &'static str,
) {
    state.metrics.admin_auth_failure(reason);
    if let Some(secs) = attempt.failed(now) {
        state.metrics.admin_auth_lockouts.inc();
        if let Some(suppressed) = lockout.may_log(now) {
            let source = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            tracing::warn!(
                %source,
                failures = lockout.limit(),
                lockout_secs = secs,
                suppressed_lockout_lines = suppressed,
                "admin authentication: too many failed admin tokens from this address; locked out"
            );
        }
    }
}

/// The credentials of an `Authorization: Bearer …` value. The scheme is matched without regard
/// to case (RFC 9110, section 11.1: `bearer` and `BEARER` are `Bearer`) and may be followed by
/// spaces or tabs; before this, a client that wrote `bearer` got "malformed" five times and its
/// address was locked out for the lockout period, with a valid token.
fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| credentials.trim())
}

/// The method and path of a request, as a restriction sees them.
struct RequestLine {
    method: axum::http::Method,
    path: String,
}

impl RequestLine {
    fn of(parts: &Parts) -> Self {
        let path = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path(), |u| u.0.path());
        Self { method: parts.method.clone(), path: path.to_owned() }
    }
}

/// Refuses a request that `restriction` does not allow.
fn check_restriction(
    restriction: &Option<Option<RestrictionRow>>,
    request: &RequestLine,
) -> Result<(), AppError> {
    let Some(restriction) = restriction else { return Ok(()) };
    let Some(r) = restriction else {
        return Err(AppError::Forbidden(
            "this admin token's endpoint restriction no longer exists, so it may not be used".into(),
        ));
    };
    let (method, path) = (&request.method, request.path.as_str());
    let mut allowed = false;
    for (i, text) in r.rules.iter().enumerate() {
        // A stored rule that no longer parses allows nothing (fail closed).
        if Rule::parse(text, i + 1).is_ok_and(|rule| rule.allows(method, path)) {
            allowed = true;
            break;
        }
    }
    if allowed {
        return Ok(());
    }
    let shown = tether_protocol::text::bounded(path, 200);
    Err(AppError::Forbidden(format!(
        "this admin token's endpoint restriction `{}` does not allow {} {shown}",
        r.name, method
    )))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let lockout = parts
            .extensions
            .get::<Arc<AdminLockout>>()
            .cloned()
            .ok_or_else(|| AppError::Internal("the admin lockout is not installed".into()))?;
        // A locked-out address is refused before its token is looked at; an attempt in flight
        // holds one of its address's slots until it is resolved (dropped: not a failure).
        let attempt = match lockout.begin(ip, now_unix).await {
            Ok(attempt) => attempt,
            Err(Refusal::Locked(retry_after_secs)) => {
                state.metrics.admin_auth_locked.inc();
                return Err(AppError::LockedOut { retry_after_secs });
            }
            Err(Refusal::Busy) => {
                state.metrics.admin_auth_locked.inc();
                return Err(AppError::Busy);
            }
        };
        let now = now_unix();
        // No credentials at all is not a guess: refused, not counted.
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AppError::Unauthorized("missing `Authorization: Bearer` admin token"))?;
        let value = header
            .to_str()
            .ok()
            .and_then(bearer_credentials)
            .filter(|t| t.starts_with(ADMIN_PREFIX) && t.len() < 256);
        let Some(value) = value else {
            failed(state, &lockout, attempt, ip, now, "malformed");
            return Err(AppError::Unauthorized("malformed admin token"));
        };
        let hash = admin_token_hash(value);
        let request = Arc::new(RequestLine::of(parts));
        let found = lookup(&state.store, &hash, ip, now, &request).await?;
        let (row, restriction) = match found {
            Lookup::Valid(row, restriction) => {
                // The access log names the caller (the token's name, never its value).
                if let Some(caller) = parts.extensions.get::<super::telemetry::CallerName>() {
                    caller.set(&row.name);
                }
                (row, restriction)
            }
            Lookup::Unknown => {
                failed(state, &lockout, attempt, ip, now, "unknown");
                return Err(AppError::Unauthorized("unknown admin token"));
            }
            Lookup::Revoked => {
                failed(state, &lockout, attempt, ip, now, "revoked");
                return Err(AppError::Unauthorized("admin token revoked"));
            }
            Lookup::Expired => {
                failed(state, &lockout, attempt, ip, now, "expired");
                return Err(AppError::Unauthorized("admin token expired"));
            }
            // A genuine token from the wrong network: refused, not counted as a guess.
            Lookup::NotFromHere => {
                return Err(AppError::Forbidden("this admin token may not be used from this address".into()))
            }
        };
        drop(attempt); // authenticated: the slot is free again, nothing counted
        check_restriction(&restriction, &request)?;
        let row = *row;
        Ok(Self {
            id: row.id,
            name: row.name,
            scopes: row.scopes,
            ip,
            account: row.account_id,
            restriction: row.restriction_id,
            expires_at: row.expires_at,
            allowed_cidrs: row.allowed_cidrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer tat_x", "bearer tat_x", "BEARER tat_x", "Bearer\ttat_x", "Bearer   tat_x  "] {
            assert_eq!(bearer_credentials(header), Some("tat_x"), "{header:?}");
        }
        for header in ["Basic tat_x", "Bearertat_x", "tat_x", "", "Bearer"] {
            assert_eq!(bearer_credentials(header), None, "{header:?}");
        }
    }
}
