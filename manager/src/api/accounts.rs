//! `/api/v1/accounts`: list (an account-bound token sees its own account only), create (with
//! the default token; a token bound to no account only), show.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tether_protocol::SecretString;

use super::auth::{Caller, Scope};
use super::dto::{AccountDto, CreateAccount, CreatedAccount, CreatedToken, TokenDto};
use super::error::{AppError, ErrorBody};
use super::extract::{Body, Path};
use crate::clock::now_unix;
use crate::state::AppState;
use crate::store::StoreOps;
use crate::validate;

/// Longest display name of an account, in characters.
pub const MAX_DISPLAY_NAME: usize = 128;

/// List accounts (an account-bound admin token sees only its own).
#[utoipa::path(get, path = "/api/v1/accounts", operation_id = "list_accounts", tag = "accounts",
    responses((status = 200, body = [AccountDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AccountDto>>, AppError> {
    caller.require(Scope::TokensRead)?;
    let rows = state.store.accounts().await?;
    Ok(Json(rows.into_iter().filter(|a| caller.sees(&a.id)).map(Into::into).collect()))
}

/// Create an account and its default token (the value is in the answer, once). Needs the
/// `admin` scope and a token bound to no account.
#[utoipa::path(post, path = "/api/v1/accounts", operation_id = "create_account", tag = "accounts", request_body = CreateAccount,
    responses((status = 201, body = CreatedAccount), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateAccount>,
) -> Result<(StatusCode, Json<CreatedAccount>), AppError> {
    caller.require(Scope::Admin)?;
    caller.require_unbound("creating accounts")?;
    validate::name("id", &req.id)?;
    let name = req.name.unwrap_or_else(|| req.id.clone());
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "invalid `name`: 1 to {MAX_DISPLAY_NAME} characters, none of them a control character"
        )));
    }
    let (master, actor, now) = (state.master.clone(), caller.actor(), now_unix());
    let (account, row, token) =
        crate::tokens::create_account(&state.store, &master, &req.id, &name, &actor, now).await?;
    tracing::info!(account = %account.id, token_id = %row.id, "account created");
    let value = SecretString::new(token.expose().to_string());
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccount {
            account: account.into(),
            default_token: CreatedToken { token: TokenDto::from_row(row, now, 0), value },
        }),
    ))
}

/// Show an account.
#[utoipa::path(get, path = "/api/v1/accounts/{account}", operation_id = "show_account", tag = "accounts",
    params(("account" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> Result<Json<AccountDto>, AppError> {
    caller.require(Scope::TokensRead)?;
    caller.check_account(&account)?;
    let id = account.clone();
    let row = state.store.account(&id).await?;
    row.map(|a| Json(a.into())).ok_or_else(|| AppError::NotFound(format!("account `{account}`")))
}
