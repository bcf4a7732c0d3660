//! The admin access model against the real manager binary over TLS. An admin token bound to
//! one account is aimed at every route of the manager's own OpenAPI document with another
//! account's ids (its account, token, rotation, live session, admin token): every route that
//! touches the other account answers 403 or 404, every list leaves the other account out, it
//! cannot create accounts or admin tokens beyond its power, and nothing of the other account
//! changes. The CLI creates restrictions and account-bound, restricted admin tokens, and such a
//! token is refused outside them.
use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_protocol::Token;
use tether_tests::attack::{handshake, Answer};
use tether_tests::harness::{api_call, poll, Manager};

/// What a bound token must get on a route without path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 200, and nothing of the other account in the answer.
    Filtered,
    /// 403 or 404.
    Refused,
}

/// The expectation for every route without path parameters; a new route must be added here.
fn parameterless(method: &str, path: &str) -> Option<(Expect, Value)> {
    Some(match (method, path) {
        ("get", "/api/v1/accounts") => (Expect::Filtered, Value::Null),
        ("post", "/api/v1/accounts") => (Expect::Refused, json!({"id": "walk-created"})),
        ("get", "/api/v1/rotations") => (Expect::Filtered, Value::Null),
        ("get", "/api/v1/delegates") => (Expect::Filtered, Value::Null),
        ("get", "/api/v1/admin-tokens") => (Expect::Filtered, Value::Null),
        // Beyond its power: an admin token for the other account.
        ("post", "/api/v1/admin-tokens") => {
            (Expect::Refused, json!({"name": "walk-admin", "scopes": ["admin"], "account": "beta"}))
        }
        ("get", "/api/v1/restrictions") => (Expect::Refused, Value::Null),
        ("post", "/api/v1/restrictions") => {
            (Expect::Refused, json!({"name": "walk-restriction", "allow": ["GET /api/v1/accounts"]}))
        }
        ("get", "/api/v1/audit") => (Expect::Refused, Value::Null),
        ("get", "/api/v1/replicas") => (Expect::Refused, Value::Null),
        _ => return None,
    })
}

/// A body that an unbound token would get accepted, so a refusal is the binding's doing.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", p) if p.ends_with("/tokens") => Some(json!({"name": "walk-token"})),
        ("post", p) if p.ends_with("/rotate") => Some(json!({"grace_secs": 60})),
        ("post", p) if p.ends_with("/ping") => Some(json!({"payload": "walk"})),
        ("post", _) => Some(json!({})),
        ("patch", p) if p.ends_with("/tokens/{token}") => Some(json!({"rotation_policy": null})),
        _ => None,
    }
}

/// The routes anyone may call without an admin token.
const PUBLIC: &[&str] =
    &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/delegates/connect"];

