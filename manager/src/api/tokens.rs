//! `/api/v1/accounts/{account}/tokens`: create, list, show, revoke, rotate, delete. An
//! account-bound admin token gets 404 for every other account, as if it did not exist.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tether_protocol::SecretString;

use super::auth::{Caller, Scope};
use super::dto::{
    CreateToken, CreatedToken, RevokeResponse, RotateResponse, RotateToken, RotationPolicyDto, TokenDto,
    UpdateToken,
};
use super::error::{AppError, ErrorBody};
use super::extract::{Body, Path};
use crate::clock::now_unix;
use crate::state::AppState;
use crate::store::tokens::RotationPolicy;
use crate::store::StoreOps;
use crate::tokens::TokenSpec;
use crate::validate;

/// Longest expiry a token may be created with: 10 years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 365 * 86_400;

/// List an account's tokens (never their values).
#[utoipa::path(get, path = "/api/v1/accounts/{account}/tokens", operation_id = "list_tokens", tag = "tokens",
    params(("account" = String, Path, description = "Account id")),
    responses((status = 200, body = [TokenDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> Result<Json<Vec<TokenDto>>, AppError> {
    caller.require(Scope::TokensRead)?;
    caller.check_account(&account)?;
    let list = state
        .store
        .tokens(&account)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("account `{account}`")))?;
    let counts = state.cluster.counts_by_token(&state.registry).await?;
    let now = now_unix();
    Ok(Json(
        list.into_iter()
            .map(|t| {
                let live = counts.get(&t.id).copied().unwrap_or(0);
                TokenDto::from_row(t, now, live)
            })
            .collect(),
    ))
}

/// Create a token; its value is in the answer, once.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/tokens", operation_id = "create_token", tag = "tokens", request_body = CreateToken,
    params(("account" = String, Path, description = "Account id")),
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    caller.require(Scope::TokensWrite)?;
    caller.check_account(&account)?;
    validate::name("name", &req.name)?;
    let allowed_cidrs = validate::cidrs("allowed_cidrs", &req.allowed_cidrs)?;
    let now = now_unix();
    let expires_at = req
        .expires_in_secs
        .map(|s| validate::secs("expires_in_secs", s, 1, MAX_EXPIRY_SECS).map(|s| now + s))
        .transpose()?;
    let policy = req.rotation_policy.map(|p| policy(&state, p)).transpose()?;
    let spec = TokenSpec { expires_at, allowed_cidrs, policy };
    let (master, actor) = (state.master.clone(), caller.actor());
    let (row, token) =
        crate::tokens::create_token(&state.store, &master, &account, &req.name, &spec, &actor, now).await?;
    tracing::info!(token_id = %row.id, account = %row.account_id, "token created");
    let value = SecretString::new(token.expose().to_string());
    Ok((StatusCode::CREATED, Json(CreatedToken { token: TokenDto::from_row(row, now, 0), value })))
}

/// The longest `every_secs` of a rotation policy (ten years).
pub const MAX_ROTATE_EVERY_SECS: u64 = 3_650 * 86_400;

/// A rotation policy from its request form: `every_secs` within the manager's
/// `min_rotate_every_secs` and ten years; `grace_secs` within the rotation grace bounds and
/// shorter than `every_secs` (absent: the manager's `rotation_grace_secs`, at most half of
/// `every_secs`).
pub fn policy(state: &AppState, p: RotationPolicyDto) -> Result<RotationPolicy, validate::InvalidInput> {
    let cfg = &state.config;
    let every = validate::secs(
        "rotation_policy.every_secs",
        p.every_secs,
        cfg.min_rotate_every_secs,
        MAX_ROTATE_EVERY_SECS,
    )?;
    let grace = match p.grace_secs {
        Some(g) => validate::secs("rotation_policy.grace_secs", g, 1, cfg.max_rotation_grace_secs)?,
        None => cfg.rotation_grace_secs.min(every / 2).max(1),
    };
    if grace >= every {
        return Err(validate::InvalidInput::new(
            "rotation_policy.grace_secs",
            "must be shorter than every_secs (a token is replaced before its successor is due)",
        ));
    }
    Ok(RotationPolicy { every, grace })
}

