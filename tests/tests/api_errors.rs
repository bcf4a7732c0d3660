//! Every error the manager's HTTP API answers is the one JSON error shape
//! `{"error":{"code","message"}}` with `Content-Type: application/json` (issue 17, finding 4):
//! a bad query string, a plain GET of the WebSocket endpoint, an unknown path, a method the
//! path does not have (405 with `Allow`), a path parameter that does not decode, and a body
//! without `Content-Type: application/json` (415, not 400).
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tether_tests::harness::Manager;

/// Sends `method path` (with `body` as `content_type`, when given) with the first admin token;
/// asserts the answer is `status` in the JSON error shape with `code`; returns the response
/// headers.
async fn expect_error(
    m: &Manager,
    method: Method,
    path: &str,
    body: Option<(&str, &str)>,
    status: StatusCode,
    code: &str,
) -> reqwest::header::HeaderMap {
    let mut request =
        m.http().request(method.clone(), format!("{}{path}", m.url())).bearer_auth(&m.init.admin_token);
    if let Some((content_type, body)) = body {
        if !content_type.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let (got, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    let what = format!("{method} {path} → {got} {headers:?} {text:?}");
    assert_eq!(got, status, "{what}");
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/json"), "not JSON: {what}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {what}"));
    assert_eq!(body["error"]["code"], code, "{what}");
    assert!(body["error"]["message"].as_str().is_some_and(|s| !s.is_empty()), "{what}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only `error`: {what}");
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_error_shape() {
    let m = Manager::start(&[]).await.expect("manager starts");
    let bad = StatusCode::BAD_REQUEST;
    // Query strings that do not parse (were text/plain).
    expect_error(&m, Method::GET, "/api/v1/audit?limit=abc", None, bad, "bad_request").await;
    expect_error(&m, Method::GET, "/api/v1/audit?before=1.5", None, bad, "bad_request").await;
    expect_error(&m, Method::GET, "/api/v1/audit?limit=0", None, bad, "bad_request").await;
    expect_error(&m, Method::GET, "/api/v1/delegates?account=a%20b", None, bad, "bad_request").await;
    // The WebSocket endpoint asked without an upgrade (was text/plain).
    expect_error(&m, Method::GET, "/api/v1/delegates/connect", None, bad, "bad_request").await;
    // A path parameter that is not UTF-8 once decoded.
    expect_error(&m, Method::GET, "/api/v1/accounts/%FF", None, bad, "bad_request").await;
    // Unknown paths (were an empty 404), under the API and outside it.
    for path in ["/api/v1/nope", "/nope", "/api/v2/accounts", "/api/v1/accounts/acme/tokens/default/nope"] {
        expect_error(&m, Method::GET, path, None, StatusCode::NOT_FOUND, "not_found").await;
    }
    // A method the path does not have (was an empty 405), with the route's `Allow`.
    for (method, path) in
        [(Method::PUT, "/api/v1/accounts"), (Method::PATCH, "/healthz"), (Method::DELETE, "/api/v1/audit")]
    {
        let headers = expect_error(
            &m,
            method.clone(),
            path,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
        let allow = headers.get(reqwest::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(allow.contains("GET"), "{method} {path}: Allow {allow:?}");
    }
    // A body not declared as JSON: 415 (was 400), with or without a Content-Type.
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let body = r#"{"id":"x"}"#;
    expect_error(
        &m,
        Method::POST,
        "/api/v1/accounts",
        Some(("", body)),
        unsupported,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        &m,
        Method::POST,
        "/api/v1/accounts",
        Some(("text/plain", body)),
        unsupported,
        "unsupported_media_type",
    )
    .await;
    // A declared JSON body that is not JSON stays 400; one too large 413.
    expect_error(&m, Method::POST, "/api/v1/accounts", Some(("application/json", "{")), bad, "bad_request")
        .await;
    let large = format!(r#"{{"id":"{}"}}"#, "x".repeat(70 * 1024));
    expect_error(
        &m,
        Method::POST,
        "/api/v1/accounts",
        Some(("application/json", &large)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}
