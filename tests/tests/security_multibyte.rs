//! Regression tests for the one-frame crashes of issue 10 against the real manager binary over
//! TLS: a `type` whose 64th byte falls inside a multi-byte character (unauthenticated), and a
//! `rotate_ack` whose 512th detail byte does (any authenticated delegate). Each is answered as
//! the protocol says, and the manager keeps serving. Also: delegate-supplied text that would
//! steer an operator's terminal is refused at the handshake, and a rotation keeps the expiry.
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_protocol::error::close;
use tether_protocol::frame;
use tether_protocol::message::C2s;
use tether_protocol::RejectCode;
use tether_tests::attack::{self, handshake, hello_for, nonce32, payload_json, send_hello_bytes, Raw};
use tether_tests::harness::{poll, Manager};

async fn manager() -> Manager {
    Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await.expect("manager starts")
}

/// The manager still accepts an honest delegate and answers `/healthz`, and logged no panic.
async fn still_serving(m: &Manager) {
    let answer =
        handshake(&m.target().unwrap(), None, &m.init.account_id, &m.default_token().unwrap()).await.unwrap();
    assert!(answer.is_welcome(), "after the attack: {}", answer.describe());
    let (status, _) = m.api(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let logs = m.logs();
    assert!(!logs.contains("panicked") && !logs.contains("a task panicked"), "the manager panicked:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_frame_with_a_multibyte_type_at_byte_64_gets_a_protocol_reject() {
    let m = manager().await;
    let target = m.target().unwrap();
    for wide in ["é", "日", "😀"] {
        for back in 1..wide.len() {
            let kind = format!("{}{wide}", "a".repeat(64 - back));
            let mut raw = Raw::connect(&target, None).await.unwrap();
            raw.challenge().await.unwrap();
            let crash = frame::unsigned(format!("{{\"type\":\"{kind}\"}}").as_bytes());
            let (reject, code) = send_hello_bytes(&mut raw, crash).await.unwrap();
            assert_eq!(reject, Some((RejectCode::Protocol, false)), "type {kind:?}");
            assert_eq!(code, Some(close::PROTOCOL));
        }
    }
    still_serving(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotate_ack_with_a_multibyte_character_at_byte_512_changes_nothing() {
    let m = manager().await;
    let token = m.default_token().unwrap();
    let answer = handshake(&m.target().unwrap(), None, &m.init.account_id, &token).await.unwrap();
    let attack::Answer::Welcome(mut est) = answer else { panic!("control: {}", answer.describe()) };
    // No rotation is running: the ack names a made-up one.
    for detail in [format!("{}é", "x".repeat(511)), format!("{}😀", "x".repeat(509)), "\u{1b}[2J".into()] {
        let ack = est.session.encode(C2s::RotateAck {
            seq: 0,
            rotation_id: uuid::Uuid::new_v4(),
            outcome: tether_protocol::message::RotateOutcome::Failed,
            detail,
        });
        est.raw.send(ack).await;
    }
    // The session is alive: a revoke reaches it as a signed `revoked` and close 4003. Before the
    // fix the session task died at the first ack and the connection just dropped.
    let (status, body) = m
        .api(
            Method::POST,
            &format!("/api/v1/accounts/{}/tokens/{}/revoke", m.init.account_id, token.id()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (frames, code) = est.raw.until_close().await.unwrap();
    assert_eq!(code, Some(close::REVOKED));
    let last = frames.last().expect("a revoked frame before the close");
    assert_eq!(
        est.session.decode(last).map(|m| matches!(m, tether_protocol::message::S2c::Revoked { .. })),
        Ok(true)
    );
    // An honest delegate on another token still gets in.
    let other = m.create_token(&m.init.account_id, "after", json!({})).await.unwrap();
    let answer = handshake(&m.target().unwrap(), None, &m.init.account_id, &other).await.unwrap();
    assert!(answer.is_welcome(), "{}", answer.describe());
    assert!(!m.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_name_with_terminal_controls_is_refused_unsigned() {
    let m = manager().await;
    let target = m.target().unwrap();
    let token = m.default_token().unwrap();
    for name in ["\u{1b}]0;title\u{7}\u{1b}[2J", "two\nlines", "bidi\u{202e}gnp.exe"] {
        let mut raw = Raw::connect(&target, None).await.unwrap();
        let challenge = raw.challenge().await.unwrap();
        let (_, hello) = hello_for(&challenge, &m.init.account_id, &token, nonce32()).unwrap();
        let mut payload = payload_json(&hello).unwrap();
        payload["delegate"]["name"] = json!(name);
        let (reject, code) =
            send_hello_bytes(&mut raw, attack::signed_hello(&token, &payload)).await.unwrap();
        assert_eq!(reject, Some((RejectCode::Protocol, false)), "name {name:?}");
        assert_eq!(code, Some(close::PROTOCOL));
    }
    let (_, list) = m.api(Method::GET, "/api/v1/delegates", None).await.unwrap();
    assert!(!list.to_string().contains("\\u001b"), "{list}");
    still_serving(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_keeps_its_lifetime_unless_told_otherwise() {
    let m = manager().await;
    let account = m.init.account_id.clone();
    m.create_token(&account, "expiring", json!({ "expires_in_secs": 7200 })).await.unwrap();
    let rotate = |body| {
        let path = format!("/api/v1/accounts/{account}/tokens/expiring/rotate");
        let m = &m;
        async move { m.api(Method::POST, &path, Some(body)).await.unwrap() }
    };
    let (status, started) = rotate(json!({ "grace_secs": 1 })).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let show = |id: String| {
        let path = format!("/api/v1/accounts/{account}/tokens/{id}");
        let m = &m;
        async move { m.api(Method::GET, &path, None).await.unwrap().1 }
    };
    let successor = show(started["token_id"].as_str().unwrap().to_owned()).await;
    let (created, expires) = (successor["created_at"].as_u64().unwrap(), successor["expires_at"].as_u64());
    assert_eq!(expires.map(|e| e - created), Some(7200), "successor: {successor}");

    // An explicit lifetime wins. Wait (bounded) for the first rotation to end at its deadline.
    let second = poll::until("first rotation finished", std::time::Duration::from_secs(15), || async {
        let (status, body) = rotate(json!({ "grace_secs": 1, "expires_in_secs": 60 })).await;
        Ok((status == StatusCode::CREATED).then_some(body))
    })
    .await
    .unwrap();
    let successor = show(second["token_id"].as_str().unwrap().to_owned()).await;
    let (created, expires) = (successor["created_at"].as_u64().unwrap(), successor["expires_at"].as_u64());
    assert_eq!(expires.map(|e| e - created), Some(60), "successor: {successor}");
}
