//! Request telemetry, one layer over every route: the API request metrics (by method, matched
//! route template and status, with latency) and the access log (one line per request), both
//! carrying a request id taken from `X-Request-Id` when it is valid (visible ASCII, 1–128
//! characters) or generated, and returned in the response's `X-Request-Id`.
//!
//! The route is always one of [`super::ROUTES`]' templates, `/ui/*` (a console page) or
//! `unmatched`, never the raw path; the caller is the admin token's name, set by admin
//! authentication (or the console's session) through [`CallerName`], never its value.
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::method_label;
use crate::state::AppState;

/// The request id header, read and returned.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client, in characters (all ASCII).
pub const MAX_REQUEST_ID: usize = 128;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Route of the delegate WebSocket endpoint: its access line is logged at DEBUG (each
/// delegate connection already logs `delegate connected` or the refusal).
const DELEGATE_CONNECT: &str = "/api/v1/delegates/connect";

/// The name of the admin token that authenticated a request, filled in by admin
/// authentication and read by the access log. Shared between the request's extensions and
/// this layer.
#[derive(Debug, Clone, Default)]
pub struct CallerName(Arc<OnceLock<String>>);

impl CallerName {
    /// Records the authenticated admin token's name (the first one set stays).
    pub fn set(&self, name: &str) {
        let _ = self.0.set(name.to_owned());
    }

    /// The name, once authenticated.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The client's request id when it is one we may log and echo: 1–128 visible ASCII
/// characters (`!` to `~`; no spaces, no control characters).
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_REQUEST_ID && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The request id: the client's first `X-Request-Id` when valid, else a new UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
    }
}

/// The one label of every web console page (`crate::console`).
pub const CONSOLE: &str = "/ui/*";

/// The route template a request matched, as a `'static` label from [`super::ROUTES`] (or
/// [`CONSOLE`] for a console page).
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    let console = matched.is_some_and(|m| m.as_str() == "/ui" || m.as_str().starts_with("/ui/"));
    matched
        .and_then(|m| super::ROUTES.iter().find(|(_, route)| *route == m.as_str()))
        .map_or(if console { CONSOLE } else { UNMATCHED }, |(_, route)| route)
}

/// The layer: measures and logs the request, and sets the response's `X-Request-Id`.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method().as_str());
    let route = route_label(request.extensions().get::<MatchedPath>());
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let id = request_id(request.headers());
    let caller = CallerName::default();
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.api_request(method, route, status, took);
    let request_id = id.to_str().unwrap_or("invalid");
    let client = client.map_or_else(|| "-".to_owned(), |c| c.to_string());
    let admin_token = caller.get().unwrap_or("-");
    let latency_ms = took.as_secs_f64() * 1000.0;
    if route == DELEGATE_CONNECT {
        tracing::debug!(target: "tether_manager::access", request_id, method, route, status, latency_ms, client, admin_token, "request");
    } else {
        tracing::info!(target: "tether_manager::access", request_id, method, route, status, latency_ms, client, admin_token, "request");
    }
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_visible_ascii() {
        assert!(valid_request_id(b"abc-123_XYZ.~!"));
        assert!(valid_request_id("a".repeat(MAX_REQUEST_ID).as_bytes()));
        for bad in [&b""[..], b"a b", b"a\tb", b"a\x7f", "é".as_bytes(), b"\x00"] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
        assert!(!valid_request_id("a".repeat(MAX_REQUEST_ID + 1).as_bytes()));
    }

    #[test]
    fn an_invalid_or_missing_id_is_replaced() {
        let mut h = HeaderMap::new();
        let generated = request_id(&h);
        assert_eq!(generated.len(), 36);
        h.insert(&REQUEST_ID, HeaderValue::from_static("client-1"));
        assert_eq!(request_id(&h), "client-1");
        h.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }

    #[test]
    fn unknown_routes_and_methods_are_one_word() {
        assert_eq!(route_label(None), UNMATCHED);
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "GET");
    }
}
