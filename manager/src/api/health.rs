//! `/healthz`, `/readyz` and `/metrics` (no authentication; no secrets).
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;

use crate::metrics::Format;
use crate::state::AppState;

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 once ready, 503 before and while draining.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready or draining")))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Prometheus metrics: the 0.0.4 text format, or OpenMetrics when the `Accept` header asks
/// for it. The rotation gauges are read from the store first.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus metrics")))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let now = crate::clock::now_unix();
    match state.store.call(move |c| crate::store::rotations::progress(c, now)).await {
        Ok(progress) => state.metrics.set_rotations(&progress),
        Err(e) => tracing::warn!(error = %e, "cannot read rotation progress for the metrics"),
    }
    ([(header::CONTENT_TYPE, format.content_type())], state.metrics.encode(format))
}
