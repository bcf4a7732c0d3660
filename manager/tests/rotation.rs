//! Rotation over loopback with real TLS: the live client receives the sealed successor, moves
//! to it, and the old token is revoked; the grace window bounds a delegate that does not
//! move; stale and duplicate acks are harmless.
mod common;

use common::*;
use serde_json::{json, Value};
use tether_protocol::error::{close, HandshakeError};
use tether_protocol::message::{C2s, GoodbyeReason, RotateOutcome, S2c};
use tether_protocol::RejectCode;
use uuid::Uuid;

struct Rotate {
    rotation_id: Uuid,
    token_id: Uuid,
    sealed_token: String,
    valid_until: u64,
}

async fn expect_rotate(d: &mut TestDelegate) -> Rotate {
    match d.recv().await {
        Ok(S2c::Rotate { rotation_id, token_id, sealed_token, old_token_valid_until, .. }) => {
            Rotate { rotation_id, token_id, sealed_token, valid_until: old_token_valid_until }
        }
        other => panic!("expected rotate, got {other:?}"),
    }
}

async fn rotation(m: &Manager, id: &str) -> Value {
    m.get(&format!("/api/v1/rotations/{id}")).await
}

#[tokio::test]
async fn rotation_moves_a_live_client_to_the_new_token_and_revokes_the_old() {
    let m = Manager::start(|_| {}).await;
    let instance = Uuid::new_v4();
    let mut old = connect(&m, &m.default_token, instance, "runner").await.unwrap();

    let r: Value = m.post("/api/v1/accounts/acme/tokens/default/rotate", json!({"grace_secs": 60})).await;
    assert_eq!(r["delegates_notified"], 1);
    assert_eq!(r["old_token_id"], m.default_token_id.as_str());
    let rotation_id = r["rotation_id"].as_str().unwrap().to_owned();
    let value = r["token"].as_str().unwrap().to_owned();

    let push = expect_rotate(&mut old).await;
    assert_eq!(push.rotation_id.to_string(), rotation_id);
    assert_eq!(push.token_id.to_string(), r["token_id"].as_str().unwrap());
    assert_eq!(push.valid_until, r["old_token_valid_until"].as_u64().unwrap());
    let successor =
        old.session.open_sealed_token(push.rotation_id, push.token_id, &push.sealed_token).unwrap();
    assert_eq!(successor.expose().as_str(), value, "the sealed token is the successor");

    let watched = rotation(&m, &rotation_id).await;
    assert_eq!(watched["state"], "running");
    assert_eq!(watched["delegates"][0]["state"], "pending");
    let old_row: Value = m.get(&format!("/api/v1/accounts/acme/tokens/{}", m.default_token_id)).await;
    assert_eq!(old_row["state"], "rotating");
    assert_eq!(old_row["rotation_id"], rotation_id.as_str());

    // Stale and duplicate acks are harmless.
    old.send(C2s::RotateAck {
        seq: 0,
        rotation_id: Uuid::new_v4(),
        outcome: RotateOutcome::Applied,
        detail: "stale".into(),
    })
    .await;
    for _ in 0..2 {
        old.send(C2s::RotateAck {
            seq: 0,
            rotation_id: push.rotation_id,
            outcome: RotateOutcome::Applied,
            detail: "file".into(),
        })
        .await;
    }
    let acked = eventually("the ack to be recorded", || async {
        let v = rotation(&m, &rotation_id).await;
        (v["delegates"][0]["outcome"] == "applied").then_some(v)
    })
    .await;
    assert_eq!(acked["delegates"][0]["state"], "acked");
    assert_eq!(acked["state"], "running", "the old session is still live");

    // The delegate proves the new token on a second connection, then leaves the old one.
    let new = connect(&m, &value, instance, "runner").await.expect("successor authenticates");
    let v = eventually("the reconnection to be recorded", || async {
        let v = rotation(&m, &rotation_id).await;
        (v["delegates"][0]["state"] == "reconnected").then_some(v)
    })
    .await;
    assert_eq!(v["state"], "running");
    old.send(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced }).await;
    let _ = close_code(&mut old.ws).await;

    let done = eventually("the rotation to complete", || async {
        let v = rotation(&m, &rotation_id).await;
        (v["state"] == "completed").then_some(v)
    })
    .await;
    assert!(done["finished_at"].as_u64().is_some());
    let old_row: Value = m.get(&format!("/api/v1/accounts/acme/tokens/{}", m.default_token_id)).await;
    assert_eq!(old_row["state"], "revoked");
    let new_row: Value =
        m.get(&format!("/api/v1/accounts/acme/tokens/{}", r["token_id"].as_str().unwrap())).await;
    assert_eq!(new_row["state"], "active");
    assert_eq!(new_row["name"], "default", "the successor takes the name");
    assert_eq!(new_row["live_delegates"], 1);

    let refused = connect(&m, &m.default_token, instance, "runner").await.err().expect("old token refused");
    assert!(
        matches!(&refused.error, HandshakeError::Rejected(r) if r.code == RejectCode::Revoked && r.signed)
    );

    // The delegate on the new token keeps working.
    let sid = new.welcome.session_id;
    let _serving = new.serve_tasks();
    let pong: Value = m.post(&format!("/api/v1/delegates/{sid}/ping"), json!({"payload": "hi"})).await;
    assert_eq!(pong["payload"], "hi");
    assert!(pong["rtt_ms"].as_f64().unwrap() >= 0.0);
    m.stop().await;
}

