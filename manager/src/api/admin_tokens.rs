//! `/api/v1/admin-tokens`: list, create (value shown once), revoke. All need the `admin`
//! scope. An account-bound admin token lists and revokes only tokens bound to its account (any
//! other is 404) and creates only tokens with no more power than its own
//! ([`super::access::grant`]).
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tether_protocol::SecretString;
use uuid::Uuid;

use super::access::{self, Escalation, Power};
use super::auth::{Caller, Scope, SCOPES};
use super::dto::{AdminTokenDto, CreateAdminToken, CreatedAdminToken};
use super::error::{AppError, ErrorBody};
use super::extract::{Body, Path};
use crate::clock::now_unix;
use crate::keys;
use crate::state::AppState;
use crate::store::admin::AdminTokenRow;
use crate::store::{AdminRevoke, StoreError, StoreOps};
use crate::validate::{self, InvalidInput};

/// Longest expiry an admin token may be created with: 10 years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 365 * 86_400;

/// Checks requested scopes (1 to all of [`SCOPES`], each known) and returns them sorted, each
/// once. Shared with the offline `admin-token create --offline`.
pub fn scopes(requested: &[String]) -> Result<Vec<String>, InvalidInput> {
    if requested.is_empty() || requested.len() > SCOPES.len() {
        return Err(InvalidInput::new(
            "scopes",
            format!("give 1 to {} of {}", SCOPES.len(), SCOPES.join(", ")),
        ));
    }
    if let Some(bad) = requested.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        let bad = tether_protocol::text::bounded_chars(bad, 32);
        return Err(InvalidInput::new(
            "scopes",
            format!(
                "unknown scope `{}`; known: {}",
                tether_protocol::text::escape_control(bad),
                SCOPES.join(", ")
            ),
        ));
    }
    let mut scopes = requested.to_vec();
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// List admin tokens (never their values); a bound caller sees those bound to its account.
#[utoipa::path(get, path = "/api/v1/admin-tokens", operation_id = "list_admin_tokens", tag = "admin-tokens",
    responses((status = 200, body = [AdminTokenDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AdminTokenDto>>, AppError> {
    caller.require(Scope::Admin)?;
    let account = caller.account.clone();
    let (rows, names) = state.store.admin_tokens(account.as_deref()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| {
                let name = r.restriction_id.and_then(|id| names.get(&id).cloned());
                AdminTokenDto::from_row(r, name)
            })
            .collect(),
    ))
}

/// Create an admin token. Fields left out are inherited from the caller (account binding,
/// restriction, expiry, allowed CIDRs); more power than the caller's own is refused (403).
#[utoipa::path(post, path = "/api/v1/admin-tokens", operation_id = "create_admin_token", tag = "admin-tokens", request_body = CreateAdminToken,
    responses((status = 201, body = CreatedAdminToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Lacks `admin`, or more power than the caller's own"),
        (status = 404, body = ErrorBody, description = "No such account or restriction"), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateAdminToken>,
) -> Result<(StatusCode, Json<CreatedAdminToken>), AppError> {
    caller.require(Scope::Admin)?;
    validate::name("name", &req.name)?;
    let scopes = scopes(&req.scopes)?;
    if let Some(a) = &req.account {
        validate::name("account", a)?;
    }
    if let Some(r) = &req.restriction {
        validate::name("restriction", r)?;
    }
    let allowed_cidrs = validate::cidrs("allowed_cidrs", &req.allowed_cidrs)?;
    let now = now_unix();
    let expires_at = req
        .expires_in_secs
        .map(|s| validate::secs("expires_in_secs", s, 1, MAX_EXPIRY_SECS).map(|s| now + s))
        .transpose()?;
    let creator = caller.power();
    let actor = caller.actor();
    let value = keys::new_admin_token();
    let hash = keys::admin_token_hash(&value);
    let restriction = match &req.restriction {
        None => None,
        Some(wanted) => match state.store.find_restriction(wanted).await? {
            Some(r) => Some(r),
            // A restricted caller may name only its own: do not tell it which others exist.
            None if creator.restriction.is_some() => {
                return Err(AppError::Forbidden(Escalation::Restriction.to_string()))
            }
            None => return Err(AppError::NotFound(format!("restriction `{wanted}`"))),
        },
    };
    let requested = Power {
        scopes,
        account: req.account.clone(),
        restriction: restriction.as_ref().map(|r| r.id),
        expires_at,
        allowed_cidrs,
    };
    let granted = access::grant(&creator, requested).map_err(|e| AppError::Forbidden(e.to_string()))?;
    if let Some(a) = &granted.account {
        if state.store.account(a).await?.is_none() {
            return Err(AppError::NotFound(format!("account `{a}`")));
        }
    }
    let gone = || AppError::Forbidden("this admin token's endpoint restriction no longer exists".into());
    let restriction_name = match (granted.restriction, restriction) {
        (None, _) => None,
        (Some(id), Some(r)) if r.id == id => Some(r.name),
        (Some(id), _) => Some(state.store.find_restriction(&id.to_string()).await?.ok_or_else(gone)?.name),
    };
    let row = AdminTokenRow {
        id: Uuid::new_v4(),
        name: req.name.clone(),
        hash,
        scopes: granted.scopes,
        created_at: now,
        created_by: actor.who.clone(),
        expires_at: granted.expires_at,
        allowed_cidrs: granted.allowed_cidrs,
        revoked_at: None,
        last_used_at: None,
        account_id: granted.account,
        restriction_id: granted.restriction,
    };
    let detail = format!(
        "{} scopes={} account={} restriction={}",
        row.name,
        row.scopes.join(","),
        row.account_id.as_deref().unwrap_or("*"),
        restriction_name.as_deref().unwrap_or("-"),
    );
    let audit = actor.entry(now, "admin_token.create", &format!("admin_token:{}", row.id), &detail);
    // The store checks again, in the transaction, that the account and restriction exist.
    match state.store.create_admin_token(row.clone(), audit).await {
        Ok(()) => {}
        Err(StoreError::NotFound(what)) if what.starts_with("restriction") => return Err(gone()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(admin_token_id = %row.id, account = row.account_id.as_deref().unwrap_or("*"), "admin token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedAdminToken {
            admin_token: AdminTokenDto::from_row(row, restriction_name),
            value: SecretString::new(value.to_string()),
        }),
    ))
}

/// Revoke an admin token (by id or name); a bound caller only one bound to its account. The
/// last active unbound, unrestricted token with the `admin` scope is not revoked (409), so the
/// API can never lock every operator out.
#[utoipa::path(post, path = "/api/v1/admin-tokens/{admin_token}/revoke", operation_id = "revoke_admin_token", tag = "admin-tokens",
    params(("admin_token" = String, Path, description = "Admin token id or name")),
    responses((status = 200, body = AdminTokenDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The last active unbound, unrestricted `admin` token")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(admin_token): Path<String>,
) -> Result<Json<AdminTokenDto>, AppError> {
    caller.require(Scope::Admin)?;
    let actor = caller.actor();
    let now = now_unix();
    let not_found = || AppError::NotFound(format!("admin token `{admin_token}`"));
    let visible = |r: &AdminTokenRow| caller.account.is_none() || r.account_id == caller.account;
    let found = state.store.find_admin_token(&admin_token).await?.filter(visible).ok_or_else(not_found)?;
    let (row, newly) = match state.store.revoke_admin_token(found.id, now, &actor).await? {
        AdminRevoke::Revoked { row, newly } => (row, newly),
        AdminRevoke::NotFound => return Err(not_found()),
        // The last token that can manage everything stays: revoking it would lock every
        // operator out, with no way back through the API.
        AdminRevoke::LastOperator(row) => {
            return Err(AppError::Conflict(format!(
                "refusing to revoke admin token `{}`: it is the last active admin token with the \
                 `admin` scope, bound to no account and without a restriction, so revoking it would \
                 lock every operator out. Create another first (`tether-manager admin-token create \
                 NAME --scope admin`), then revoke this one; without API access, create one offline \
                 on the manager's host (`tether-manager admin-token create NAME --offline --data-dir \
                 DIR`, see OPERATIONS.md, \"Recovering admin access\")",
                row.name
            )))
        }
    };
    let name = match row.restriction_id {
        Some(id) => state.store.find_restriction(&id.to_string()).await?.map(|r| r.name),
        None => None,
    };
    let row = AdminTokenDto::from_row(row, name);
    // Logged once: revoking a revoked admin token again changes nothing.
    if newly {
        tracing::info!(admin_token_id = %row.id, account = row.account_id.as_deref().unwrap_or("*"), "admin token revoked");
    }
    Ok(Json(row))
}
