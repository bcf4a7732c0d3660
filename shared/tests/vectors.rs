//! Reproduces every vector of `tests/data/v1-vectors.json` (from an independent
//! implementation) byte for byte.
use serde_json::Value;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::{C2s, DelegateInfo, HeartbeatStatus, S2c};
use tether_protocol::{seal, Token, TokenError};
use uuid::Uuid;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/v1-vectors.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn arr32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap()
}

fn b64(v: &Value) -> [u8; 32] {
    use base64::Engine;
    arr32(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap())
}

fn token(v: &Value) -> Token {
    let t = &v["token"];
    Token::from_parts(t["token_id"].as_str().unwrap().parse().unwrap(), arr32(&hex(&t["secret_hex"])))
}

fn delegate() -> DelegateInfo {
    DelegateInfo {
        name: "build-agent-1".into(),
        instance: "0b7f1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap(),
        version: "0.1.0".into(),
        host: "ci-7".into(),
    }
}

#[test]
fn token_string_and_key() {
    let v = vectors();
    let t = token(&v);
    assert_eq!(t.expose().as_str(), v["token"]["string"].as_str().unwrap());
    assert_eq!(t.key().expose_bytes().to_vec(), hex(&v["token"]["k_token_hex"]));
    let parsed = Token::parse(v["token"]["string"].as_str().unwrap()).unwrap();
    assert!(parsed.same_as(&t));
}

#[test]
fn bad_tokens() {
    let v = vectors();
    for bad in v["bad_tokens"].as_array().unwrap() {
        let err = Token::parse(bad["string"].as_str().unwrap()).unwrap_err();
        let want = bad["error"].as_str().unwrap();
        let got = match err {
            TokenError::Checksum => "checksum",
            TokenError::Prefix => "prefix",
            TokenError::Length { .. } => "length",
            TokenError::Encoding => "encoding",
            _ => "other",
        };
        assert_eq!(got, want);
    }
}

#[test]
fn session_keys() {
    let v = vectors();
    let h = &v["handshake"];
    let keys = token(&v).key().session_keys(&b64(&h["server_nonce_b64"]), &b64(&h["client_nonce_b64"]));
    assert_eq!(keys.c2s().to_vec(), hex(&h["k_c2s_hex"]));
    assert_eq!(keys.s2c().to_vec(), hex(&h["k_s2c_hex"]));
    assert_eq!(keys.seal().to_vec(), hex(&h["k_seal_hex"]));
}

/// Runs the whole handshake and the session frames through both state machines and compares
/// every frame with the vectors.
#[test]
fn handshake_and_session_frames() {
    let v = vectors();
    let h = &v["handshake"];
    let s = &v["session"];
    let t = token(&v);
    let server_nonce = b64(&h["server_nonce_b64"]);
    let client_nonce = b64(&h["client_nonce_b64"]);

    let (server, challenge) = ServerHandshake::new(server_nonce, 1_795_000_000, 65_536);
    assert_eq!(challenge, hex(&h["challenge_frame_hex"]));

    let client = ClientHandshake::new("acct-demo", &t, delegate());
    let (awaiting, hello) = client.receive_challenge(&challenge, client_nonce, 1_795_000_001).unwrap();
    assert_eq!(hello, hex(&h["hello_frame_hex"]));
    assert_eq!(&hello[33..], h["hello_payload"].as_str().unwrap().as_bytes());

    let received = server.receive_hello(&hello, 1_795_000_001).unwrap();
    assert_eq!(received.hello().account_id, "acct-demo");
    let verified = received.verify(Some(&t.key())).unwrap();
    let session_id: Uuid = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6".parse().unwrap();
    let (mut server_session, welcome) = verified.accept(session_id, 30, None);
    assert_eq!(welcome, hex(&h["welcome_frame_hex"]));
    assert_eq!(&welcome[33..], h["welcome_payload"].as_str().unwrap().as_bytes());

    let (mut client_session, w) = awaiting.receive_welcome(&welcome).unwrap();
    assert_eq!(w.session_id, session_id);
    assert_eq!(w.heartbeat_secs, 30);

    let heartbeat = client_session
        .encode(C2s::Heartbeat { seq: 99, status: HeartbeatStatus { uptime_secs: 12, apply_mode: None } });
    assert_eq!(heartbeat, hex(&s["heartbeat_c2s_frame_hex"]));
    assert!(matches!(server_session.decode(&heartbeat).unwrap(), C2s::Heartbeat { seq: 0, .. }));

    let seal_v = &v["seal"];
    let rotation_id: Uuid = seal_v["rotation_id"].as_str().unwrap().parse().unwrap();
    let new_token = Token::parse(seal_v["plaintext"].as_str().unwrap()).unwrap();
    let nonce: [u8; 12] = hex(&seal_v["nonce_hex"]).try_into().unwrap();
    let sealed = server_session.seal_token(rotation_id, nonce, &new_token);
    assert_eq!(sealed, seal_v["sealed_b64"].as_str().unwrap());

    let rotate = server_session.encode(S2c::Rotate {
        seq: 0,
        rotation_id,
        token_id: new_token.id(),
        sealed_token: sealed,
        old_token_valid_until: 1_795_003_600,
    });
    assert_eq!(rotate, hex(&s["rotate_s2c_frame_hex"]));
    match client_session.decode(&rotate).unwrap() {
        S2c::Rotate { seq, rotation_id: r, token_id, sealed_token, .. } => {
            assert_eq!(seq, 1);
            let opened = client_session.open_sealed_token(r, token_id, &sealed_token).unwrap();
            assert!(opened.same_as(&new_token));
        }
        other => panic!("expected rotate, got {other:?}"),
    }
}

#[test]
fn tampered_frame_is_rejected() {
    let v = vectors();
    let h = &v["handshake"];
    let t = token(&v);
    let keys = t.key().session_keys(&b64(&h["server_nonce_b64"]), &b64(&h["client_nonce_b64"]));
    let mac = tether_protocol::keys::MacKey::new(keys.c2s());
    let good = hex(&v["session"]["heartbeat_c2s_frame_hex"]);
    let bad = hex(&v["session"]["tampered_frame_hex"]);
    assert!(mac.verify(b"", &good[33..], good[1..33].try_into().unwrap()));
    assert!(!mac.verify(b"", &bad[33..], bad[1..33].try_into().unwrap()));
}

#[test]
fn seal_vector_opens() {
    let v = vectors();
    let keys = token(&v)
        .key()
        .session_keys(&b64(&v["handshake"]["server_nonce_b64"]), &b64(&v["handshake"]["client_nonce_b64"]));
    let s = &v["seal"];
    let rotation_id: Uuid = s["rotation_id"].as_str().unwrap().parse().unwrap();
    let opened = seal::open(keys.seal(), rotation_id, s["sealed_b64"].as_str().unwrap()).unwrap();
    assert_eq!(opened.expose().as_str(), s["plaintext"].as_str().unwrap());
    assert!(seal::open(keys.seal(), Uuid::nil(), s["sealed_b64"].as_str().unwrap()).is_err());
}
