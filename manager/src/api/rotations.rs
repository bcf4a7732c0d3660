//! `/api/v1/rotations`: watch rotations and each delegate's progress. An account-bound admin
//! token sees its own account's rotations only; another account's is 404.
use axum::extract::State;
use axum::Json;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::dto::RotationDto;
use super::error::{AppError, ErrorBody};
use super::extract::Path;
use crate::state::AppState;
use crate::store::StoreOps;

/// How many rotations the list shows.
const LIST_LIMIT: u32 = 100;

/// Recent rotations, newest first (only the caller's account's when it is bound).
#[utoipa::path(get, path = "/api/v1/rotations", operation_id = "list_rotations", tag = "rotations",
    responses((status = 200, body = [RotationDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<RotationDto>>, AppError> {
    caller.require(Scope::TokensRead)?;
    let account = caller.account.clone();
    let rows = state.store.rotations(account.as_deref(), LIST_LIMIT).await?;
    Ok(Json(rows.into_iter().map(|(r, ds)| RotationDto::from_rows(r, ds)).collect()))
}

/// One rotation with per-delegate progress.
#[utoipa::path(get, path = "/api/v1/rotations/{rotation_id}", operation_id = "show_rotation", tag = "rotations",
    params(("rotation_id" = String, Path, description = "Rotation id")),
    responses((status = 200, body = RotationDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(rotation_id): Path<String>,
) -> Result<Json<RotationDto>, AppError> {
    caller.require(Scope::TokensRead)?;
    let id: Uuid = rotation_id
        .parse()
        .map_err(|_| AppError::BadRequest("invalid `rotation_id`: expected a UUID".into()))?;
    let row = match state.store.rotation(id).await? {
        Some(r) if caller.sees(&r.account_id) => r,
        _ => return Err(AppError::NotFound(format!("rotation `{id}`"))),
    };
    let delegates = state.store.rotation_delegates(id).await?;
    Ok(Json(RotationDto::from_rows(row, delegates)))
}
