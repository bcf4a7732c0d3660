//! Admin bearer authentication: `Authorization: Bearer tat_…`, looked up by SHA-256, checked
//! for revocation, expiry and allowed CIDRs; then per-handler scope checks.
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::AppError;
use crate::clock::now_unix;
use crate::keys::{admin_token_hash, ADMIN_PREFIX};
use crate::state::AppState;
use crate::store::admin;
use crate::store::audit::Actor;
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

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor { who: format!("admin:{}", self.name), source_ip: self.ip.map(|ip| ip.to_string()) }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AppError::Unauthorized("missing `Authorization: Bearer` admin token"))?;
        let value = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(ADMIN_PREFIX) && t.len() < 256)
            .ok_or(AppError::Unauthorized("malformed admin token"))?;
        let hash = admin_token_hash(value);
        let now = now_unix();
        let row = state
            .store
            .call(move |c| admin::authenticate(c, &hash, now))
            .await?
            .ok_or(AppError::Unauthorized("unknown admin token"))?;
        if row.revoked_at.is_some() {
            return Err(AppError::Unauthorized("admin token revoked"));
        }
        if row.expires_at.is_some_and(|e| e <= now) {
            return Err(AppError::Unauthorized("admin token expired"));
        }
        let allowed = match ip {
            Some(ip) => ip_allowed(&row.allowed_cidrs, ip),
            None => row.allowed_cidrs.is_empty(),
        };
        if !allowed {
            return Err(AppError::Forbidden("this admin token may not be used from this address".into()));
        }
        Ok(Self { id: row.id, name: row.name, scopes: row.scopes, ip })
    }
}
