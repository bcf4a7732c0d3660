//! The security headers of every console response: a strict Content-Security-Policy (scripts,
//! styles and images only from this origin, so no inline script or style runs; no framing; forms
//! post only here), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `nosniff`, and
//! `Cache-Control: no-store` on everything but the static assets: pages show live state, and
//! some show a secret once.
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy: nothing by default, this origin for what the pages use.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the headers to `next`'s response.
pub async fn secure(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with(super::assets::PREFIX);
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
