//! `/api/v1/audit`: the audit log, newest first. It is cluster-wide (entries name admin
//! tokens, sessions and rotations of every account), so an account-bound token may not read it.
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{Caller, Scope};
use super::dto::AuditDto;
use super::error::{AppError, ErrorBody};
use super::extract::Query;
use crate::state::AppState;
use crate::store::StoreOps;

/// Most entries one page may hold.
pub const MAX_LIMIT: u32 = 1000;
/// Entries in a page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many (1–1000, default 100).
    #[serde(default, deserialize_with = "super::extract::opt_query_integer")]
    pub limit: Option<u32>,
    /// Only entries with a smaller id (the next page).
    #[serde(default, deserialize_with = "super::extract::opt_query_integer")]
    pub before: Option<i64>,
}

/// Read the audit log (`admin` scope, a token bound to no account).
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "list_audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditDto]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditDto>>, AppError> {
    caller.require(Scope::Admin)?;
    caller.require_unbound("reading the cluster-wide audit log")?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(format!("invalid `limit`: must be between 1 and {MAX_LIMIT}")));
    }
    let rows = state.store.audit(limit, q.before).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}
