//! `/api/v1/admin-tokens`: list, create (value shown once), revoke.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::{Caller, Scope, SCOPES};
use super::body::Body;
use super::dto::{AdminTokenDto, CreateAdminToken, CreatedAdminToken};
use super::error::{AppError, ErrorBody};
use crate::clock::now_unix;
use crate::state::AppState;
use crate::store::admin;
use crate::validate;

/// List admin tokens (never their values).
#[utoipa::path(get, path = "/api/v1/admin-tokens", tag = "admin-tokens",
    responses((status = 200, body = [AdminTokenDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AdminTokenDto>>, AppError> {
    caller.require(Scope::Admin)?;
    let rows = state.store.call(|c| admin::list(c)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Create an admin token.
#[utoipa::path(post, path = "/api/v1/admin-tokens", tag = "admin-tokens", request_body = CreateAdminToken,
    responses((status = 201, body = CreatedAdminToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateAdminToken>,
) -> Result<(StatusCode, Json<CreatedAdminToken>), AppError> {
    caller.require(Scope::Admin)?;
    validate::name("name", &req.name)?;
    if req.scopes.is_empty() || req.scopes.len() > SCOPES.len() {
        return Err(AppError::BadRequest(format!(
            "invalid `scopes`: give 1 to {} of {}",
            SCOPES.len(),
            SCOPES.join(", ")
        )));
    }
    if let Some(bad) = req.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        let bad: String = bad.chars().take(32).collect();
        return Err(AppError::BadRequest(format!(
            "invalid `scopes`: unknown scope `{bad}`; known: {}",
            SCOPES.join(", ")
        )));
    }
    let mut scopes = req.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let allowed = validate::cidrs("allowed_cidrs", &req.allowed_cidrs)?;
    let now = now_unix();
    let expires_at = req
        .expires_in_secs
        .map(|s| validate::secs("expires_in_secs", s, 1, 10 * 365 * 86_400).map(|s| now + s))
        .transpose()?;
    let actor = caller.actor();
    let (row, value) = state
        .store
        .call(move |c| {
            crate::tokens::create_admin_token(c, &req.name, scopes, expires_at, allowed, &actor, now)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedAdminToken { admin_token: row.into(), value: value.to_string() })))
}

/// Revoke an admin token (by id or name).
#[utoipa::path(post, path = "/api/v1/admin-tokens/{admin_token}/revoke", tag = "admin-tokens",
    params(("admin_token" = String, Path, description = "Admin token id or name")),
    responses((status = 200, body = AdminTokenDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(admin_token): Path<String>,
) -> Result<Json<AdminTokenDto>, AppError> {
    caller.require(Scope::Admin)?;
    let actor = caller.actor();
    let now = now_unix();
    let key = admin_token.clone();
    let row = state
        .store
        .call(move |c| {
            let tx = c.transaction()?;
            let Some(row) = admin::find(&tx, &key)? else { return Ok(None) };
            if admin::revoke(&tx, row.id, now)? {
                actor.record(
                    &tx,
                    now,
                    "admin_token.revoke",
                    &format!("admin_token:{}", row.id),
                    &row.name,
                )?;
            }
            tx.commit()?;
            admin::find(c, &row.id.to_string())
        })
        .await?;
    row.map(|r| Json(r.into())).ok_or_else(|| AppError::NotFound(format!("admin token `{admin_token}`")))
}
