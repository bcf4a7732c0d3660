//! Attacks on an authenticated session against the real manager over TLS: replayed,
//! duplicated, reordered and dropped frames; a frame reflected back in the wrong direction;
//! single-bit tampering of tag and payload; a valid-MAC frame of an unknown type; oversize
//! frames. Each must close the session with 4008 (1009 for size), and the manager must forget
//! the session. A clean session is the control.
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tether_protocol::error::close;
use tether_protocol::frame::HEADER_LEN;
use tether_protocol::message::{C2s, GoodbyeReason, HeartbeatStatus};
use tether_tests::attack::{flip_bit, handshake, Answer, Established, TAG_BITS};
use tether_tests::harness::{poll, Manager};

async fn manager() -> Manager {
    Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await.expect("manager starts")
}

async fn session(m: &Manager) -> Established {
    let answer =
        handshake(&m.target().unwrap(), None, &m.init.account_id, &m.default_token().unwrap()).await.unwrap();
    match answer {
        Answer::Welcome(est) => *est,
        other => panic!("control handshake failed: {}", other.describe()),
    }
}

fn heartbeat() -> C2s {
    C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 1, apply_mode: None } }
}

/// Live session ids the manager lists.
async fn live_sessions(m: &Manager) -> Vec<String> {
    let (_, v) = m.api(Method::GET, "/api/v1/delegates", None).await.unwrap();
    let list = v.as_array().cloned().or_else(|| v["delegates"].as_array().cloned()).unwrap_or_default();
    list.iter().filter_map(|d| d["session_id"].as_str().map(str::to_owned)).collect()
}

