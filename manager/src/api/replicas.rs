//! `GET /api/v1/replicas`: the managers of the replica set on one PostgreSQL store (with the
//! SQLite store, this manager alone), their versions, last report and live sessions.
use axum::extract::State;
use axum::Json;

use super::auth::{Caller, Scope};
use super::dto::ReplicaDto;
use super::error::{AppError, ErrorBody};
use crate::state::AppState;

/// List the replicas of the set.
#[utoipa::path(get, path = "/api/v1/replicas", operation_id = "list_replicas", tag = "replicas",
    responses((status = 200, body = [ReplicaDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<ReplicaDto>>, AppError> {
    caller.require(Scope::DelegatesRead)?;
    // Session counts span every account.
    caller.require_unbound("listing the replicas")?;
    let me = state.cluster.replica_id();
    let rows = state.cluster.replicas(&state.registry, state.is_draining()).await?;
    Ok(Json(rows.into_iter().map(|r| ReplicaDto::from_row(r, me)).collect()))
}