async fn ok(m: &Manager, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = m.api(method.clone(), path, body).await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

/// What of `account` an unbound admin can see: its tokens, live sessions, bound admin tokens.
async fn snapshot(m: &Manager, account: &str) -> Value {
    let tokens = ok(m, Method::GET, &format!("/api/v1/accounts/{account}/tokens"), None).await;
    let tokens: Vec<Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["id"], t["name"], t["state"], t["expires_at"], t["revoked_at"]]))
        .collect();
    let sessions = ok(m, Method::GET, &format!("/api/v1/delegates?account={account}"), None).await;
    let sessions: Vec<Value> = sessions.as_array().unwrap().iter().map(|s| s["session_id"].clone()).collect();
    let admins = ok(m, Method::GET, "/api/v1/admin-tokens", None).await;
    let admins: Vec<Value> = admins
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["account_id"] == account)
        .map(|t| json!([t["id"], t["revoked_at"]]))
        .collect();
    json!({"tokens": tokens, "sessions": sessions, "admins": admins})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_admin_token_is_refused_on_every_route_that_touches_another_account() {
    let m = Manager::start(&[]).await.unwrap();
    let own = m.init.account_id.clone();
    assert_ne!(own, "beta");

    // The other account and one object of each kind in it.
    let beta = ok(&m, Method::POST, "/api/v1/accounts", Some(json!({"id": "beta"}))).await;
    let beta_token = Token::parse(beta["default_token"]["value"].as_str().unwrap()).unwrap();
    let spare = m.create_token("beta", "spare", json!({})).await.unwrap();
    let rotated =
        ok(&m, Method::POST, &format!("/api/v1/accounts/beta/tokens/{}/rotate", spare.id()), Some(json!({})))
            .await;
    let rotation_id = rotated["rotation_id"].as_str().unwrap().to_owned();
    // With no live delegate on it the rotation finishes by itself; let it, so the snapshot
    // below does not race the old token's revocation.
    poll::until("the rotation of `spare` to finish", Duration::from_secs(10), || async {
        let v = ok(&m, Method::GET, &format!("/api/v1/rotations/{rotation_id}"), None).await;
        Ok((v["state"] != "running").then_some(()))
    })
    .await
    .unwrap();
    let session = match handshake(&m.target().unwrap(), None, "beta", &beta_token).await.unwrap() {
        Answer::Welcome(est) => est,
        other => panic!("beta's delegate could not connect: {}", other.describe()),
    };
    let live = ok(&m, Method::GET, "/api/v1/delegates?account=beta", None).await;
    let session_id = live[0]["session_id"].as_str().unwrap().to_owned();
    let beta_admin = ok(
        &m,
        Method::POST,
        "/api/v1/admin-tokens",
        Some(json!({"name": "beta-ops", "scopes": ["admin"], "account": "beta"})),
    )
    .await;
    let beta_admin_id = beta_admin["admin_token"]["id"].as_str().unwrap().to_owned();
    let _ = ok(
        &m,
        Method::POST,
        "/api/v1/restrictions",
        Some(json!({"name": "shared", "allow": ["GET /api/v1/accounts"]})),
    )
    .await;
    // The token under test: every scope, bound to the first account.
    let bound = ok(
        &m,
        Method::POST,
        "/api/v1/admin-tokens",
        Some(json!({"name": "own-ops", "scopes": ["admin"], "account": own})),
    )
    .await;
    let bound = bound["value"].as_str().unwrap().to_owned();
    let before = snapshot(&m, "beta").await;

    let substitutes: BTreeMap<&str, String> = [
        ("account", "beta".to_owned()),
        ("token", beta_token.id().to_string()),
        ("rotation_id", rotation_id.clone()),
        ("session_id", session_id.clone()),
        ("admin_token", beta_admin_id.clone()),
        ("restriction", "shared".to_owned()),
    ]
    .into_iter()
    .collect();
    let markers = [
        "beta".to_owned(),
        beta_token.id().to_string(),
        spare.id().to_string(),
        rotation_id.clone(),
        session_id.clone(),
        beta_admin_id.clone(),
    ];

    let http = m.http();
    let (status, doc) =
        api_call(&http, &m.url(), Method::GET, "/api/v1/openapi.json", None, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("the document has paths");
    let (mut with_params, mut without, mut public) = (0, 0, 0);
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            if op.get("security").is_none() {
                assert!(
                    PUBLIC.contains(&path.as_str()),
                    "{method} {path} takes no admin token: is that right?"
                );
                public += 1;
                continue;
            }
            let verb: Method = method.to_uppercase().parse().unwrap();
            let mut concrete = path.clone();
            let mut has_params = false;
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_start_matches('{').trim_end_matches('}');
                let value = substitutes.get(name).unwrap_or_else(|| {
                    panic!("{method} {path}: no object of the other account for `{name}`")
                });
                concrete = concrete.replace(seg, value);
                has_params = true;
            }
            if has_params {
                let body = body_for(method, path);
                let (status, v) =
                    api_call(&http, &m.url(), verb.clone(), &concrete, Some(&bound), body).await.unwrap();
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{method} {concrete} with a token bound to `{own}` → {status} {v}"
                );
                with_params += 1;
                continue;
            }
            let (expect, body) = parameterless(method, path)
                .unwrap_or_else(|| panic!("{method} {path}: new route; say what a bound token gets"));
            let body = (!body.is_null()).then_some(body);
            let (status, v) = api_call(&http, &m.url(), verb, path, Some(&bound), body).await.unwrap();
            match expect {
                Expect::Refused => assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{method} {path} → {status} {v}"
                ),
                Expect::Filtered => {
                    assert_eq!(status, StatusCode::OK, "{method} {path}: {v}");
                    let text = v.to_string();
                    for marker in &markers {
                        assert!(!text.contains(marker.as_str()), "{method} {path} shows `{marker}`: {text}");
                    }
                }
            }
            without += 1;
        }
    }
    assert_eq!(public, PUBLIC.len());
    assert!(with_params >= 10 && without >= 9, "walked {with_params} + {without} routes");

    // Asking for the other account's delegates by name yields nothing either.
    let (status, v) =
        api_call(&http, &m.url(), Method::GET, "/api/v1/delegates?account=beta", Some(&bound), None)
            .await
            .unwrap();
    assert_eq!((status, v), (StatusCode::OK, json!([])));
    // Within its power it still works: an admin token for its own account (the binding is
    // inherited when none is named).
    let (status, v) = api_call(
        &http,
        &m.url(),
        Method::POST,
        "/api/v1/admin-tokens",
        Some(&bound),
        Some(json!({"name": "own-child", "scopes": ["tokens:read"]})),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["admin_token"]["account_id"], own.as_str());

    // Nothing of the other account changed, and nothing was created.
    assert_eq!(snapshot(&m, "beta").await, before, "the other account is untouched");
    let accounts = ok(&m, Method::GET, "/api/v1/accounts", None).await.to_string();
    assert!(!accounts.contains("walk-created"));
    let admins = ok(&m, Method::GET, "/api/v1/admin-tokens", None).await.to_string();
    assert!(!admins.contains("walk-admin"));
    let restrictions = ok(&m, Method::GET, "/api/v1/restrictions", None).await.to_string();
    assert!(restrictions.contains("shared") && !restrictions.contains("walk-restriction"));
    drop(session);
}

