//! The admin access model over real TLS: account-bound tokens act on their own account only,
//! a restricted token makes only the requests its restriction allows, and no admin token
//! creates one with more power than its own.
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

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
