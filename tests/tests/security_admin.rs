//! Attacks on the admin API of the real manager over TLS: no token, a malformed or unknown
//! token, a revoked or expired token, a token lacking the scope, a token used from an address
//! outside its allowed CIDRs. Each is refused with 401/403 and changes nothing. Guessing admin
//! tokens from one address locks that address out (429 with `Retry-After`, logged once without
//! the token, counted in the metrics) while other addresses carry on.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_tests::attack::loopback;
use tether_tests::harness::{api_call, poll, Manager};

async fn admin_token(m: &Manager, name: &str, body: Value) -> String {
    let mut req = json!({ "name": name });
    req.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    let (status, v) = m.api(Method::POST, "/api/v1/admin-tokens", Some(req)).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["value"].as_str().expect("created admin token has a value").to_owned()
}

async fn call(
    m: &Manager,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    api_call(&m.http(), &m.url(), method, path, bearer, body).await.unwrap()
}

fn tokens_path(m: &Manager) -> String {
    format!("/api/v1/accounts/{}/tokens", m.init.account_id)
}

async fn token_count(m: &Manager) -> usize {
    let (status, v) = m.api(Method::GET, &tokens_path(m), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_admin_token_are_unauthorized() {
    // Many bad tokens from one address: this test is about the 401s, not the lockout.
    let m = Manager::start(&[("TETHER_ADMIN_AUTH_FAIL_LIMIT", "1000")]).await.unwrap();
    let path = tokens_path(&m);
    let before = token_count(&m).await;
    let create = Some(json!({"name": "x"}));
    let unknown = format!("tat_{}", "A".repeat(43));
    for (what, bearer) in [
        ("no token", None),
        ("empty", Some("")),
        ("malformed", Some("not-a-token")),
        ("unknown", Some(unknown.as_str())),
        ("a delegate token as admin token", Some(m.init.default_token.as_str())),
    ] {
        let (status, body) = call(&m, Method::GET, &path, bearer, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        let (status, _) = call(&m, Method::POST, &path, bearer, create.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} (create)");
    }
    // Another authentication scheme is not a bearer token.
    let resp = m
        .http()
        .get(format!("{}{path}", m.url()))
        .basic_auth("admin", Some(&m.init.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "basic auth");
    assert_eq!(token_count(&m).await, before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_admin_tokens_are_unauthorized() {
    let m = Manager::start(&[]).await.unwrap();
    let path = tokens_path(&m);
    let short = admin_token(&m, "short", json!({"scopes": ["admin"], "expires_in_secs": 1})).await;
    let (status, _) = call(&m, Method::GET, &path, Some(&short), None).await;
    assert_eq!(status, StatusCode::OK, "valid before expiry");
    poll::until("admin token expired", Duration::from_secs(5), || async {
        let (status, _) = call(&m, Method::GET, &path, Some(&short), None).await;
        Ok((status == StatusCode::UNAUTHORIZED).then_some(()))
    })
    .await
    .unwrap();

    let revocable = admin_token(&m, "revocable", json!({"scopes": ["admin"]})).await;
    let (_, list) = m.api(Method::GET, "/api/v1/admin-tokens", None).await.unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "revocable")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    let (status, body) =
        m.api(Method::POST, &format!("/api/v1/admin-tokens/{id}/revoke"), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&m, Method::GET, &path, Some(&revocable), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked admin token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_scope_is_forbidden_and_changes_nothing() {
    let m = Manager::start(&[]).await.unwrap();
    let path = tokens_path(&m);
    let reader = admin_token(&m, "reader", json!({"scopes": ["tokens:read"]})).await;
    let delegates_only = admin_token(&m, "ops", json!({"scopes": ["delegates:read"]})).await;
    let before = token_count(&m).await;

    let (status, _) = call(&m, Method::GET, &path, Some(&reader), None).await;
    assert_eq!(status, StatusCode::OK, "reader may read");
    let (status, body) = call(&m, Method::POST, &path, Some(&reader), Some(json!({"name": "sneaky"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader may not create: {body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let revoke = format!("{path}/{}/revoke", m.default_token().unwrap().id());
    let (status, _) = call(&m, Method::POST, &revoke, Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader may not revoke");
    let (status, _) = call(
        &m,
        Method::POST,
        "/api/v1/admin-tokens",
        Some(&reader),
        Some(json!({"name": "esc", "scopes": ["admin"]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader may not mint an admin token (escalation)");
    let (status, _) = call(&m, Method::GET, "/api/v1/audit", Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader may not read the audit log");

    let (status, _) = call(&m, Method::GET, "/api/v1/delegates", Some(&delegates_only), None).await;
    assert_eq!(status, StatusCode::OK, "delegates:read may list delegates");
    let (status, _) = call(&m, Method::GET, &path, Some(&delegates_only), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "delegates:read may not list tokens");

    assert_eq!(token_count(&m).await, before, "nothing was created");
    let (_, token) =
        m.api(Method::GET, &format!("{path}/{}", m.default_token().unwrap().id()), None).await.unwrap();
    assert_eq!(token["state"], "active", "nothing was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_from_a_disallowed_address_is_forbidden() {
    let m = Manager::start(&[]).await.unwrap();
    let path = tokens_path(&m);
    let pinned =
        admin_token(&m, "pinned", json!({"scopes": ["admin"], "allowed_cidrs": ["127.0.0.3/32"]})).await;
    let from = |n: u8| m.http_from(loopback(n)).unwrap();
    let (status, _) = api_call(&from(3), &m.url(), Method::GET, &path, Some(&pinned), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "from the allowed address");
    let (status, body) = api_call(&from(2), &m.url(), Method::GET, &path, Some(&pinned), None).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "from 127.0.0.2: {body}");
    let (status, _) =
        api_call(&from(2), &m.url(), Method::POST, &path, Some(&pinned), Some(json!({"name": "x"})))
            .await
            .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "create from 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_admin_tokens_locks_the_address_out_and_only_that_address() {
    let m = Manager::start(&[]).await.unwrap(); // defaults: 5 failures per 15 minutes
    let path = tokens_path(&m);
    let guesser = m.http_from(loopback(7)).unwrap();
    let guesses: Vec<String> = (0..6).map(|i| format!("tat_{}{i}", "G".repeat(42))).collect();
    for guess in &guesses[..5] {
        let (status, _) = api_call(&guesser, &m.url(), Method::GET, &path, Some(guess), None).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = guesser.get(format!("{}{path}", m.url())).bearer_auth(&guesses[5]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "the sixth guess");
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    let (status, _) =
        api_call(&guesser, &m.url(), Method::GET, &path, Some(&m.init.admin_token), None).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the real token from the locked address");
    let other = m.http_from(loopback(8)).unwrap();
    let (status, _) =
        api_call(&other, &m.url(), Method::GET, &path, Some(&m.init.admin_token), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "another address is not locked out");

    let (_, metrics) = {
        let resp = m.http().get(format!("{}/metrics", m.url())).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    };
    assert!(metrics.contains("tether_admin_auth_failures_total{reason=\"unknown\"} 5"), "{metrics}");
    assert!(metrics.contains("tether_admin_auth_lockouts_total 1"), "{metrics}");
    assert!(metrics.contains("tether_admin_auth_locked_requests_total 2"), "{metrics}");
    let logs = poll::until("the lockout in the manager's log", Duration::from_secs(5), || async {
        let logs = m.logs();
        Ok(logs.contains("locked out").then_some(logs))
    })
    .await
    .unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("locked out")).collect();
    assert_eq!(lines.len(), 1, "one line per lockout: {lines:?}");
    assert!(lines[0].contains("WARN") && lines[0].contains("127.0.0.7"), "{}", lines[0]);
    for secret in guesses.iter().chain([&m.init.admin_token]) {
        assert!(!logs.contains(secret.trim_start_matches("tat_")), "a token reached the log");
    }
}
