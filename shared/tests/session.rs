//! Session frames: replay, reorder, drop, reflection, tampering, unknown types, poisoning.
mod common;

use common::sessions;
use tether_protocol::error::{ProtocolError, SealError};
use tether_protocol::message::{C2s, GoodbyeReason, HeartbeatStatus, S2c, TaskKind};
use tether_protocol::{frame, Token};
use uuid::Uuid;

fn heartbeat() -> C2s {
    C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 1, apply_mode: None } }
}

#[test]
fn sequence_numbers_count_from_zero_c2s_and_one_s2c() {
    let (mut client, mut server) = sessions();
    for want in 0..3 {
        let f = client.encode(heartbeat());
        match server.decode(&f).unwrap() {
            C2s::Heartbeat { seq, .. } => assert_eq!(seq, want),
            other => panic!("{other:?}"),
        }
    }
    let f = server.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Restart });
    assert!(matches!(client.decode(&f).unwrap(), S2c::Goodbye { seq: 1, .. }));
}

#[test]
fn replay_is_rejected_and_poisons_the_session() {
    let (mut client, mut server) = sessions();
    let f = client.encode(heartbeat());
    server.decode(&f).unwrap();
    assert_eq!(server.decode(&f).unwrap_err(), ProtocolError::Replayed { expected: 1, got: 0 });
    let next = client.encode(heartbeat());
    assert_eq!(server.decode(&next).unwrap_err(), ProtocolError::SessionFailed);
}

#[test]
fn drop_and_reorder_are_rejected() {
    let (mut client, mut server) = sessions();
    let _dropped = client.encode(heartbeat());
    let second = client.encode(heartbeat());
    assert_eq!(server.decode(&second).unwrap_err(), ProtocolError::OutOfOrder { expected: 0, got: 1 });
}

#[test]
fn reflected_frame_is_wrong_direction() {
    let (mut client, mut server) = sessions();
    let f = client.encode(heartbeat());
    // The server's own key cannot verify it, but the client's... the attacker reflects a c2s
    // frame back to the client.
    assert_eq!(client.decode(&f).unwrap_err(), ProtocolError::WrongDirection);
    let s = server.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
    assert_eq!(server.decode(&s).unwrap_err(), ProtocolError::WrongDirection);
}

#[test]
fn tampered_payload_and_tag_are_bad_tags() {
    let (mut client, mut server) = sessions();
    let mut f = client.encode(heartbeat());
    let n = f.len() - 2;
    f[n] ^= 1;
    assert_eq!(server.decode(&f).unwrap_err(), ProtocolError::BadTag);
    let (mut client, mut server) = sessions();
    let mut f = client.encode(heartbeat());
    f[1] ^= 0x80;
    assert_eq!(server.decode(&f).unwrap_err(), ProtocolError::BadTag);
}

#[test]
fn oversize_frame_maps_to_1009() {
    let (mut client, mut server) = sessions();
    let f = client.encode(C2s::TaskResult {
        seq: 0,
        task_id: Uuid::nil(),
        ok: true,
        payload: "x".repeat(70_000),
    });
    let err = server.decode(&f).unwrap_err();
    assert!(matches!(err, ProtocolError::Oversize { max: 65_536, .. }));
    assert_eq!(err.close_code(), 1009);
}

/// A correctly signed frame with a type outside the closed set: the peer holds the key but
/// speaks something else. Built with the raw MAC key to get past the tag check.
#[test]
fn unknown_type_and_malformed_known_type_are_distinct() {
    use tether_protocol::keys::MacKey;
    let t = common::token(1);
    // Derive the same c2s key the fixture uses.
    let keys = t.key().session_keys(&[0xa5; 32], &[0x5a; 32]);
    let mac = MacKey::new(keys.c2s());
    let (_, mut server) = sessions();
    let f = frame::signed(&mac, b"", br#"{"type":"shell","seq":0,"cmd":"id"}"#);
    assert_eq!(server.decode(&f).unwrap_err(), ProtocolError::UnknownType("shell".into()));
    let (_, mut server) = sessions();
    let f = frame::signed(&mac, b"", br#"{"type":"heartbeat","seq":0}"#);
    assert!(matches!(server.decode(&f).unwrap_err(), ProtocolError::Malformed(_)));
    let (_, mut server) = sessions();
    let f = frame::signed(&mac, b"", br#"{"type":"rotate","seq":0}"#);
    assert_eq!(server.decode(&f).unwrap_err(), ProtocolError::WrongDirection);
    let (_, mut server) = sessions();
    let f = frame::signed(&mac, b"", br#"not json"#);
    assert!(matches!(server.decode(&f).unwrap_err(), ProtocolError::Malformed(_)));
}

#[test]
fn sealed_token_round_trip_and_mismatches() {
    let (mut client, mut server) = sessions();
    let next = Token::from_parts(Uuid::from_u128(99), [9; 32]);
    let rotation = Uuid::from_u128(5);
    let sealed = server.seal_token(rotation, [3; 12], &next);
    let f = server.encode(S2c::Rotate {
        seq: 0,
        rotation_id: rotation,
        token_id: next.id(),
        sealed_token: sealed.clone(),
        old_token_valid_until: 0,
    });
    client.decode(&f).unwrap();
    assert!(client.open_sealed_token(rotation, next.id(), &sealed).unwrap().same_as(&next));
    assert_eq!(client.open_sealed_token(Uuid::nil(), next.id(), &sealed).unwrap_err(), SealError::Open);
    assert_eq!(client.open_sealed_token(rotation, Uuid::nil(), &sealed).unwrap_err(), SealError::IdMismatch);
    assert_eq!(client.open_sealed_token(rotation, next.id(), "!!").unwrap_err(), SealError::Encoding);
    // Sealed for another session: does not open.
    let (other_client, _) = sessions_with_other_nonce();
    assert_eq!(other_client.open_sealed_token(rotation, next.id(), &sealed).unwrap_err(), SealError::Open);
}

fn sessions_with_other_nonce(
) -> (tether_protocol::session::ClientSession, tether_protocol::session::ServerSession) {
    use tether_protocol::handshake::client::ClientHandshake;
    use tether_protocol::handshake::server::ServerHandshake;
    let t = common::token(1);
    let (server, challenge) = ServerHandshake::new([0x01; 32], common::NOW, 65_536);
    let (awaiting, hello) = ClientHandshake::new("acct", &t, common::delegate())
        .receive_challenge(&challenge, [2; 32], common::NOW)
        .unwrap();
    let v = server.receive_hello(&hello, common::NOW).unwrap().verify(Some(&t.key())).unwrap();
    let (s, w) = v.accept(Uuid::nil(), 30, None);
    (awaiting.receive_welcome(&w).unwrap().0, s)
}

#[test]
fn task_round_trip() {
    let (mut client, mut server) = sessions();
    let f = server.encode(S2c::Task {
        seq: 0,
        task_id: Uuid::from_u128(1),
        kind: TaskKind::Echo,
        payload: "hi".into(),
    });
    match client.decode(&f).unwrap() {
        S2c::Task { task_id, payload, .. } => {
            let r = client.encode(C2s::TaskResult { seq: 0, task_id, ok: true, payload });
            assert!(matches!(server.decode(&r).unwrap(), C2s::TaskResult { ok: true, .. }));
        }
        other => panic!("{other:?}"),
    }
}
