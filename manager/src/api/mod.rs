//! The HTTP surface: [`app`] builds the one router for the REST API under `/api/v1`, health,
//! metrics, the OpenAPI document and the delegate WebSocket endpoint; the web console's pages
//! are nested under `/ui` ([`crate::console`]).
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};

use crate::state::AppState;

pub mod access;
pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod auth;
pub mod delegates;
pub mod detached;
pub mod dto;
pub mod error;
pub mod extract;
pub mod health;
pub mod lockout;
pub mod openapi;
pub mod replicas;
pub mod restrictions;
pub mod rotations;
pub mod telemetry;
pub mod tokens;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Every route as (method, path): kept beside the router so a test checks that the OpenAPI
/// document describes exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/delegates/connect"),
    ("get", "/api/v1/accounts"),
    ("post", "/api/v1/accounts"),
    ("get", "/api/v1/accounts/{account}"),
    ("get", "/api/v1/accounts/{account}/tokens"),
    ("post", "/api/v1/accounts/{account}/tokens"),
    ("get", "/api/v1/accounts/{account}/tokens/{token}"),
    ("delete", "/api/v1/accounts/{account}/tokens/{token}"),
    ("patch", "/api/v1/accounts/{account}/tokens/{token}"),
    ("post", "/api/v1/accounts/{account}/tokens/{token}/revoke"),
    ("post", "/api/v1/accounts/{account}/tokens/{token}/rotate"),
    ("get", "/api/v1/rotations"),
    ("get", "/api/v1/rotations/{rotation_id}"),
    ("get", "/api/v1/delegates"),
    ("delete", "/api/v1/delegates/{session_id}"),
    ("post", "/api/v1/delegates/{session_id}/ping"),
    ("get", "/api/v1/replicas"),
    ("get", "/api/v1/admin-tokens"),
    ("post", "/api/v1/admin-tokens"),
    ("post", "/api/v1/admin-tokens/{admin_token}/revoke"),
    ("get", "/api/v1/restrictions"),
    ("post", "/api/v1/restrictions"),
    ("delete", "/api/v1/restrictions/{restriction}"),
    ("get", "/api/v1/audit"),
];

/// The router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the
/// gateway, the admin CIDR checks and the admin lockout see the peer address. Build it once per
/// server: it holds the failed-admin-authentication lockout.
pub fn app(state: AppState) -> Router {
    let lockout = Arc::new(lockout::AdminLockout::new(
        state.config.admin_auth_fail_limit,
        state.config.admin_auth_fail_window_secs,
        state.config.admin_auth_lockout_secs,
    ));
    let api = Router::new()
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/delegates/connect", get(crate::gateway::connect))
        .route("/accounts", get(accounts::list).post(accounts::create))
        .route("/accounts/{account}", get(accounts::show))
        .route("/accounts/{account}/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/accounts/{account}/tokens/{token}",
            get(tokens::show).delete(tokens::delete).patch(tokens::update),
        )
        .route("/accounts/{account}/tokens/{token}/revoke", post(tokens::revoke))
        .route("/accounts/{account}/tokens/{token}/rotate", post(tokens::rotate))
        .route("/rotations", get(rotations::list))
        .route("/rotations/{rotation_id}", get(rotations::show))
        .route("/delegates", get(delegates::list))
        .route("/delegates/{session_id}", delete(delegates::disconnect))
        .route("/delegates/{session_id}/ping", post(delegates::ping))
        .route("/replicas", get(replicas::list))
        .route("/admin-tokens", get(admin_tokens::list).post(admin_tokens::create))
        .route("/admin-tokens/{admin_token}/revoke", post(admin_tokens::revoke))
        .route("/restrictions", get(restrictions::list).post(restrictions::create))
        .route("/restrictions/{restriction}", delete(restrictions::delete))
        .route("/audit", get(audit::list))
        .method_not_allowed_fallback(error::method_not_allowed);
    // Every error is the JSON shape of `error.rs`, also for a path or method no route has.
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        // The web console: HTML pages over the same handlers (see `crate::console`).
        .nest("/ui", crate::console::router(state.clone()))
        .route("/ui/", get(crate::console::slash))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(Extension(lockout))
        .layer(middleware::from_fn_with_state(state.clone(), telemetry::observe))
        .with_state(state)
}