/// Asserts the session closes with `code` and that the manager stops listing it.
async fn assert_killed(m: &Manager, est: &mut Established, code: u16, what: &str) {
    assert_eq!(est.closed_with().await.unwrap(), Some(code), "{what}");
    let id = est.session.session_id().to_string();
    poll::until("session forgotten", Duration::from_secs(5), || async {
        Ok((!live_sessions(m).await.contains(&id)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_session_stays_up_and_says_goodbye_with_1000() {
    let m = manager().await;
    let mut est = session(&m).await;
    for _ in 0..3 {
        let f = est.session.encode(heartbeat());
        est.raw.send(f).await;
    }
    let id = est.session.session_id().to_string();
    poll::until("session listed", Duration::from_secs(5), || async {
        Ok(live_sessions(&m).await.contains(&id).then_some(()))
    })
    .await
    .unwrap();
    let f = est.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::NORMAL, "goodbye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_duplicated_frames_close_the_session() {
    let m = manager().await;
    // Duplicate: the same frame twice in a row.
    let mut est = session(&m).await;
    let f = est.session.encode(heartbeat());
    est.raw.send(f.clone()).await;
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "duplicate").await;

    // Replay: frame 0 again after frame 1.
    let mut est = session(&m).await;
    let f0 = est.session.encode(heartbeat());
    let f1 = est.session.encode(heartbeat());
    est.raw.send(f0.clone()).await;
    est.raw.send(f1).await;
    est.raw.send(f0.clone()).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "replay").await;

    // Replay into another session of the same token (different keys).
    let mut other = session(&m).await;
    other.raw.send(f0).await;
    assert_killed(&m, &mut other, close::PROTOCOL, "cross-session replay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_and_dropped_frames_close_the_session() {
    let m = manager().await;
    let mut est = session(&m).await;
    let f0 = est.session.encode(heartbeat());
    let f1 = est.session.encode(heartbeat());
    est.raw.send(f1).await;
    est.raw.send(f0).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "reorder").await;

    let mut est = session(&m).await;
    let _dropped = est.session.encode(heartbeat());
    let f1 = est.session.encode(heartbeat());
    est.raw.send(f1).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "drop").await;

    // A valid MAC does not help a wrong seq.
    let mut est = session(&m).await;
    let forged = est.forge_c2s(&json!({"type": "heartbeat", "seq": 5, "status": {"uptime_secs": 1}}));
    est.raw.send(forged).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "forged seq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frame_reflected_back_closes_the_session() {
    let m = manager().await;
    let mut est = session(&m).await;
    let welcome = est.welcome.clone();
    est.raw.send(welcome).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "reflected welcome").await;

    // A c2s-keyed frame carrying an s2c type is refused too.
    let mut est = session(&m).await;
    // Control: a c2s goodbye with an unknown extra field is legal (unknown fields are ignored).
    let goodbye = est.forge_c2s(&json!({"type": "goodbye", "seq": 0, "reason": "shutdown", "x": 1}));
    est.raw.send(goodbye).await;
    assert_killed(&m, &mut est, close::NORMAL, "c2s goodbye is legal").await;
    let mut est = session(&m).await;
    let wrong_way = est.forge_c2s(&json!({"type": "rotate", "seq": 0, "rotation_id": uuid::Uuid::nil(),
        "token_id": uuid::Uuid::nil(), "sealed_token": "AAAA", "old_token_valid_until": 0}));
    est.raw.send(wrong_way).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "s2c type from the client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_bit_tampering_of_tag_or_payload_closes_the_session() {
    let m = manager().await;
    // Tag bits (a spread of 8) and payload bits (a spread of 8): each on a fresh session.
    let sample =
        |range: std::ops::Range<usize>| range.clone().step_by(((range.end - range.start) / 8).max(1)).take(8);
    for bit in sample(TAG_BITS) {
        let mut est = session(&m).await;
        let f = est.session.encode(heartbeat());
        est.raw.send(flip_bit(&f, bit)).await;
        assert_killed(&m, &mut est, close::PROTOCOL, &format!("tag bit {bit}")).await;
    }
    let mut est = session(&m).await;
    let payload_bits = HEADER_LEN * 8..est.session.encode(heartbeat()).len() * 8;
    est.raw.close().await;
    for bit in sample(payload_bits) {
        let mut est = session(&m).await;
        let f = est.session.encode(heartbeat());
        est.raw.send(flip_bit(&f, bit)).await;
        assert_killed(&m, &mut est, close::PROTOCOL, &format!("payload bit {bit}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_bad_versions_and_oversize_frames_close_the_session() {
    let m = manager().await;
    let mut est = session(&m).await;
    let f = est.forge_c2s(&json!({"type": "exec", "seq": 0, "cmd": "id"}));
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "unknown type with a valid MAC").await;

    let mut est = session(&m).await;
    let mut f = est.session.encode(heartbeat());
    f[0] = 0x02;
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::PROTOCOL, "version byte 2").await;

    let mut est = session(&m).await;
    est.raw.send_text("{\"type\":\"heartbeat\"}").await;
    assert_killed(&m, &mut est, close::PROTOCOL, "text message").await;

    let mut est = session(&m).await;
    let max = est.session.max_frame();
    let mut f = est.forge_c2s(&json!({"type": "heartbeat", "seq": 0, "status": {"uptime_secs": 1}}));
    f.resize(max + 1, b' ');
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::TOO_BIG, "max_frame + 1").await;

    let mut est = session(&m).await;
    // (Twice the maximum: the raw client's own write buffer is bounded at 256 KiB.)
    let f = vec![1u8; max * 2];
    est.raw.send(f).await;
    assert_killed(&m, &mut est, close::TOO_BIG, "2 x max_frame").await;

    // Exactly max_frame with a valid MAC is accepted (spaces are valid JSON whitespace).
    let mut est = session(&m).await;
    let body =
        serde_json::to_vec(&json!({"type": "heartbeat", "seq": 0, "status": {"uptime_secs": 1}})).unwrap();
    let mut padded = body.clone();
    padded.resize(max - HEADER_LEN, b' ');
    let text: Value = serde_json::from_slice(&padded).unwrap();
    assert_eq!(text["seq"], 0);
    let f = tether_protocol::frame::signed(&tether_protocol::keys::MacKey::new(est.keys.c2s()), b"", &padded);
    assert_eq!(f.len(), max);
    est.raw.send(f).await;
    let goodbye = est.forge_c2s(&json!({"type": "goodbye", "seq": 1, "reason": "shutdown"}));
    est.raw.send(goodbye).await;
    assert_killed(&m, &mut est, close::NORMAL, "exactly max_frame accepted, then goodbye").await;
}