/// Change a token (by id or name): set or clear its rotation policy.
#[utoipa::path(patch, path = "/api/v1/accounts/{account}/tokens/{token}", operation_id = "update_token", tag = "tokens", request_body = UpdateToken,
    params(("account" = String, Path, description = "Account id"), ("token" = String, Path, description = "Token id or name")),
    responses((status = 200, body = TokenDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, token)): Path<(String, String)>,
    Body(req): Body<UpdateToken>,
) -> Result<Json<TokenDto>, AppError> {
    caller.require(Scope::TokensWrite)?;
    caller.check_account(&account)?;
    let policy = req.rotation_policy.map(|p| policy(&state, p)).transpose()?;
    let now = now_unix();
    let row = state.store.set_token_policy(&account, &token, policy, now, &caller.actor()).await?;
    tracing::info!(token_id = %row.id, account = %row.account_id, every_secs = policy.map(|p| p.every), "token rotation policy changed");
    let live = state.cluster.live_on_token(&state.registry, row.id).await?;
    Ok(Json(TokenDto::from_row(row, now, live)))
}

/// Show a token (by id or name).
#[utoipa::path(get, path = "/api/v1/accounts/{account}/tokens/{token}", operation_id = "show_token", tag = "tokens",
    params(("account" = String, Path, description = "Account id"), ("token" = String, Path, description = "Token id or name")),
    responses((status = 200, body = TokenDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, token)): Path<(String, String)>,
) -> Result<Json<TokenDto>, AppError> {
    caller.require(Scope::TokensRead)?;
    caller.check_account(&account)?;
    let row = state
        .store
        .find_token(&account, &token)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("token `{token}` in account `{account}`")))?;
    let live = state.cluster.live_on_token(&state.registry, row.id).await?;
    Ok(Json(TokenDto::from_row(row, now_unix(), live)))
}

/// Revoke a token: committed before this answers; live sessions get `revoked` and close.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/tokens/{token}/revoke", operation_id = "revoke_token", tag = "tokens",
    params(("account" = String, Path, description = "Account id"), ("token" = String, Path, description = "Token id or name")),
    responses((status = 200, body = RevokeResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, token)): Path<(String, String)>,
) -> Result<Json<RevokeResponse>, AppError> {
    caller.require(Scope::TokensWrite)?;
    caller.check_account(&account)?;
    // To the end even if the client goes away: the cache and the live sessions must follow.
    let work = {
        let (state, actor) = (state.clone(), caller.actor());
        async move {
            crate::tokens::revoke(&state.store, &state.registry, &state.metrics, &account, &token, actor)
                .await
        }
    };
    let (row, closed) = super::detached::to_completion(work).await??;
    Ok(Json(RevokeResponse { token: TokenDto::from_row(row, now_unix(), 0), sessions_closed: closed }))
}

/// Rotate a token: the successor's value is in the answer, once.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/tokens/{token}/rotate", operation_id = "rotate_token", tag = "tokens", request_body = RotateToken,
    params(("account" = String, Path, description = "Account id"), ("token" = String, Path, description = "Token id or name")),
    responses((status = 201, body = RotateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, token)): Path<(String, String)>,
    Body(req): Body<RotateToken>,
) -> Result<(StatusCode, Json<RotateResponse>), AppError> {
    caller.require(Scope::TokensWrite)?;
    caller.check_account(&account)?;
    let grace = match req.grace_secs {
        Some(g) => validate::secs("grace_secs", g, 1, state.config.max_rotation_grace_secs)?,
        None => state.config.rotation_grace_secs,
    };
    let expires_in =
        req.expires_in_secs.map(|s| validate::secs("expires_in_secs", s, 1, MAX_EXPIRY_SECS)).transpose()?;
    // To the end even if the client goes away: a committed rotation must get its driver.
    let work = {
        let (state, actor) = (state.clone(), caller.actor());
        async move { state.rotations.start(&account, &token, grace, expires_in, actor).await }
    };
    let started = super::detached::to_completion(work).await??;
    Ok((
        StatusCode::CREATED,
        Json(RotateResponse {
            rotation_id: started.rotation.id,
            old_token_id: started.rotation.old_token_id,
            token_id: started.rotation.new_token_id,
            token: started.token.clone(),
            old_token_valid_until: started.rotation.deadline,
            delegates_notified: started.delegates,
        }),
    ))
}

/// Delete a revoked token.
#[utoipa::path(delete, path = "/api/v1/accounts/{account}/tokens/{token}", operation_id = "delete_token", tag = "tokens",
    params(("account" = String, Path, description = "Account id"), ("token" = String, Path, description = "Token id or name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not revoked")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, token)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::TokensWrite)?;
    caller.check_account(&account)?;
    let work = {
        let (state, actor) = (state.clone(), caller.actor());
        async move { crate::tokens::delete(&state.store, &account, &token, actor).await }
    };
    super::detached::to_completion(work).await??;
    Ok(StatusCode::NO_CONTENT)
}
