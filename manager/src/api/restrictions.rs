//! `/api/v1/restrictions`: list, create and delete endpoint restrictions (named, reusable lists
//! of allowed `METHOD /api/v1/…` patterns attached to admin tokens at creation). Restrictions
//! are shared by every account, so managing them takes the `admin` scope and a token bound to
//! no account.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use uuid::Uuid;

use super::access;
use super::auth::{Caller, Scope};
use super::dto::{CreateRestriction, RestrictionDto};
use super::error::{AppError, ErrorBody};
use super::extract::{Body, Path};
use crate::clock::now_unix;
use crate::state::AppState;
use crate::store::access::RestrictionRow;
use crate::store::{RestrictionDelete, StoreError, StoreOps};
use crate::validate;

/// List endpoint restrictions.
#[utoipa::path(get, path = "/api/v1/restrictions", operation_id = "list_restrictions", tag = "restrictions",
    responses((status = 200, body = [RestrictionDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<RestrictionDto>>, AppError> {
    caller.require(Scope::Admin)?;
    caller.require_unbound("managing endpoint restrictions")?;
    let list = state.store.restrictions().await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// Create an endpoint restriction. Each rule is `METHOD /api/v1/path` and must match a route.
#[utoipa::path(post, path = "/api/v1/restrictions", operation_id = "create_restriction", tag = "restrictions", request_body = CreateRestriction,
    responses((status = 201, body = RestrictionDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateRestriction>,
) -> Result<(StatusCode, Json<RestrictionDto>), AppError> {
    caller.require(Scope::Admin)?;
    caller.require_unbound("managing endpoint restrictions")?;
    validate::name("name", &req.name)?;
    let rules: Vec<String> = access::parse_rules(&req.allow)?.iter().map(access::Rule::canonical).collect();
    let (actor, now) = (caller.actor(), now_unix());
    let row = RestrictionRow {
        id: Uuid::new_v4(),
        name: req.name,
        rules,
        created_at: now,
        created_by: actor.who.clone(),
    };
    let created = row.clone();
    let detail = format!("{} {}", row.name, row.rules.join("; "));
    let audit = actor.entry(now, "restriction.create", &format!("restriction:{}", row.id), &detail);
    state.store.create_restriction(row, audit).await?;
    tracing::info!(restriction = %created.name, rules = created.rules.len(), "restriction created");
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Delete an endpoint restriction (by id or name); refused (409) while an admin token that is
/// not revoked uses it.
#[utoipa::path(delete, path = "/api/v1/restrictions/{restriction}", operation_id = "delete_restriction", tag = "restrictions",
    params(("restriction" = String, Path, description = "Restriction id or name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Still in use")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(restriction): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::Admin)?;
    caller.require_unbound("managing endpoint restrictions")?;
    let (actor, now) = (caller.actor(), now_unix());
    let name = match state.store.delete_restriction(&restriction, now, &actor).await? {
        RestrictionDelete::Deleted(row) => row.name,
        // A rule of the access model, not a store conflict: nothing is written.
        RestrictionDelete::InUse { row, users } => {
            return Err(AppError::Conflict(format!(
                "restriction `{}` is used by {users} admin token(s) that are not revoked; revoke them first",
                row.name
            )))
        }
        RestrictionDelete::NotFound => {
            return Err(StoreError::NotFound(format!("restriction `{restriction}`")).into())
        }
    };
    tracing::info!(restriction = %name, "restriction deleted");
    Ok(StatusCode::NO_CONTENT)
}
