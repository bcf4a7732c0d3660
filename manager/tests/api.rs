//! The REST API over real TLS: admin authentication and scopes, hostile input that changes
//! nothing, delete-only-after-revoke, the audit log, the OpenAPI document matching the routes,
//! health and metrics. The admin access model is in `api_access.rs`, the lockout and the
//! last-admin-token rules in `api_lockout.rs`.
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn admin_api_refuses_missing_bad_expired_revoked_underscoped_and_foreign_tokens() {
    // Several bad tokens from one address: keep the lockout out of this test.
    let m = Manager::start(|c| c.admin_auth_fail_limit = 1_000).await;
    let list = "/api/v1/accounts/acme/tokens";
    let (code, body) = status(&m, Method::GET, list, None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(status(&m, Method::GET, list, Some("tat_nope"), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&m, Method::GET, list, Some("garbage"), None).await.0, StatusCode::UNAUTHORIZED);

    let reader = admin_token(&m, json!({"name": "reader", "scopes": ["tokens:read"]})).await;
    assert_eq!(status(&m, Method::GET, list, Some(&reader), None).await.0, StatusCode::OK);
    let (code, body) = status(&m, Method::POST, list, Some(&reader), Some(json!({"name": "x"}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("tokens:write"));
    assert_eq!(
        status(&m, Method::GET, "/api/v1/delegates", Some(&reader), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(&m, Method::GET, "/api/v1/audit", Some(&reader), None).await.0, StatusCode::FORBIDDEN);

    let foreign =
        admin_token(&m, json!({"name": "foreign", "scopes": ["admin"], "allowed_cidrs": ["10.0.0.0/8"]}))
            .await;
    assert_eq!(status(&m, Method::GET, list, Some(&foreign), None).await.0, StatusCode::FORBIDDEN);
    let local =
        admin_token(&m, json!({"name": "local", "scopes": ["admin"], "allowed_cidrs": ["127.0.0.1/32"]}))
            .await;
    assert_eq!(status(&m, Method::GET, list, Some(&local), None).await.0, StatusCode::OK);

    let _: Value = m.post("/api/v1/admin-tokens/local/revoke", json!({})).await;
    let (code, body) = status(&m, Method::GET, list, Some(&local), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"));

    let brief = admin_token(&m, json!({"name": "brief", "scopes": ["admin"], "expires_in_secs": 1})).await;
    let body = eventually("the admin token to expire", || async {
        let (code, body) = status(&m, Method::GET, list, Some(&brief), None).await;
        (code == StatusCode::UNAUTHORIZED).then_some(body)
    })
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));

    // Admin tokens are listed without values or hashes.
    let listed: Vec<Value> = m.get("/api/v1/admin-tokens").await;
    assert_eq!(listed.len(), 5);
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(&m.admin_token) && !text.contains(&reader) && !text.contains("hash"));
    m.stop().await;
}

#[tokio::test]
async fn hostile_input_is_refused_and_changes_nothing() {
    let m = Manager::start(|_| {}).await;
    let before: Vec<Value> = m.get("/api/v1/accounts/acme/tokens").await;
    let audit_before: Vec<Value> = m.get("/api/v1/audit?limit=1000").await;
    let tokens = "/api/v1/accounts/acme/tokens";
    let bad_bodies = [
        json!({"name": ""}),
        json!({"name": "a b"}),
        json!({"name": "../etc"}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "ok", "allowed_cidrs": ["10.0.0.0/33"]}),
        json!({"name": "ok", "allowed_cidrs": ["not-an-ip"]}),
        json!({"name": "ok", "allowed_cidrs": vec!["10.0.0.0/8"; 33]}),
        json!({"name": "ok", "expires_in_secs": 0}),
        json!({"name": 5}),
        json!({"nom": "ok"}),
    ];
    for body in bad_bodies {
        let (code, resp) = status(&m, Method::POST, tokens, Some(&m.admin_token), Some(body.clone())).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(resp["error"]["code"], "bad_request");
    }
    let (code, _) =
        status(&m, Method::POST, tokens, Some(&m.admin_token), Some(json!({"name": "a".repeat(100_000)})))
            .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, _) =
        status(&m, Method::POST, "/api/v1/accounts", Some(&m.admin_token), Some(json!({"id": "bad id"})))
            .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) =
        status(&m, Method::POST, "/api/v1/accounts", Some(&m.admin_token), Some(json!({"id": "acme"}))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = status(
        &m,
        Method::POST,
        "/api/v1/accounts/nope/tokens",
        Some(&m.admin_token),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = status(
        &m,
        Method::POST,
        "/api/v1/admin-tokens",
        Some(&m.admin_token),
        Some(json!({"name": "s", "scopes": ["root"]})),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) =
        status(&m, Method::POST, tokens, Some(&m.admin_token), Some(json!({"name": "default"}))).await;
    assert_eq!(code, StatusCode::CONFLICT, "names are unique per account");
    assert_eq!(
        status(&m, Method::GET, "/api/v1/rotations/not-a-uuid", Some(&m.admin_token), None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(&m, Method::POST, "/api/v1/delegates/x/ping", Some(&m.admin_token), Some(json!({}))).await.0,
        StatusCode::BAD_REQUEST
    );
    let after: Vec<Value> = m.get("/api/v1/accounts/acme/tokens").await;
    assert_eq!(before.len(), after.len());
    let audit_after: Vec<Value> = m.get("/api/v1/audit?limit=1000").await;
    assert_eq!(audit_before.len(), audit_after.len(), "no change was recorded");
    m.stop().await;
}

#[tokio::test]
async fn delete_only_after_revoke_and_everything_is_audited() {
    let m = Manager::start(|_| {}).await;
    let (id, _) = m.create_token(json!({"name": "temp"})).await;
    let path = format!("/api/v1/accounts/acme/tokens/{id}");
    let (code, body) = status(&m, Method::DELETE, &path, Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoke"));
    let _: Value = m.post(&format!("{path}/revoke"), json!({})).await;
    // Revoking twice is harmless.
    let again: Value = m.post(&format!("{path}/revoke"), json!({})).await;
    assert_eq!(again["token"]["state"], "revoked");
    assert_eq!(status(&m, Method::DELETE, &path, Some(&m.admin_token), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(status(&m, Method::GET, &path, Some(&m.admin_token), None).await.0, StatusCode::NOT_FOUND);

    let audit: Vec<Value> = m.get("/api/v1/audit").await;
    let actions: Vec<&str> = audit.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(&actions[..3], ["token.delete", "token.revoke", "token.create"], "newest first, one revoke");
    assert_eq!(audit[0]["actor"], "admin:init-admin");
    assert_eq!(audit[0]["source_ip"], "127.0.0.1");
    assert!(audit[0]["target"].as_str().unwrap().contains(&id));
    assert!(actions.contains(&"account.create"), "init is audited");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&m.admin_token) && !text.contains(&m.default_token));
    m.stop().await;
}

#[tokio::test]
async fn accounts_have_a_default_token() {
    let m = Manager::start(|_| {}).await;
    let created: Value = m.post("/api/v1/accounts", json!({"id": "beta", "name": "Beta Corp"})).await;
    assert_eq!(created["account"]["id"], "beta");
    assert_eq!(created["default_token"]["token"]["name"], "default");
    let value = created["default_token"]["value"].as_str().unwrap();
    assert!(value.starts_with("tdt_") && value.len() == 74);
    let accounts: Vec<Value> = m.get("/api/v1/accounts").await;
    assert_eq!(accounts.len(), 2);
    let shown: Value = m.get("/api/v1/accounts/beta").await;
    assert_eq!(shown["name"], "Beta Corp");
    m.stop().await;
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let m = Manager::start(|_| {}).await;
    let (code, doc) = status(&m, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    let mut routes: Vec<(String, String)> =
        tether_manager::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes, "every route documented, nothing documented that is not routed");
    // Every documented operation is really routed (not 404/405) and every $ref resolves.
    for (method, path) in &routes {
        if path.ends_with("/connect") {
            continue;
        }
        let concrete = path
            .replace("{account}", "acme")
            .replace("{token}", "default")
            .replace("{rotation_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{session_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{admin_token}", "nope")
            .replace("{restriction}", "nope");
        let (code, _) =
            status(&m, method.to_uppercase().parse().unwrap(), &concrete, None, Some(json!({}))).await;
        assert!(
            code != StatusCode::NOT_FOUND && code != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} → {code}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    m.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let m = Manager::start(|_| {}).await;
    assert_eq!(status(&m, Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(status(&m, Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    let _d = connect(&m, &m.default_token, uuid::Uuid::new_v4(), "x").await.unwrap();
    let (_, metrics) = status(&m, Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("tether_sessions 1"), "{metrics}");
    assert!(metrics.contains("tether_handshakes_total{outcome=\"ok\"} 1"), "{metrics}");
    assert!(!metrics.contains(&m.default_token_id), "no token ids in labels");
    m.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The admin access model
// ---------------------------------------------------------------------------------------------
