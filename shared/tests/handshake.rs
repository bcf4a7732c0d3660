//! Every error path of the two handshake state machines, without sockets or sleeps.
mod common;

use common::*;
use tether_protocol::error::{HandshakeError, ProtocolError, RejectCode};
use tether_protocol::frame;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::{unsigned_reject, ServerHandshake};
use tether_protocol::handshake::HELLO_TIMEOUT_SECS;
use uuid::Uuid;

fn protocol(err: HandshakeError) -> ProtocolError {
    match err {
        HandshakeError::Protocol(p) => p,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn happy_path_carries_expiry_and_session_id() {
    let t = token(1);
    let (received, awaiting) = received(&t);
    assert_eq!(received.hello().token_id, t.id());
    let verified = received.verify(Some(&t.key())).unwrap();
    let (server, welcome) = verified.accept(Uuid::from_u128(9), 15, Some(NOW + 60));
    let (client, w) = awaiting.receive_welcome(&welcome).unwrap();
    assert_eq!(w.token_expires_at, Some(NOW + 60));
    assert_eq!(w.heartbeat_secs, 15);
    assert_eq!(client.session_id(), server.session_id());
}

#[test]
fn late_hello_is_rejected() {
    let t = token(1);
    let (server, _, hello) = until_hello(&t);
    assert_eq!(server.deadline(), NOW + HELLO_TIMEOUT_SECS);
    let err = server.receive_hello(&hello, NOW + HELLO_TIMEOUT_SECS + 1).unwrap_err();
    assert_eq!(err, ProtocolError::LateHello { elapsed_secs: 11, limit_secs: 10 });
    // Exactly at the limit is still in time.
    let (server, _, hello) = until_hello(&t);
    assert!(server.receive_hello(&hello, NOW + HELLO_TIMEOUT_SECS).is_ok());
}

#[test]
fn hello_replayed_on_another_connection_fails_the_nonce_check() {
    let t = token(1);
    let (_, _, hello) = until_hello(&t);
    let (other_server, _) = ServerHandshake::new([0x11; 32], NOW, 65_536);
    assert_eq!(other_server.receive_hello(&hello, NOW).unwrap_err(), ProtocolError::NonceMismatch);
}

#[test]
fn unknown_token_and_bad_tag_are_the_same_failure() {
    let t = token(1);
    let (received, _) = received(&t);
    let unknown = received.verify(None).unwrap_err();
    let (received, _) = common::received(&t);
    let wrong_key = received.verify(Some(&token(2).key())).unwrap_err();
    assert_eq!(unknown, wrong_key);
}

#[test]
fn tampered_hello_fails_verification() {
    let t = token(1);
    let (server, _, mut hello) = until_hello(&t);
    let last = hello.len() - 4;
    hello[last] ^= 0x01; // inside the delegate host string
    let received = server.receive_hello(&hello, NOW).expect("still well-formed JSON");
    assert!(received.verify(Some(&t.key())).is_err());
}

#[test]
fn oversize_bad_version_and_unknown_type_are_distinct() {
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    let big = frame::unsigned(&vec![b' '; 2000]);
    assert!(matches!(server.receive_hello(&big, NOW).unwrap_err(), ProtocolError::Oversize { .. }));
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    let mut bad = frame::unsigned(b"{}");
    bad[0] = 2;
    assert_eq!(server.receive_hello(&bad, NOW).unwrap_err(), ProtocolError::BadVersion { got: 2 });
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    let unknown = frame::unsigned(br#"{"type":"gossip"}"#);
    assert_eq!(server.receive_hello(&unknown, NOW).unwrap_err(), ProtocolError::UnknownType("gossip".into()));
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    let wrong = frame::unsigned(br#"{"type":"welcome","seq":0}"#);
    assert!(matches!(server.receive_hello(&wrong, NOW).unwrap_err(), ProtocolError::Unexpected { .. }));
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    let malformed = frame::unsigned(br#"{"type":"hello","v":1}"#);
    assert!(matches!(server.receive_hello(&malformed, NOW).unwrap_err(), ProtocolError::Malformed(_)));
    let (server, _) = ServerHandshake::new([1; 32], NOW, 1024);
    assert_eq!(server.receive_hello(&[1, 2, 3], NOW).unwrap_err(), ProtocolError::Truncated { len: 3 });
}

#[test]
fn hello_with_another_version_is_unsupported() {
    let t = token(1);
    let (server, _, hello) = until_hello(&t);
    let text = String::from_utf8(hello[33..].to_vec()).unwrap().replace("\"v\":1", "\"v\":2");
    let forged = frame::join(hello[1..33].try_into().unwrap(), text.as_bytes());
    let err = server.receive_hello(&forged, NOW).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion { got: 2 });
    assert_eq!(err.close_code(), 4010);
    assert_eq!(err.reject_code(), RejectCode::UnsupportedVersion);
}

#[test]
fn client_rejects_bad_challenges() {
    let t = token(1);
    let hs = || ClientHandshake::new("acct", &t, delegate());
    let (_, challenge) = ServerHandshake::new([1; 32], NOW, 65_536);
    // A signed challenge is not a thing.
    let mut signed = challenge.clone();
    signed[5] = 1;
    assert_eq!(protocol(hs().receive_challenge(&signed, [2; 32], NOW).unwrap_err()), ProtocolError::BadTag);
    // Version 2.
    let text = String::from_utf8(challenge[33..].to_vec()).unwrap();
    let v2 = frame::unsigned(text.replace("\"v\":1", "\"v\":2").as_bytes());
    assert_eq!(
        protocol(hs().receive_challenge(&v2, [2; 32], NOW).unwrap_err()),
        ProtocolError::UnsupportedVersion { got: 2 }
    );
    // Absurd max_frame.
    let tiny = frame::unsigned(text.replace("65536", "10").as_bytes());
    assert!(matches!(
        protocol(hs().receive_challenge(&tiny, [2; 32], NOW).unwrap_err()),
        ProtocolError::BadMaxFrame { got: 10, .. }
    ));
    // A reject instead of a challenge (e.g. rate limited before the handshake).
    let reject = unsigned_reject(RejectCode::RateLimited, "slow down");
    match hs().receive_challenge(&reject, [2; 32], NOW).unwrap_err() {
        HandshakeError::Rejected(r) => {
            assert_eq!(r.code, RejectCode::RateLimited);
            assert!(!r.signed && !r.is_final());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn signed_reject_is_final_only_for_revoked_and_expired() {
    for (code, fin) in
        [(RejectCode::Revoked, true), (RejectCode::Expired, true), (RejectCode::IpNotAllowed, false)]
    {
        let t = token(1);
        let (received, awaiting) = received(&t);
        let verified = received.verify(Some(&t.key())).unwrap();
        let frame = verified.reject(code, "no");
        match awaiting.receive_welcome(&frame).unwrap_err() {
            HandshakeError::Rejected(r) => {
                assert!(r.signed);
                assert_eq!(r.code, code);
                assert_eq!(r.is_final(), fin);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn forged_unsigned_revoked_is_not_final() {
    let t = token(1);
    let (_, awaiting) = received(&t);
    let forged = unsigned_reject(RejectCode::Revoked, "you are revoked");
    match awaiting.receive_welcome(&forged).unwrap_err() {
        HandshakeError::Rejected(r) => assert!(!r.signed && !r.is_final()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn welcome_signed_by_another_key_or_unsigned_is_refused() {
    let t = token(1);
    let (_, awaiting) = received(&t);
    // A welcome produced by a server that holds a different token key.
    let other = token(2);
    let (received_other, _) = received(&other);
    let (_, forged) = received_other.verify(Some(&other.key())).unwrap().accept(Uuid::nil(), 30, None);
    assert_eq!(protocol(awaiting.receive_welcome(&forged).unwrap_err()), ProtocolError::BadTag);
    let (_, awaiting) = common::received(&t);
    let unsigned = frame::unsigned(&forged[33..]);
    assert_eq!(protocol(awaiting.receive_welcome(&unsigned).unwrap_err()), ProtocolError::BadTag);
}
