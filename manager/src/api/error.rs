//! The one error type of the REST API: a status and a JSON body `{"error":{"code","message"}}`
//! that tells the client what it may know; internal details are logged, not returned.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rotation::RotationError;
use crate::store::StoreError;
use crate::tokens::DeleteError;
use crate::validate::InvalidInput;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No or bad credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0} not found")]
    NotFound(String),
    /// Conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not declared as JSON (`Content-Type` missing or another media type).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The path exists, the method does not (sent with the `Allow` header of the route).
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The manager cannot serve this now (shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// Too many failed admin authentications from this source address: locked out for
    /// `retry_after_secs` more seconds (sent as `Retry-After`).
    #[error(
        "too many failed admin authentications from this address; locked out, retry in {retry_after_secs} s"
    )]
    LockedOut {
        /// Seconds until the lockout ends.
        retry_after_secs: u64,
    },
    /// Every admin-authentication slot of this source address is taken by requests in flight
    /// (sent with `Retry-After: 1`).
    #[error("too many admin authentications in progress from this address; retry in 1 s")]
    Busy,
    /// The delegate did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// Something broke on our side (details are logged).
    #[error("internal error")]
    Internal(String),
}

/// The JSON error body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: unauthorized, forbidden, not_found, method_not_allowed, conflict,
    /// bad_request, too_large, unsupported_media_type, locked_out, busy, timeout, unavailable,
    /// internal.
    pub code: String,
    /// Human-readable.
    pub message: String,
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::LockedOut { .. } => (StatusCode::TOO_MANY_REQUESTS, "locked_out"),
            Self::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: self.to_string() } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            Self::LockedOut { retry_after_secs } => Some(*retry_after_secs),
            Self::Busy => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

/// The router's fallback: no route has this path (404, `not_found`).
pub async fn no_route(uri: axum::http::Uri) -> AppError {
    let path = tether_protocol::text::bounded(uri.path(), 200);
    AppError::NotFound(format!("route `{}`", tether_protocol::text::escape_control(path)))
}

/// The routes' fallback for a method they do not have (405, `method_not_allowed`; axum adds
/// the route's `Allow` header).
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(why) => Self::Conflict(why),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RotationError> for AppError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::TokenNotFound { account, token } => {
                Self::NotFound(format!("token `{token}` in account `{account}`"))
            }
            RotationError::AlreadyRotating { .. } | RotationError::NotRotatable { .. } => {
                Self::Conflict(e.to_string())
            }
            RotationError::Store(e) => e.into(),
        }
    }
}

impl From<DeleteError> for AppError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NotFound { account, token } => {
                Self::NotFound(format!("token `{token}` in account `{account}`"))
            }
            DeleteError::NotRevoked => Self::Conflict(e.to_string()),
            DeleteError::Store(e) => e.into(),
        }
    }
}

impl From<InvalidInput> for AppError {
    fn from(e: InvalidInput) -> Self {
        Self::BadRequest(e.to_string())
    }
}
