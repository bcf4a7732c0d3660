//! `/healthz`, `/readyz` and `/metrics` (no authentication; no secrets).
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;

use crate::metrics::Format;
use crate::state::AppState;
use crate::store::StoreOps;

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 once ready, 503 before and while draining.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses((status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "not ready or draining", body = String, content_type = "text/plain")))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Prometheus metrics: the 0.0.4 text format, or OpenMetrics when the `Accept` header asks
/// for it. The rotation gauges are read from the store first, at most once every 5 s.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", responses((status = 200, description = "Prometheus metrics: text format 0.0.4, or OpenMetrics 1.0.0 when `Accept` asks for it", content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    if state.metrics.rotation_reading_due(std::time::Instant::now()) {
        let now = crate::clock::now_unix();
        match state.store.rotation_progress(now).await {
            Ok(progress) => state.metrics.set_rotations(&progress),
            Err(e) => tracing::warn!(error = %e, "cannot read rotation progress for the metrics"),
        }
    }
    ([(header::CONTENT_TYPE, format.content_type())], state.metrics.encode(format))
}
