//! The REST API over real TLS: admin authentication and scopes, hostile input that changes
//! nothing, delete-only-after-revoke, the audit log, the OpenAPI document matching the routes,
//! and the admin access model: account-bound tokens, endpoint restrictions, no escalation
//! through token creation, and the lockout after failed admin authentication.
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn http(m: &Manager) -> reqwest::Client {
    let tls = tether_manager::tls::client_config(&m.ca).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

async fn status(
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

async fn admin_token(m: &Manager, body: Value) -> String {
    let v: Value = m.post("/api/v1/admin-tokens", body).await;
    v["value"].as_str().unwrap().to_owned()
}

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

/// One call from the loopback source address `source` (127.0.0.x); status, headers and body.
async fn call_from(
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

fn lo(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}

/// Creates an admin token with the init token; returns (value, the created token's JSON).
async fn created_admin(m: &Manager, body: Value) -> (String, Value) {
    let (code, v) =
        status(m, Method::POST, "/api/v1/admin-tokens", Some(&m.admin_token), Some(body.clone())).await;
    assert_eq!(code, StatusCode::CREATED, "{body} → {v}");
    (v["value"].as_str().unwrap().to_owned(), v["admin_token"].clone())
}

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_account_bound_admin_token_acts_on_its_own_account_only() {
    let m = Manager::start(|_| {}).await;
    let beta: Value = m.post("/api/v1/accounts", json!({"id": "beta"})).await;
    let beta_default = beta["default_token"]["token"]["id"].as_str().unwrap().to_owned();
    let beta_value = beta["default_token"]["value"].as_str().unwrap().to_owned();
    let (spare, _) = {
        let v: Value = m.post("/api/v1/accounts/beta/tokens", json!({"name": "spare"})).await;
        (v["token"]["id"].as_str().unwrap().to_owned(), ())
    };
    let rotation: Value = m.post(&format!("/api/v1/accounts/beta/tokens/{spare}/rotate"), json!({})).await;
    let beta_rotation = rotation["rotation_id"].as_str().unwrap().to_owned();
    let (_, beta_ops) =
        created_admin(&m, json!({"name": "beta-ops", "scopes": ["admin"], "account": "beta"})).await;
    assert_eq!(beta_ops["account_id"], "beta");
    let (bound, acme_ops) =
        created_admin(&m, json!({"name": "acme-ops", "scopes": ["admin"], "account": "acme"})).await;
    assert_eq!(acme_ops["account_id"], "acme");

    // A live delegate in each account.
    let ws = open_ws(&m.ws_url(), &m.ca).await;
    let beta_token = tether_protocol::Token::parse(&beta_value).unwrap();
    let beta_d = handshake_on(ws, "beta", &beta_token, uuid::Uuid::new_v4(), "beta-runner").await.unwrap();
    let beta_session = beta_d.welcome.session_id.to_string();
    let beta_task = beta_d.serve_tasks();
    let acme_d = connect(&m, &m.default_token, uuid::Uuid::new_v4(), "acme-runner").await.unwrap();
    let acme_session = acme_d.welcome.session_id.to_string();
    let acme_task = acme_d.serve_tasks();
    let live: Vec<Value> = m.get("/api/v1/delegates").await;
    assert_eq!(live.len(), 2);

    let b = Some(bound.as_str());
    // Another account, existing or not, is 404 with the same message.
    for (method, path, body) in [
        (Method::GET, "/api/v1/accounts/beta".to_owned(), None),
        (Method::GET, "/api/v1/accounts/beta/tokens".to_owned(), None),
        (Method::POST, "/api/v1/accounts/beta/tokens".to_owned(), Some(json!({"name": "sneaky"}))),
        (Method::GET, format!("/api/v1/accounts/beta/tokens/{beta_default}"), None),
        (Method::POST, format!("/api/v1/accounts/beta/tokens/{beta_default}/revoke"), Some(json!({}))),
        (Method::POST, format!("/api/v1/accounts/beta/tokens/{beta_default}/rotate"), Some(json!({}))),
        (Method::DELETE, format!("/api/v1/accounts/beta/tokens/{beta_default}"), None),
    ] {
        let (code, v) = status(&m, method.clone(), &path, b, body).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{method} {path} → {v}");
        assert_eq!(message(&v), "account `beta` not found", "{method} {path}");
    }
    let (code, v) = status(&m, Method::GET, "/api/v1/accounts/nope/tokens", b, None).await;
    assert_eq!((code, message(&v)), (StatusCode::NOT_FOUND, "account `nope` not found".to_owned()));
    for (method, path) in [
        (Method::GET, format!("/api/v1/rotations/{beta_rotation}")),
        (Method::DELETE, format!("/api/v1/delegates/{beta_session}")),
        (Method::POST, format!("/api/v1/delegates/{beta_session}/ping")),
        (Method::POST, "/api/v1/admin-tokens/beta-ops/revoke".to_owned()),
        (Method::POST, format!("/api/v1/admin-tokens/{}/revoke", beta_ops["id"].as_str().unwrap())),
    ] {
        let (code, v) = status(&m, method.clone(), &path, b, Some(json!({}))).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{method} {path} → {v}");
    }
    // Cluster-wide operations are refused outright.
    for (method, path, body) in [
        (Method::POST, "/api/v1/accounts", Some(json!({"id": "gamma"}))),
        (Method::GET, "/api/v1/audit", None),
        (Method::GET, "/api/v1/restrictions", None),
        (Method::POST, "/api/v1/restrictions", Some(json!({"name": "r", "allow": ["GET /api/v1/accounts"]}))),
    ] {
        let (code, v) = status(&m, method.clone(), path, b, body).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{method} {path} → {v}");
        assert!(message(&v).contains("bound to account `acme`"), "{v}");
    }
    // Lists are filtered to its account.
    let (_, accounts) = status(&m, Method::GET, "/api/v1/accounts", b, None).await;
    assert_eq!(accounts.as_array().unwrap().len(), 1);
    assert_eq!(accounts[0]["id"], "acme");
    let (_, rotations) = status(&m, Method::GET, "/api/v1/rotations", b, None).await;
    assert_eq!(rotations, json!([]));
    for path in ["/api/v1/delegates", "/api/v1/delegates?account=beta", "/api/v1/delegates?account=acme"] {
        let (code, list) = status(&m, Method::GET, path, b, None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(list.as_array().unwrap().iter().all(|d| d["account_id"] == "acme"), "{path}: {list}");
    }
    let (_, list) = status(&m, Method::GET, "/api/v1/delegates", b, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, admins) = status(&m, Method::GET, "/api/v1/admin-tokens", b, None).await;
    let names: Vec<&str> = admins.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme-ops"]);

    // Its own account works as before.
    assert_eq!(status(&m, Method::GET, "/api/v1/accounts/acme", b, None).await.0, StatusCode::OK);
    let (code, _) =
        status(&m, Method::POST, "/api/v1/accounts/acme/tokens", b, Some(json!({"name": "mine"}))).await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, pong) =
        status(&m, Method::POST, &format!("/api/v1/delegates/{acme_session}/ping"), b, Some(json!({}))).await;
    assert_eq!(code, StatusCode::OK, "{pong}");
    assert_eq!(pong["payload"], "ping");

    // Nothing of beta changed.
    let tokens: Vec<Value> = m.get("/api/v1/accounts/beta/tokens").await;
    assert_eq!(tokens.len(), 3, "default, spare~…, spare");
    assert!(tokens.iter().filter(|t| t["id"] == beta_default.as_str()).all(|t| t["state"] == "active"));
    let live: Vec<Value> = m.get("/api/v1/delegates?account=beta").await;
    assert_eq!(live.len(), 1, "beta's delegate is still connected");
    let admins: Vec<Value> = m.get("/api/v1/admin-tokens").await;
    assert!(admins.iter().any(|t| t["name"] == "beta-ops" && t["revoked_at"].is_null()));
    let accounts: Vec<Value> = m.get("/api/v1/accounts").await;
    assert_eq!(accounts.len(), 2, "no account was created");
    beta_task.abort();
    acme_task.abort();
    m.stop().await;
}

#[tokio::test]
async fn a_restricted_admin_token_makes_only_the_requests_its_restriction_allows() {
    let m = Manager::start(|_| {}).await;
    let admin = Some(m.admin_token.as_str());
    let created: Value = m
        .post(
            "/api/v1/restrictions",
            json!({"name": "read-tokens", "allow": [
                "GET /api/v1/accounts/{account}/tokens",
                "GET /api/v1/accounts/acme/tokens/*",
                "GET  /api/v1/accounts/*/tokens",
            ]}),
        )
        .await;
    assert_eq!(
        created["allow"],
        json!(["GET /api/v1/accounts/*/tokens", "GET /api/v1/accounts/acme/tokens/*"])
    );
    let too_many = vec!["GET /api/v1/accounts"; 65];
    for bad in [
        json!({"name": "r", "allow": []}),
        json!({"name": "r", "allow": ["GET /healthz"]}),
        json!({"name": "r", "allow": ["TRACE /api/v1/accounts"]}),
        json!({"name": "r", "allow": ["GET /api/v1/accounts/../audit"]}),
        json!({"name": "r", "allow": ["GET /api/v1/accounts\u{7}"]}),
        json!({"name": "r", "allow": ["GET /api/v1/nothing"]}),
        json!({"name": "r", "allow": ["GET /api/v1/accounts?limit=1"]}),
        json!({"name": "r", "allow": [format!("GET /api/v1/accounts/{}", "a".repeat(300))]}),
        json!({"name": "r", "allow": too_many}),
        json!({"name": "bad name", "allow": ["GET /api/v1/accounts"]}),
        json!({"name": "r"}),
    ] {
        let (code, v) = status(&m, Method::POST, "/api/v1/restrictions", admin, Some(bad.clone())).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad} → {v}");
    }
    let (code, _) = status(
        &m,
        Method::POST,
        "/api/v1/restrictions",
        admin,
        Some(json!({"name": "read-tokens", "allow": ["GET /api/v1/accounts"]})),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, v) = status(
        &m,
        Method::POST,
        "/api/v1/admin-tokens",
        admin,
        Some(json!({"name": "x", "scopes": ["admin"], "restriction": "ghost"})),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");

    let (reader, dto) =
        created_admin(&m, json!({"name": "reader", "scopes": ["admin"], "restriction": "read-tokens"})).await;
    assert_eq!(dto["restriction"], "read-tokens");
    let r = Some(reader.as_str());
    assert_eq!(status(&m, Method::GET, "/api/v1/accounts/acme/tokens", r, None).await.0, StatusCode::OK);
    assert_eq!(
        status(&m, Method::GET, "/api/v1/accounts/acme/tokens/default", r, None).await.0,
        StatusCode::OK
    );
    let (code, v) =
        status(&m, Method::POST, "/api/v1/accounts/acme/tokens", r, Some(json!({"name": "x"}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        message(&v),
        "this admin token's endpoint restriction `read-tokens` does not allow POST /api/v1/accounts/acme/tokens"
    );
    for (method, path) in [
        (Method::GET, "/api/v1/accounts"),
        (Method::GET, "/api/v1/accounts/acme"),
        (Method::POST, "/api/v1/accounts/acme/tokens/default/revoke"),
        (Method::DELETE, "/api/v1/accounts/acme/tokens/default"),
        (Method::GET, "/api/v1/accounts/acme/tokens/default/x"),
        (Method::GET, "/api/v1/admin-tokens"),
        (Method::POST, "/api/v1/admin-tokens"),
        (Method::GET, "/api/v1/audit"),
        (Method::GET, "/api/v1/rotations"),
        (Method::GET, "/api/v1/delegates"),
        (Method::GET, "/api/v1/restrictions"),
    ] {
        let (code, v) =
            status(&m, method.clone(), path, r, Some(json!({"name": "x", "scopes": ["admin"]}))).await;
        assert!(
            code == StatusCode::FORBIDDEN || code == StatusCode::NOT_FOUND,
            "{method} {path} → {code} {v}"
        );
    }
    let tokens: Vec<Value> = m.get("/api/v1/accounts/acme/tokens").await;
    assert_eq!(tokens.len(), 1, "nothing was created");
    assert_eq!(tokens[0]["state"], "active", "nothing was revoked");

    // A restriction in use cannot be deleted; once its tokens are revoked it can.
    let (code, v) = status(&m, Method::DELETE, "/api/v1/restrictions/read-tokens", admin, None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    let _: Value = m.post("/api/v1/admin-tokens/reader/revoke", json!({})).await;
    assert_eq!(
        status(&m, Method::DELETE, "/api/v1/restrictions/read-tokens", admin, None).await.0,
        StatusCode::NO_CONTENT
    );
    let list: Vec<Value> = m.get("/api/v1/restrictions").await;
    assert!(list.is_empty());
    let audit: Vec<Value> = m.get("/api/v1/audit").await;
    let actions: Vec<&str> = audit.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"restriction.create") && actions.contains(&"restriction.delete"),
        "{actions:?}"
    );
    m.stop().await;
}

#[tokio::test]
async fn an_admin_token_never_creates_one_with_more_power_than_its_own() {
    let m = Manager::start(|_| {}).await;
    let _: Value = m.post("/api/v1/accounts", json!({"id": "beta"})).await;
    let post = |bearer: String, body: Value| {
        let m = &m;
        async move { status(m, Method::POST, "/api/v1/admin-tokens", Some(&bearer), Some(body)).await }
    };

    // Scopes: only an `admin` token manages admin tokens, so a narrower one cannot mint any.
    let (writer, _) = created_admin(&m, json!({"name": "writer", "scopes": ["tokens:write"]})).await;
    let (code, v) = post(writer.clone(), json!({"name": "w2", "scopes": ["tokens:read"]})).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");

    // Account binding, expiry and CIDRs of a bound creator.
    let (bound, b) = created_admin(
        &m,
        json!({"name": "acme-admin", "scopes": ["admin"], "account": "acme", "expires_in_secs": 3600,
               "allowed_cidrs": ["127.0.0.0/8"]}),
    )
    .await;
    let (code, child) = post(bound.clone(), json!({"name": "c1", "scopes": ["tokens:read"]})).await;
    assert_eq!(code, StatusCode::CREATED, "{child}");
    let c = &child["admin_token"];
    assert_eq!(c["account_id"], "acme", "the binding is inherited");
    assert_eq!(c["expires_at"], b["expires_at"], "the expiry is inherited");
    assert_eq!(c["allowed_cidrs"], json!(["127.0.0.0/8"]), "the CIDRs are inherited");
    for (body, needle) in [
        (json!({"name": "e1", "scopes": ["admin"], "account": "beta"}), "bound to account `acme`"),
        (json!({"name": "e2", "scopes": ["admin"], "expires_in_secs": 7200}), "expires at"),
        (json!({"name": "e3", "scopes": ["admin"], "allowed_cidrs": ["10.0.0.0/8"]}), "127.0.0.0/8"),
        (json!({"name": "e4", "scopes": ["admin"], "allowed_cidrs": ["0.0.0.0/0"]}), "127.0.0.0/8"),
    ] {
        let (code, v) = post(bound.clone(), body.clone()).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body} → {v}");
        assert!(message(&v).contains(needle), "{body} → {v}");
    }
    let (code, v) = post(
        bound.clone(),
        json!({"name": "c2", "scopes": ["admin"], "account": "acme", "expires_in_secs": 60,
               "allowed_cidrs": ["127.0.0.1/32"]}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    // The child cannot climb back up either.
    let c2 = v["value"].as_str().unwrap().to_owned();
    let (code, _) =
        post(c2.clone(), json!({"name": "c3", "scopes": ["admin"], "expires_in_secs": 3000})).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _) = post(c2, json!({"name": "c4", "scopes": ["admin"], "account": "beta"})).await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    // Restriction: same one only (and another's existence is not revealed).
    let _: Value =
        m.post("/api/v1/restrictions", json!({"name": "minting", "allow": ["* /api/v1/admin-tokens"]})).await;
    let _: Value =
        m.post("/api/v1/restrictions", json!({"name": "other", "allow": ["GET /api/v1/accounts"]})).await;
    let (minter, _) =
        created_admin(&m, json!({"name": "minter", "scopes": ["admin"], "restriction": "minting"})).await;
    let (code, v) = post(minter.clone(), json!({"name": "m1", "scopes": ["admin"]})).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["admin_token"]["restriction"], "minting", "the restriction is inherited");
    let (code, v) =
        post(minter.clone(), json!({"name": "m2", "scopes": ["admin"], "restriction": "minting"})).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    for wanted in ["other", "ghost"] {
        let (code, v) =
            post(minter.clone(), json!({"name": "m3", "scopes": ["admin"], "restriction": wanted})).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{wanted}: {v}");
        assert!(message(&v).contains("same restriction"), "{v}");
    }

    // The operator's own (unbound, unrestricted, unexpiring) token may grant anything.
    let (code, v) = post(
        m.admin_token.clone(),
        json!({"name": "u1", "scopes": ["admin"], "account": "beta", "restriction": "other", "expires_in_secs": 99999}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let listed: Vec<Value> = m.get("/api/v1/admin-tokens").await;
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for refused in ["w2", "e1", "e2", "e3", "e4", "c3", "c4", "m3"] {
        assert!(!names.contains(&refused), "{refused} was created: {names:?}");
    }
    m.stop().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn failed_admin_authentication_locks_the_source_address_out() {
    let m = Manager::start(|_| {}).await; // defaults: 5 failures in 15 minutes lock out for 15
    let path = "/api/v1/accounts";
    let (revoked, _) = created_admin(&m, json!({"name": "old", "scopes": ["admin"]})).await;
    let _: Value = m.post("/api/v1/admin-tokens/old/revoke", json!({})).await;
    let (brief, _) =
        created_admin(&m, json!({"name": "brief", "scopes": ["admin"], "expires_in_secs": 1})).await;
    // Wait for the expiry from another address than the attacker's.
    eventually("the brief admin token to expire", || async {
        let (code, _, _) = call_from(&m, lo(5), Method::GET, path, Some(&brief), None).await;
        (code == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    let attacker = lo(3);
    let unknown = format!("tat_{}", "A".repeat(43));
    let unknown2 = format!("tat_{}", "B".repeat(43));
    for bad in [unknown.as_str(), "nope", revoked.as_str(), brief.as_str(), unknown2.as_str()] {
        let (code, _, v) = call_from(&m, attacker, Method::GET, path, Some(bad), None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (code, headers, v) = call_from(&m, attacker, Method::GET, path, Some(&unknown), None).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "the sixth bad token: {v}");
    assert_eq!(v["error"]["code"], "locked_out");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((880..=900).contains(&retry), "Retry-After {retry}");
    // The good token from the locked address is refused too, before any lookup.
    let (code, headers, _) = call_from(&m, attacker, Method::GET, path, Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "a good token does not end the lockout");
    assert!(headers.contains_key("retry-after"));
    // Another address is not affected, bad or good.
    let (code, _, _) = call_from(&m, lo(4), Method::GET, path, Some(&unknown), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = call_from(&m, lo(4), Method::GET, path, Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::OK);

    // last_used_at records successes only.
    let listed: Vec<Value> = m.get("/api/v1/admin-tokens").await;
    let old = listed.iter().find(|t| t["name"] == "old").unwrap();
    assert!(old["last_used_at"].is_null(), "revoked before any successful use: {old}");
    let brief = listed.iter().find(|t| t["name"] == "brief").unwrap();
    let used = brief["last_used_at"].as_u64().unwrap_or(0);
    assert!(used < brief["expires_at"].as_u64().unwrap(), "uses after the expiry are not recorded: {brief}");
    let init = listed.iter().find(|t| t["name"] == "init-admin").unwrap();
    assert!(init["last_used_at"].is_u64());

    let (_, metrics) = status(&m, Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert_eq!(metric(&metrics, "tether_admin_auth_failures_total{reason=\"unknown\"}"), 3, "{metrics}");
    assert_eq!(metric(&metrics, "tether_admin_auth_failures_total{reason=\"malformed\"}"), 1);
    assert_eq!(metric(&metrics, "tether_admin_auth_failures_total{reason=\"revoked\"}"), 1);
    assert_eq!(metric(&metrics, "tether_admin_auth_failures_total{reason=\"expired\"}"), 2);
    assert_eq!(metric(&metrics, "tether_admin_auth_lockouts_total"), 1);
    assert_eq!(metric(&metrics, "tether_admin_auth_locked_requests_total"), 2);
    assert!(!metrics.contains(&m.admin_token) && !metrics.contains("127.0.0.3"), "no secrets or addresses");
    m.stop().await;
}

#[tokio::test]
async fn an_admin_lockout_ends_after_its_time() {
    let m = Manager::start(|c| {
        c.admin_auth_fail_limit = 2;
        c.admin_auth_lockout_secs = 2;
    })
    .await;
    let path = "/api/v1/accounts";
    for _ in 0..2 {
        assert_eq!(
            call_from(&m, lo(6), Method::GET, path, Some("tat_x"), None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (code, headers, _) = call_from(&m, lo(6), Method::GET, path, Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    eventually("the lockout to end", || async {
        let (code, _, _) = call_from(&m, lo(6), Method::GET, path, Some(&m.admin_token), None).await;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_from_one_address_get_no_more_than_the_limit() {
    let m = Manager::start(|_| {}).await;
    let tls = tether_manager::tls::client_config(&m.ca).unwrap();
    let client = |n: u8| {
        reqwest::Client::builder().use_preconfigured_tls(tls.clone()).local_address(lo(n)).build().unwrap()
    };
    let send = |c: reqwest::Client, bearer: String| {
        let url = format!("{}/api/v1/accounts", m.url());
        tokio::spawn(async move { c.get(url).bearer_auth(bearer).send().await.unwrap().status() })
    };
    let guesser = client(9);
    // Warm 60 connections first (no credentials: refused, not counted) so that the guesses
    // below arrive together rather than one TLS handshake apart.
    let warm: Vec<_> = (0..60)
        .map(|_| {
            let (c, url) = (guesser.clone(), format!("{}/api/v1/accounts", m.url()));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
        })
        .collect();
    for w in warm {
        assert_eq!(w.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let guesses: Vec<_> = (0..60).map(|i| send(guesser.clone(), format!("tat_{i:0>43}"))).collect();
    let mut unauthorized = 0;
    for g in guesses {
        match g.await.unwrap() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a guess got {other}"),
        }
    }
    assert_eq!(unauthorized, 5, "at most the limit of guesses is ever looked up, however concurrent");
    // An honest client's parallel requests from another address queue for a slot; none is refused.
    let honest = client(10);
    let calls: Vec<_> = (0..20).map(|_| send(honest.clone(), m.admin_token.clone())).collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    m.stop().await;
}

/// Issue 17, finding 1: the last active admin token that can manage everything (unbound,
/// unrestricted, scope `admin`) is not revoked, not even by itself, so the API cannot lock
/// every operator out; with a second one, either may go.
#[tokio::test]
async fn the_last_operator_admin_token_cannot_be_revoked() {
    let m = Manager::start(|_| {}).await;
    let list = "/api/v1/admin-tokens";
    let (code, body) =
        status(&m, Method::POST, "/api/v1/admin-tokens/init-admin/revoke", Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("last active admin token") && message.contains("--offline"), "{message}");
    assert_eq!(
        status(&m, Method::GET, list, Some(&m.admin_token), None).await.0,
        StatusCode::OK,
        "still works"
    );

    // Tokens that cannot manage everything do not count as a way back in.
    let (_, acme_admin) =
        created_admin(&m, json!({"name": "acme-admin", "scopes": ["admin"], "account": "acme"})).await;
    let _: Value =
        m.post("/api/v1/restrictions", json!({"name": "ro", "allow": ["GET /api/v1/accounts"]})).await;
    let _ = created_admin(&m, json!({"name": "limited", "scopes": ["admin"], "restriction": "ro"})).await;
    let _ = created_admin(&m, json!({"name": "writer", "scopes": ["tokens:write"]})).await;
    let (code, _) =
        status(&m, Method::POST, "/api/v1/admin-tokens/init-admin/revoke", Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "bound, restricted and narrower tokens are no way back in");
    assert!(acme_admin["id"].is_string());

    // With a second operator token, the first may revoke itself; then the second is the last.
    let (second, _) = created_admin(&m, json!({"name": "second", "scopes": ["admin"]})).await;
    let (code, body) =
        status(&m, Method::POST, "/api/v1/admin-tokens/init-admin/revoke", Some(&m.admin_token), None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body["revoked_at"].is_u64());
    let (code, _) = status(&m, Method::POST, "/api/v1/admin-tokens/second/revoke", Some(&second), None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(status(&m, Method::GET, list, Some(&second), None).await.0, StatusCode::OK);
    // Re-revoking the revoked one is still the idempotent 200.
    let (code, _) =
        status(&m, Method::POST, "/api/v1/admin-tokens/init-admin/revoke", Some(&second), None).await;
    assert_eq!(code, StatusCode::OK);
}

/// Issue 17, finding 8: `last_used_at` records successful authentications only: a request
/// with a revoked or expired admin token, or from outside its allowed CIDRs, leaves it as it was.
#[tokio::test]
async fn rejected_admin_requests_do_not_move_last_used() {
    let m = Manager::start(|c| c.admin_auth_fail_limit = 1_000).await;
    let path = "/api/v1/accounts";
    let last_used = |name: &'static str| {
        let m = &m;
        async move {
            let list: Value = m.get("/api/v1/admin-tokens").await;
            list.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["last_used_at"].clone()
        }
    };
    let (foreign, _) =
        created_admin(&m, json!({"name": "foreign", "scopes": ["admin"], "allowed_cidrs": ["10.0.0.0/8"]}))
            .await;
    assert_eq!(status(&m, Method::GET, path, Some(&foreign), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_used("foreign").await, Value::Null, "a request from a disallowed address");

    let (gone, _) = created_admin(&m, json!({"name": "gone", "scopes": ["admin"]})).await;
    let _: Value = m.post("/api/v1/admin-tokens/gone/revoke", json!({})).await;
    assert_eq!(status(&m, Method::GET, path, Some(&gone), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(last_used("gone").await, Value::Null, "a request with a revoked token");

    let (brief, row) =
        created_admin(&m, json!({"name": "brief", "scopes": ["admin"], "expires_in_secs": 1})).await;
    let expires_at = row["expires_at"].as_u64().unwrap();
    // Wait on the clock, not the token: a use before the expiry would be a success.
    eventually("the brief token's expiry to pass", || async {
        (tether_manager::clock::now_unix() > expires_at).then_some(())
    })
    .await;
    assert_eq!(status(&m, Method::GET, path, Some(&brief), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(last_used("brief").await, Value::Null, "a request with an expired token");

    // A request outside the token's endpoint restriction is refused and not recorded either.
    let _: Value = m
        .post("/api/v1/restrictions", json!({"name": "delegates-only", "allow": ["GET /api/v1/delegates"]}))
        .await;
    let (narrow, _) =
        created_admin(&m, json!({"name": "narrow", "scopes": ["admin"], "restriction": "delegates-only"}))
            .await;
    assert_eq!(status(&m, Method::GET, path, Some(&narrow), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_used("narrow").await, Value::Null, "a request outside the restriction");
    assert_eq!(status(&m, Method::GET, "/api/v1/delegates", Some(&narrow), None).await.0, StatusCode::OK);
    assert!(last_used("narrow").await.is_u64(), "a request the restriction allows");

    // A success does record it.
    let (ok, _) = created_admin(&m, json!({"name": "ok", "scopes": ["admin"]})).await;
    assert_eq!(status(&m, Method::GET, path, Some(&ok), None).await.0, StatusCode::OK);
    assert!(last_used("ok").await.is_u64());
}
