//! `/api/v1/delegates`: list live sessions, disconnect one, ping one (an `echo` task). An
//! account-bound admin token lists only its account's sessions and gets 404 for any other's.
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::dto::{DelegateDto, PingRequest, PingResponse};
use super::error::{AppError, ErrorBody};
use super::extract::{Body, Path, Query};
use crate::clock::now_unix;
use crate::registry::{SessionCommand, SessionInfo};
use crate::state::AppState;
use crate::store::audit::Actor;
use crate::store::cluster::Change;
use crate::store::StoreOps;
use crate::validate;

/// Longest echo payload, in characters.
pub const MAX_PING_PAYLOAD: usize = 1024;
/// How long a ping waits for the delegate.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Filter of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this account's delegates.
    pub account: Option<String>,
}

/// List live delegate sessions (only the caller's account's when it is bound).
#[utoipa::path(get, path = "/api/v1/delegates", operation_id = "list_delegates", tag = "delegates", params(ListQuery),
    responses((status = 200, body = [DelegateDto]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<DelegateDto>>, AppError> {
    caller.require(Scope::DelegatesRead)?;
    if let Some(account) = &q.account {
        validate::name("account", account)?;
    }
    // A bound token asking for another account gets what that filter and its binding have in
    // common: nothing.
    let account = q.account.as_deref().or(caller.account.as_deref());
    // Every replica's sessions (this one's from its registry, the others' from the store).
    let list = state.cluster.sessions(&state.registry, account).await?;
    let list = list.into_iter().filter(|s| caller.sees(&s.account_id));
    Ok(Json(list.map(Into::into).collect()))
}

/// A ping of a session another replica holds: asked through the change log, answered by the
/// holder in the request's row, which this replica polls (every 50 ms, up to the timeout).
async fn remote_ping(
    state: &AppState,
    id: Uuid,
    payload: String,
    started: Instant,
) -> Result<Json<PingResponse>, AppError> {
    let Some(pg) = state.cluster.postgres() else {
        return Err(AppError::NotFound(format!("delegate session `{id}`")));
    };
    let request = Uuid::new_v4();
    pg.request_ping(request, id, &payload).await?;
    let deadline = started + PING_TIMEOUT;
    while Instant::now() < deadline {
        if let Some((ok, reply)) = pg.ping_answer(request).await? {
            return Ok(Json(PingResponse {
                session_id: id,
                rtt_ms: started.elapsed().as_secs_f64() * 1000.0,
                ok,
                payload: reply,
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AppError::Timeout(format!("delegate session `{id}` did not answer within 10 s")))
}

fn parse_session(id: &str) -> Result<Uuid, AppError> {
    id.parse().map_err(|_| AppError::BadRequest("invalid `session_id`: expected a UUID".into()))
}

/// The live session `id` on any replica, if the caller may see it (404 otherwise, as if it
/// did not exist), and whether this replica holds it.
async fn visible_session(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(SessionInfo, bool), AppError> {
    let not_found = || AppError::NotFound(format!("delegate session `{id}`"));
    if let Some(info) = state.registry.get(id) {
        return caller.sees(&info.account_id).then_some((info, true)).ok_or_else(not_found);
    }
    let elsewhere = state.cluster.session_elsewhere(id).await?;
    elsewhere.filter(|s| caller.sees(&s.account_id)).map(|s| (s, false)).ok_or_else(not_found)
}

/// Disconnect a delegate session (`goodbye`, then close); the delegate reconnects.
#[utoipa::path(delete, path = "/api/v1/delegates/{session_id}", operation_id = "disconnect_delegate", tag = "delegates",
    params(("session_id" = String, Path, description = "Session id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::DelegatesWrite)?;
    let id = parse_session(&session_id)?;
    let (info, here) = visible_session(&state, &caller, id).await?;
    let actor: Actor = caller.actor();
    let now = now_unix();
    let target = format!("session:{id}");
    let detail = format!("{} token={}", info.name, info.token_id);
    state.store.append_audit(actor.entry(now, "delegate.disconnect", &target, &detail)).await?;
    if here {
        if !state.registry.send(id, SessionCommand::Disconnect) {
            return Err(AppError::NotFound(format!("delegate session `{id}`")));
        }
    } else {
        // Held by another replica: through the change log, applied there within moments.
        state.cluster.publish(Change::Disconnect(id)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ping a delegate with an `echo` task and report the round trip.
#[utoipa::path(post, path = "/api/v1/delegates/{session_id}/ping", operation_id = "ping_delegate", tag = "delegates", request_body = PingRequest,
    params(("session_id" = String, Path, description = "Session id")),
    responses((status = 200, body = PingResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    Body(req): Body<PingRequest>,
) -> Result<Json<PingResponse>, AppError> {
    caller.require(Scope::DelegatesWrite)?;
    let id = parse_session(&session_id)?;
    let (_, here) = visible_session(&state, &caller, id).await?;
    let payload = req.payload.unwrap_or_else(|| "ping".into());
    if payload.chars().count() > MAX_PING_PAYLOAD {
        return Err(AppError::BadRequest(format!(
            "invalid `payload`: at most {MAX_PING_PAYLOAD} characters"
        )));
    }
    let started = Instant::now();
    if !here {
        return remote_ping(&state, id, payload, started).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !state.registry.send(id, SessionCommand::Task { task_id: Uuid::new_v4(), payload, reply: tx }) {
        return Err(AppError::NotFound(format!("delegate session `{id}`")));
    }
    match tokio::time::timeout(PING_TIMEOUT, rx).await {
        Ok(Ok(reply)) => Ok(Json(PingResponse {
            session_id: id,
            rtt_ms: started.elapsed().as_secs_f64() * 1000.0,
            ok: reply.ok,
            payload: reply.payload,
        })),
        Ok(Err(_)) => Err(AppError::NotFound(format!("delegate session `{id}` ended before answering"))),
        Err(_) => Err(AppError::Timeout(format!("delegate session `{id}` did not answer within 10 s"))),
    }
}
