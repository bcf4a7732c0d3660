//! The console's static files, embedded in the binary: one hand-written stylesheet and one
//! small script (copy to clipboard, live refresh). Pages work without the script.
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Where the assets are served (inside `/ui`).
pub const PREFIX: &str = "/ui/assets/";

/// The stylesheet.
pub const CSS: &str = include_str!("assets/console.css");
/// The script.
pub const JS: &str = include_str!("assets/console.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// `GET /ui/assets/console.css`.
pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /ui/assets/console.js`.
pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}
