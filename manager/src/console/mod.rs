//! The web console under `/ui/`: server-rendered pages on the manager's one TLS port, embedded
//! in the binary, for operators who would rather click than type.
//!
//! **The console is a client of the REST API's code, not a second implementation of it.**
//! Every page reads, and every form acts, by calling the REST handler of the same operation
//! (`crate::api::*`) with a [`Caller`](crate::api::auth::Caller) built from the browser's
//! session: the same scope and account checks, the same validation, the same services
//! (`tokens.rs`, `rotation/`, the registry, the store) and the same audit entries, written
//! with the admin token's name and the browser's address. What the console adds is only what
//! a browser needs: sessions, CSRF tokens, security headers, HTML.
//!
//! # Layout
//!
//! - [`session`]: server-side sessions (random id in the cookie), their CSRF token, notices
//!   and one-time secrets.
//! - [`auth`]: sign-in through the REST API's authentication and lockout, the [`auth::Signed`]
//!   extractor that re-checks the admin token on every request, and [`auth::Action`], a form
//!   from this origin with a valid CSRF token.
//! - [`headers`]: Content-Security-Policy and the other security headers.
//! - [`assets`]: the embedded stylesheet and script.
//! - [`view`]: the page shell and shared fragments (maud templates).
//! - [`pages`]: one file per page family.
use std::sync::Arc;

use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::auth::Caller;
use crate::state::AppState;
use crate::store::audit::AuditEntry;
use crate::store::{StoreError, StoreOps};

pub mod assets;
pub mod auth;
pub mod headers;
pub mod pages;
pub mod session;
pub mod view;

/// What the console's handlers share: the manager's state and the browser sessions.
#[derive(Debug, Clone)]
pub struct Console {
    /// The manager's services.
    pub app: AppState,
    /// Signed-in browsers.
    pub sessions: Arc<session::Sessions>,
}

/// The console's routes, to be nested under `/ui`. It relies on the lockout extension that
/// [`crate::api::app`] installs for the whole router.
pub fn router(app: AppState) -> Router<AppState> {
    let console = Console { app, sessions: Arc::new(session::Sessions::default()) };
    use pages::{accounts, admin_tokens, audit, delegates, rotations, secret, tokens};
    Router::new()
        .route("/", get(auth::home))
        .route("/sign-in", get(auth::sign_in_form).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/assets/console.css", get(assets::css))
        .route("/assets/console.js", get(assets::js))
        .route("/accounts", get(accounts::list).post(accounts::create))
        .route("/accounts/{account}", get(tokens::list))
        .route("/accounts/{account}/tokens", post(tokens::create))
        .route("/accounts/{account}/tokens/{token}", get(tokens::show))
        .route("/accounts/{account}/tokens/{token}/revoke", get(tokens::confirm_revoke).post(tokens::revoke))
        .route("/accounts/{account}/tokens/{token}/rotate", post(tokens::rotate))
        .route("/accounts/{account}/tokens/{token}/delete", post(tokens::delete))
        .route("/secret/{flash}", get(secret::show))
        .route("/delegates", get(delegates::list))
        .route("/delegates/{session_id}/disconnect", post(delegates::disconnect))
        .route("/delegates/{session_id}/ping", post(delegates::ping))
        .route("/rotations", get(rotations::list))
        .route("/rotations/{rotation_id}", get(rotations::show))
        .route("/audit", get(audit::list))
        .route("/admin-tokens", get(admin_tokens::list).post(admin_tokens::create))
        .route("/admin-tokens/{admin_token}/revoke", post(admin_tokens::revoke))
        .fallback(not_found)
        .layer(middleware::from_fn(headers::secure))
        .with_state(console)
}

/// `GET /ui/` (routed beside the nested router, which serves `/ui` only): as `/ui`.
pub async fn slash() -> Response {
    axum::response::Redirect::to("/ui").into_response()
}

/// No console page has this path.
async fn not_found() -> Response {
    view::error_page(axum::http::StatusCode::NOT_FOUND, "There is no such page.", "/ui/", None, None)
}

/// Writes a console-only audit entry (sign-in, sign-out) for `caller` at `now`.
pub async fn audit_console(
    console: &Console,
    caller: &Caller,
    action: &str,
    now: u64,
) -> Result<(), StoreError> {
    let actor = caller.actor();
    let entry = AuditEntry {
        id: 0,
        at: now,
        actor: actor.who,
        action: action.to_owned(),
        target: format!("admin_token:{}", caller.id),
        source_ip: actor.source_ip,
        detail: caller.name.clone(),
    };
    console.app.store.append_audit(entry).await
}

/// A response for an error the console did not expect (logged through the API's error type).
pub fn internal(e: impl std::fmt::Display) -> Response {
    let _ = crate::api::error::AppError::Internal(e.to_string()).into_response();
    view::error_page(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (logged)",
        "/ui/",
        None,
        None,
    )
}
