//! The delegate endpoint over loopback with real TLS: handshake, revocation of live sessions,
//! expired and CIDR-restricted tokens, unknown token vs bad tag, rate limiting, deadlines,
//! frame size and heartbeat supervision.
mod common;

use std::time::Instant;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tether_protocol::error::{close, HandshakeError};
use tether_protocol::message::{RevokedReason, S2c};
use tether_protocol::{RejectCode, Token};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

fn rejection(r: &Refused) -> (RejectCode, bool) {
    match &r.error {
        HandshakeError::Rejected(rej) => (rej.code, rej.signed),
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[tokio::test]
async fn create_then_handshake_succeeds_and_is_listed() {
    let m = Manager::start(|c| c.heartbeat_secs = 7).await;
    let (id, value) = m.create_token(json!({"name": "ci"})).await;
    let mut d = connect(&m, &value, Uuid::new_v4(), "runner-1").await.expect("handshake");
    assert_eq!(d.welcome.heartbeat_secs, 7);
    assert_eq!(d.welcome.token_expires_at, None);
    d.heartbeat().await;

    let delegates: Vec<Value> = m.get("/api/v1/delegates").await;
    assert_eq!(delegates.len(), 1);
    assert_eq!(delegates[0]["name"], "runner-1");
    assert_eq!(delegates[0]["token_id"], id.as_str());
    assert_eq!(delegates[0]["session_id"], d.welcome.session_id.to_string());
    assert_eq!(delegates[0]["ip"], "127.0.0.1");

    let tokens: Vec<Value> = m.get("/api/v1/accounts/acme/tokens").await;
    let t = tokens.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(t["live_delegates"], 1);
    assert_eq!(t["state"], "active");
    assert!(t["last_used_at"].as_u64().is_some());
    assert!(t.get("value").is_none(), "list never shows values");

    // The default token from init works too.
    connect(&m, &m.default_token, Uuid::new_v4(), "d").await.expect("default token handshake");
    m.stop().await;
}

#[tokio::test]
async fn revoke_closes_live_sessions_with_signed_revoked_and_refuses_new_ones() {
    let m = Manager::start(|_| {}).await;
    let (id, value) = m.create_token(json!({"name": "doomed"})).await;
    let mut a = connect(&m, &value, Uuid::new_v4(), "a").await.unwrap();
    let mut b = connect(&m, &value, Uuid::new_v4(), "b").await.unwrap();
    let (_, other) = m.create_token(json!({"name": "bystander"})).await;
    let mut c = connect(&m, &other, Uuid::new_v4(), "c").await.unwrap();

    let answered = Instant::now();
    let r: Value = m.post(&format!("/api/v1/accounts/acme/tokens/{id}/revoke"), json!({})).await;
    assert_eq!(r["token"]["state"], "revoked");
    assert_eq!(r["sessions_closed"], 2);
    for d in [&mut a, &mut b] {
        match d.recv().await {
            Ok(S2c::Revoked { token_id, reason, .. }) => {
                assert_eq!(token_id.to_string(), id);
                assert_eq!(reason, RevokedReason::Revoked);
            }
            other => panic!("expected a signed revoked, got {other:?}"),
        }
        assert_eq!(close_code(&mut d.ws).await, Some(close::REVOKED));
    }
    eprintln!("revoke → both sessions closed in {:?}", answered.elapsed());
    // The bystander on another token is untouched.
    c.heartbeat().await;
    let delegates: Vec<Value> = m.get("/api/v1/delegates").await;
    assert_eq!(delegates.len(), 1);

    let refused = connect(&m, &value, Uuid::new_v4(), "a").await.err().expect("revoked token refused");
    assert_eq!(rejection(&refused), (RejectCode::Revoked, true));
    assert!(matches!(&refused.error, HandshakeError::Rejected(r) if r.is_final()));
    assert_eq!(refused.close_code, Some(close::REVOKED));
    m.stop().await;
}

#[tokio::test]
async fn expired_token_is_refused_with_signed_expired() {
    let m = Manager::start(|_| {}).await;
    let (_, value) = m.create_token(json!({"name": "short", "expires_in_secs": 1})).await;
    let refused =
        eventually("the token to expire", || async { connect(&m, &value, Uuid::new_v4(), "x").await.err() })
            .await;
    assert_eq!(rejection(&refused), (RejectCode::Expired, true));
    assert_eq!(refused.close_code, Some(close::EXPIRED));
    let t: Value = m.get("/api/v1/accounts/acme/tokens/short").await;
    assert_eq!(t["state"], "expired");
    m.stop().await;
}

#[tokio::test]
async fn live_session_is_closed_when_its_token_expires() {
    let m = Manager::start(|_| {}).await;
    let (_, value) = m.create_token(json!({"name": "ttl", "expires_in_secs": 2})).await;
    let mut d = connect(&m, &value, Uuid::new_v4(), "x").await.expect("valid for now");
    assert!(d.welcome.token_expires_at.is_some());
    match d.recv().await {
        Ok(S2c::Revoked { reason: RevokedReason::Expired, .. }) => {}
        other => panic!("expected revoked(expired), got {other:?}"),
    }
    assert_eq!(close_code(&mut d.ws).await, Some(close::EXPIRED));
    m.stop().await;
}

#[tokio::test]
async fn cidr_mismatch_is_refused_with_signed_ip_not_allowed() {
    let m = Manager::start(|_| {}).await;
    let (_, far) =
        m.create_token(json!({"name": "far", "allowed_cidrs": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    let refused = connect(&m, &far, Uuid::new_v4(), "x").await.err().expect("refused");
    assert_eq!(rejection(&refused), (RejectCode::IpNotAllowed, true));
    assert_eq!(refused.close_code, Some(close::IP_NOT_ALLOWED));
    let (_, near) = m.create_token(json!({"name": "near", "allowed_cidrs": ["127.0.0.0/8"]})).await;
    connect(&m, &near, Uuid::new_v4(), "x").await.expect("loopback allowed");
    m.stop().await;
}

#[tokio::test]
async fn unknown_token_and_bad_tag_get_the_same_unsigned_answer() {
    let m = Manager::start(|_| {}).await;
    let real = Token::parse(&m.default_token).unwrap();
    // Unknown token id.
    let unknown = Token::from_parts(Uuid::new_v4(), [9u8; 32]);
    let r1 = handshake_on(open_ws(&m.ws_url(), &m.ca).await, "acme", &unknown, Uuid::new_v4(), "x")
        .await
        .err()
        .unwrap();
    // Known id, wrong secret: bad tag.
    let forged = Token::from_parts(real.id(), [9u8; 32]);
    let r2 = handshake_on(open_ws(&m.ws_url(), &m.ca).await, "acme", &forged, Uuid::new_v4(), "x")
        .await
        .err()
        .unwrap();
    // Right token, wrong account: the token does not exist in that account.
    let r3 = handshake_on(open_ws(&m.ws_url(), &m.ca).await, "other", &real, Uuid::new_v4(), "x")
        .await
        .err()
        .unwrap();
    for r in [&r1, &r2, &r3] {
        assert_eq!(rejection(r), (RejectCode::AuthFailed, false));
        assert_eq!(r.close_code, Some(close::AUTH_FAILED));
    }
    let (HandshakeError::Rejected(a), HandshakeError::Rejected(b)) = (&r1.error, &r2.error) else {
        unreachable!()
    };
    assert_eq!(a.message, b.message, "same answer");
    m.stop().await;
}

#[tokio::test]
async fn failed_handshakes_are_rate_limited_per_address() {
    let m = Manager::start(|c| c.handshake_fail_limit = 3).await;
    let unknown = Token::from_parts(Uuid::new_v4(), [1u8; 32]);
    for _ in 0..3 {
        let r = handshake_on(open_ws(&m.ws_url(), &m.ca).await, "acme", &unknown, Uuid::new_v4(), "x")
            .await
            .err()
            .unwrap();
        assert_eq!(rejection(&r).0, RejectCode::AuthFailed);
    }
    // Now even a valid token is answered rate_limited (4029), unsigned, instead of a challenge.
    let token = Token::parse(&m.default_token).unwrap();
    let r = handshake_on(open_ws(&m.ws_url(), &m.ca).await, "acme", &token, Uuid::new_v4(), "x")
        .await
        .err()
        .unwrap();
    assert_eq!(rejection(&r), (RejectCode::RateLimited, false));
    assert_eq!(r.close_code, Some(close::RATE_LIMITED));
    let metrics = reqwest_metrics(&m).await;
    assert!(metrics.contains("tether_handshakes_total{outcome=\"rate_limited\"} 1"), "{metrics}");
    assert!(metrics.contains("tether_handshakes_total{outcome=\"auth_failed\"} 3"), "{metrics}");
    m.stop().await;
}

async fn reqwest_metrics(m: &Manager) -> String {
    let tls = tether_manager::tls::client_config(&m.ca).unwrap();
    let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    http.get(format!("{}/metrics", m.url())).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn silent_client_is_closed_after_the_hello_deadline() {
    let m = Manager::start(|c| c.hello_timeout_secs = 1).await;
    let mut ws = open_ws(&m.ws_url(), &m.ca).await;
    let _challenge = next_binary(&mut ws).await.expect("challenge");
    let started = Instant::now();
    assert_eq!(close_code(&mut ws).await, Some(close::PROTOCOL));
    assert!(started.elapsed().as_millis() >= 900, "closed at the deadline, not before");
    m.stop().await;
}

#[tokio::test]
async fn oversize_frame_closes_with_1009() {
    let m = Manager::start(|c| c.max_frame = 4096).await;
    let mut d = connect(&m, &m.default_token, Uuid::new_v4(), "big").await.unwrap();
    d.ws.send(Message::Binary(vec![1u8; 4097].into())).await.unwrap();
    assert_eq!(close_code(&mut d.ws).await, Some(close::TOO_BIG));
    m.stop().await;
}

#[tokio::test]
async fn missed_heartbeats_close_the_session() {
    let m = Manager::start(|c| c.heartbeat_secs = 1).await;
    let mut quiet = connect(&m, &m.default_token, Uuid::new_v4(), "quiet").await.unwrap();
    let mut chatty = connect(&m, &m.default_token, Uuid::new_v4(), "chatty").await.unwrap();
    let started = Instant::now();
    let keep_alive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        for _ in 0..10 {
            tick.tick().await;
            chatty.heartbeat().await;
        }
        chatty
    });
    assert_eq!(close_code(&mut quiet.ws).await, Some(close::PROTOCOL));
    let waited = started.elapsed();
    assert!(waited.as_millis() >= 2_500, "closed after ~3 intervals, not {waited:?}");
    let delegates: Vec<Value> = m.get("/api/v1/delegates").await;
    assert_eq!(delegates.len(), 1, "the heartbeating delegate stays");
    assert_eq!(delegates[0]["name"], "chatty");
    keep_alive.abort();
    m.stop().await;
}

#[tokio::test]
async fn graceful_stop_says_goodbye_to_delegates() {
    let m = Manager::start(|_| {}).await;
    let mut d = connect(&m, &m.default_token, Uuid::new_v4(), "x").await.unwrap();
    let stopping = tokio::spawn(m.stop());
    match d.recv().await {
        Ok(S2c::Goodbye { .. }) => {}
        other => panic!("expected goodbye, got {other:?}"),
    }
    assert_eq!(close_code(&mut d.ws).await, Some(close::GOING_AWAY));
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}
