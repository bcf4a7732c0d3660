//! The REST API as these tests call it over real TLS: any method and path with or without a
//! bearer, optionally from a chosen loopback source address; admin-token creation with the
//! init token; the message of an error body.
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Manager;

pub fn http(m: &Manager) -> reqwest::Client {
    let tls = tether_manager::tls::client_config(&m.ca).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

pub async fn status(
    m: &Manager,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http(m).request(method, format!("{}{path}", m.url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status();
    let text = resp.text().await.unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn admin_token(m: &Manager, body: Value) -> String {
    let v: Value = m.post("/api/v1/admin-tokens", body).await;
    v["value"].as_str().unwrap().to_owned()
}

/// One call from the loopback source address `source` (127.0.0.x); status, headers and body.
pub async fn call_from(
    m: &Manager,
    source: std::net::IpAddr,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let tls = tether_manager::tls::client_config(&m.ca).unwrap();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).local_address(source).build().unwrap();
    let mut req = client.request(method, format!("{}{path}", m.url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let (code, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (code, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub fn lo(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}

/// Creates an admin token with the init token; returns (value, the created token's JSON).
pub async fn created_admin(m: &Manager, body: Value) -> (String, Value) {
    let (code, v) =
        status(m, Method::POST, "/api/v1/admin-tokens", Some(&m.admin_token), Some(body.clone())).await;
    assert_eq!(code, StatusCode::CREATED, "{body} → {v}");
    (v["value"].as_str().unwrap().to_owned(), v["admin_token"].clone())
}

pub fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_owned()
}
