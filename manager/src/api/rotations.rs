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
use crate::store::rotations;

/// How many rotations the list shows.
const LIST_LIMIT: u32 = 100;

/// Recent rotations, newest first (only the caller's account's when it is bound).
#[utoipa::path(get, path = "/api/v1/rotations", operation_id = "list_rotations", tag = "rotations",
    responses((status = 200, body = [RotationDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<RotationDto>>, AppError> {
    caller.require(Scope::TokensRead)?;
    let account = caller.account.clone();
    let out = state
        .store
        .call(move |c| {
            let rows = match &account {
                None => rotations::list_recent(c, LIST_LIMIT)?,
                Some(a) => crate::store::access::rotations_of(c, a, LIST_LIMIT)?,
            };
            let mut out = Vec::new();
            for r in rows {
                let ds = rotations::delegates(c, r.id)?;
                out.push(RotationDto::from_rows(r, ds));
            }
            Ok(out)
        })
        .await?;
    Ok(Json(out))
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
    let found = state
        .store
        .call(move |c| match rotations::get(c, id)? {
            Some(r) if caller.sees(&r.account_id) => {
                Ok(Some(RotationDto::from_rows(r, rotations::delegates(c, id)?)))
            }
            _ => Ok(None),
        })
        .await?;
    found.map(Json).ok_or_else(|| AppError::NotFound(format!("rotation `{id}`")))
}