fn cli(m: &Manager, args: &[&str]) -> (bool, String, String) {
    let out = m.cli(args).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_restrictions_and_bound_restricted_admin_tokens() {
    let m = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await.unwrap();
    let own = m.init.account_id.clone();
    let (ok, _, err) = cli(&m, &["account", "create", "beta"]);
    assert!(ok, "{err}");
    let created = m
        .cli_json(&[
            "restriction",
            "create",
            "read-tokens",
            "--allow",
            "GET /api/v1/accounts/{account}/tokens",
        ])
        .unwrap();
    assert_eq!(created["allow"], json!(["GET /api/v1/accounts/*/tokens"]));
    let (ok, _, err) = cli(&m, &["restriction", "create", "bad", "--allow", "GET /etc/passwd"]);
    assert!(!ok && err.contains("/api/v1/"), "{err}");
    let (ok, table, err) = cli(&m, &["restriction", "list"]);
    assert!(
        ok && table.contains("read-tokens") && table.contains("GET /api/v1/accounts/*/tokens"),
        "{table}{err}"
    );

    let reader = m
        .cli_json(&[
            "admin-token",
            "create",
            "reader",
            "--scope",
            "tokens:read",
            "--account",
            &own,
            "--restriction",
            "read-tokens",
        ])
        .unwrap();
    assert_eq!(reader["admin_token"]["account_id"], own.as_str());
    assert_eq!(reader["admin_token"]["restriction"], "read-tokens");
    let value = reader["value"].as_str().unwrap().to_owned();
    let (ok, table, _) = cli(&m, &["admin-token", "list"]);
    assert!(ok && table.contains("RESTRICTION") && table.contains("read-tokens"), "{table}");

    let (ok, out, err) = cli(&m, &["token", "list", "--account", &own, "--admin-token", &value]);
    assert!(ok && out.contains("default"), "{out}{err}");
    let (ok, _, err) = cli(&m, &["token", "create", "x", "--account", &own, "--admin-token", &value]);
    assert!(!ok && err.contains("restriction `read-tokens` does not allow POST"), "{err}");
    let (ok, _, err) = cli(&m, &["token", "list", "--account", "beta", "--admin-token", &value]);
    assert!(!ok && err.contains("account `beta` not found"), "{err}");
    let (ok, _, err) = cli(&m, &["account", "list", "--admin-token", &value]);
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    assert!(!err.contains(&value), "the CLI never prints the admin token");

    let (ok, _, err) = cli(&m, &["restriction", "delete", "read-tokens"]);
    assert!(!ok && err.contains("revoke them first"), "{err}");
    let (ok, _, err) = cli(&m, &["admin-token", "revoke", "reader"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&m, &["restriction", "delete", "read-tokens"]);
    assert!(ok, "{err}");
}
