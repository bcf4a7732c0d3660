//! Failed admin authentication over real TLS: the per-address lockout (its limit under
//! concurrency, its end), the last operator admin token that cannot be revoked, and
//! `last_used_at` moving only on success.
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

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
