//! Regression tests for input that once aborted both programs: a `type` whose 64th byte falls
//! inside a multi-byte character (issue 10, finding 1), and text that would steer an
//! operator's terminal (finding 9). Every parse path of both sides gets such frames.
mod common;

use common::*;
use tether_protocol::error::{HandshakeError, ProtocolError};
use tether_protocol::frame;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::DelegateInfo;

/// `type` values whose bytes 63..66 straddle a multi-byte character, of every UTF-8 width.
fn evil_types() -> Vec<String> {
    let mut out = Vec::new();
    for tail in ["é", "日", "😀", "é\u{301}"] {
        for pad in 60..=66 {
            out.push(format!("{}{tail}", "a".repeat(pad)));
        }
    }
    out.push("é".repeat(40));
    out.push("😀".repeat(20));
    out
}

fn payload(kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "type": kind })).unwrap()
}

#[test]
fn a_multibyte_type_is_an_error_not_a_panic_for_the_server() {
    for kind in evil_types() {
        let (server, _) = ServerHandshake::new([1; 32], NOW, 65_536);
        let err = server.receive_hello(&frame::unsigned(&payload(&kind)), NOW).unwrap_err();
        match err {
            ProtocolError::UnknownType(shown) => {
                assert!(shown.len() <= 64, "{} bytes shown", shown.len());
                assert!(kind.starts_with(&shown));
            }
            other => panic!("expected UnknownType for {kind:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_multibyte_type_is_an_error_not_a_panic_for_the_delegate() {
    let t = token(1);
    for kind in evil_types() {
        let hs = ClientHandshake::new("acct", &t, delegate());
        match hs.receive_challenge(&frame::unsigned(&payload(&kind)), [2; 32], NOW) {
            Err(HandshakeError::Protocol(ProtocolError::UnknownType(shown))) => assert!(shown.len() <= 64),
            other => panic!("expected UnknownType for {kind:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_multibyte_type_in_a_session_frame_is_an_error_not_a_panic() {
    use tether_protocol::keys::MacKey;
    // The fixture's session keys, so the type is reached after the tag check.
    let keys = token(1).key().session_keys(&[0xa5; 32], &[0x5a; 32]);
    let (c2s, s2c) = (MacKey::new(keys.c2s()), MacKey::new(keys.s2c()));
    for kind in evil_types() {
        let body = serde_json::to_vec(&serde_json::json!({ "type": kind, "seq": 0 })).unwrap();
        let (_, mut server) = sessions();
        match server.decode(&frame::signed(&c2s, b"", &body)) {
            Err(ProtocolError::UnknownType(shown)) => assert!(shown.len() <= 64 && kind.starts_with(&shown)),
            other => panic!("expected UnknownType for {kind:?}, got {other:?}"),
        }
        let body = serde_json::to_vec(&serde_json::json!({ "type": kind, "seq": 1 })).unwrap();
        let (mut client, _) = sessions();
        assert!(matches!(
            client.decode(&frame::signed(&s2c, b"", &body)),
            Err(ProtocolError::UnknownType(_))
        ));
    }
}

#[test]
fn hello_fields_with_control_characters_are_refused() {
    let t = token(1);
    let evil = [
        "\u{1b}]0;title\u{7}\u{1b}[2J",
        "line\nbreak",
        "bidi\u{202e}txt",
        "nul\u{0}",
        "del\u{7f}",
        "c1\u{9b}31m",
    ];
    for value in evil {
        for field in 0..4 {
            let mut d: DelegateInfo = delegate();
            let mut account = "acct".to_owned();
            match field {
                0 => d.name = value.into(),
                1 => d.host = value.into(),
                2 => d.version = value.into(),
                _ => account = value.into(),
            }
            let (server, challenge) = ServerHandshake::new([0xa5; 32], NOW, 65_536);
            let (_, hello) =
                ClientHandshake::new(&account, &t, d).receive_challenge(&challenge, [0x5a; 32], NOW).unwrap();
            match server.receive_hello(&hello, NOW) {
                Err(ProtocolError::Malformed(m)) => assert!(m.contains("control character"), "{m}"),
                other => panic!("expected a refusal for field {field} = {value:?}, got {other:?}"),
            }
        }
    }
    // Multi-byte text that is printable stays welcome.
    let mut d = delegate();
    d.name = "délégué-日本-😀".into();
    let (server, challenge) = ServerHandshake::new([0xa5; 32], NOW, 65_536);
    let (_, hello) =
        ClientHandshake::new("acct", &t, d).receive_challenge(&challenge, [0x5a; 32], NOW).unwrap();
    assert_eq!(server.receive_hello(&hello, NOW).unwrap().hello().delegate.name, "délégué-日本-😀");
}