#[tokio::test]
async fn grace_window_end_revokes_the_old_token_of_a_delegate_that_did_not_move() {
    let m = Manager::start(|_| {}).await;
    let mut d = connect(&m, &m.default_token, Uuid::new_v4(), "manual").await.unwrap();
    let r: Value = m.post("/api/v1/accounts/acme/tokens/default/rotate", json!({"grace_secs": 2})).await;
    let push = expect_rotate(&mut d).await;
    d.send(C2s::RotateAck {
        seq: 0,
        rotation_id: push.rotation_id,
        outcome: RotateOutcome::Manual,
        detail: "no file".into(),
    })
    .await;
    // Keep heartbeating (bounded) until the revoke arrives.
    let revoked = loop {
        d.heartbeat().await;
        match tokio::time::timeout(std::time::Duration::from_millis(500), d.recv()).await {
            Ok(Ok(S2c::Revoked { .. })) => break true,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(now() <= push.valid_until + 5, "not revoked by the end of the grace window"),
        }
    };
    assert!(revoked);
    assert_eq!(close_code(&mut d.ws).await, Some(close::REVOKED));
    let v = rotation(&m, r["rotation_id"].as_str().unwrap()).await;
    assert_eq!(v["state"], "grace_expired");
    assert_eq!(v["delegates"][0]["outcome"], "manual");
    assert_eq!(v["delegates"][0]["state"], "manual");
    assert_eq!(v["delegates"][0]["moved"], false);
    m.stop().await;
}

#[tokio::test]
async fn a_delegate_that_proves_the_successor_then_acks_manual_is_shown_manual_not_reconnected() {
    // Issue 17, finding 10: a manual-mode delegate proves the successor on a second
    // connection, then acks `manual` and stays on the old token; `rotation show` said
    // `reconnected` although it is cut at the deadline.
    let m = Manager::start(|_| {}).await;
    let instance = Uuid::new_v4();
    let mut old = connect(&m, &m.default_token, instance, "by-hand").await.unwrap();
    let r: Value = m.post("/api/v1/accounts/acme/tokens/default/rotate", json!({"grace_secs": 60})).await;
    let rotation_id = r["rotation_id"].as_str().unwrap().to_owned();
    let push = expect_rotate(&mut old).await;
    let successor =
        old.session.open_sealed_token(push.rotation_id, push.token_id, &push.sealed_token).unwrap();

    let proof = connect(&m, successor.expose().as_str(), instance, "by-hand").await.expect("proof handshake");
    let proved = eventually("the proof handshake to be recorded", || async {
        let v = rotation(&m, &rotation_id).await;
        (v["delegates"][0]["state"] == "reconnected").then_some(v)
    })
    .await;
    assert_eq!(proved["delegates"][0]["moved"], false, "a proof handshake alone is no move");
    drop(proof);
    old.send(C2s::RotateAck {
        seq: 0,
        rotation_id: push.rotation_id,
        outcome: RotateOutcome::Manual,
        detail: "no token file and no Docker socket".into(),
    })
    .await;
    let v = eventually("the manual ack to be recorded", || async {
        let v = rotation(&m, &rotation_id).await;
        (v["delegates"][0]["outcome"] == "manual").then_some(v)
    })
    .await;
    assert_eq!(v["delegates"][0]["state"], "manual", "{v}");
    assert_eq!(v["delegates"][0]["moved"], false, "{v}");
    assert_eq!(v["state"], "running", "the old token stays valid until the deadline");
    let list: Vec<Value> = m.get("/api/v1/rotations").await;
    assert_eq!(list[0]["delegates"][0]["state"], "manual");
    m.stop().await;
}

#[tokio::test]
async fn a_delegate_joining_on_the_old_token_during_the_grace_window_gets_the_successor() {
    let m = Manager::start(|_| {}).await;
    let _first = connect(&m, &m.default_token, Uuid::new_v4(), "a").await.unwrap();
    let r: Value = m.post("/api/v1/accounts/acme/tokens/default/rotate", json!({"grace_secs": 60})).await;
    let mut late =
        connect(&m, &m.default_token, Uuid::new_v4(), "late").await.expect("old token valid during grace");
    let push = expect_rotate(&mut late).await;
    assert_eq!(push.rotation_id.to_string(), r["rotation_id"].as_str().unwrap());
    let v = eventually("the late delegate to be tracked", || async {
        let v = rotation(&m, r["rotation_id"].as_str().unwrap()).await;
        (v["delegates"].as_array().unwrap().len() == 2).then_some(v)
    })
    .await;
    assert_eq!(v["state"], "running");
    m.stop().await;
}

#[tokio::test]
async fn rotation_without_live_delegates_completes_at_once_and_refuses_bad_states() {
    let m = Manager::start(|_| {}).await;
    let (_, _) = m.create_token(json!({"name": "idle"})).await;
    let r: Value = m.post("/api/v1/accounts/acme/tokens/idle/rotate", json!({})).await;
    assert_eq!(r["delegates_notified"], 0);
    let rid = r["rotation_id"].as_str().unwrap().to_owned();
    eventually("the empty rotation to complete", || async {
        (rotation(&m, &rid).await["state"] == "completed").then_some(())
    })
    .await;
    // The old token (renamed) is revoked: rotating it again is a conflict.
    let old = r["old_token_id"].as_str().unwrap();
    let err = m
        .try_req(
            reqwest::Method::POST,
            &format!("/api/v1/accounts/acme/tokens/{old}/rotate"),
            Some(json!({})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    // A bad grace window changes nothing.
    let err = m
        .try_req(
            reqwest::Method::POST,
            "/api/v1/accounts/acme/tokens/idle/rotate",
            Some(json!({"grace_secs": 0})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("grace_secs"), "{err}");
    let list: Vec<Value> = m.get("/api/v1/rotations").await;
    assert_eq!(list.len(), 1);
    m.stop().await;
}
