//! The client side of the handshake on arbitrary bytes: `receive_challenge` then
//! `receive_welcome`, the path a fake or compromised server (or a MITM) reaches.
//!
//! Input: a mode byte, then two length-prefixed chunks, the challenge and the welcome.
//! Mode 0: both are frames as received. Mode 1: the challenge is a frame; the welcome chunk is
//! a payload the driver tags with the `K_s2c` of this handshake, so the fuzzer explores what
//! lies behind the tag. Mode 2: like 1, but the challenge chunk is a payload the driver wraps
//! as an unsigned frame.
//!
//! Invariants: only payloads of type `challenge` / `welcome` are read as such; the hello the client sends echoes the challenge's nonce, carries the fixture
//! nonce and account and is tagged with `K_token`; a welcome or a *signed* reject is only
//! ever accepted when its tag verifies under `K_s2c`; only a signed reject is final.
use tether_protocol::error::HandshakeError;
use tether_protocol::frame::{self, HELLO_LABEL};
use tether_protocol::keys::MacKey;
use tether_protocol::message::{Challenge, Hello, S2c, Welcome};
use tether_protocol::RejectCode;

use crate::fixture::{self, ACCOUNT, CLIENT_NONCE, NOW};
use crate::input;
use crate::Reached;

/// Mode byte: both chunks are frames as received.
pub const RAW: u8 = 0;
/// Mode byte: the welcome chunk is a payload the driver tags with `K_s2c`.
pub const SIGN_WELCOME: u8 = 1;
/// Mode byte: the challenge chunk is a payload (wrapped unsigned), the welcome is signed.
pub const WRAP_BOTH: u8 = 2;

/// Runs one client handshake on the input and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let Some((mode, rest)) = input::mode(data) else { return Reached::Refused };
    let mode = mode % 3;
    let parts = input::chunks(rest, 2);
    let challenge_part = parts.first().copied().unwrap_or_default();
    let welcome_part = parts.get(1).copied().unwrap_or_default();
    let challenge = match mode {
        WRAP_BOTH => frame::unsigned(challenge_part),
        _ => challenge_part.to_vec(),
    };

    let (awaiting, hello) = match fixture::client().receive_challenge(&challenge, CLIENT_NONCE, NOW) {
        Ok(ok) => ok,
        Err(HandshakeError::Rejected(rejection)) => {
            assert!(!rejection.signed && !rejection.is_final(), "an unsigned challenge reject was final");
            return Reached::Parsed;
        }
        Err(err) => {
            let _ = err.to_string();
            return Reached::Refused;
        }
    };

    // The hello: echoes the nonce, carries ours, is tagged with K_token.
    let token_key = fixture::token(1).key();
    let sent = frame::split(&hello, usize::MAX).expect("our hello splits");
    assert!(MacKey::new(token_key.expose_bytes()).verify(HELLO_LABEL, sent.payload, sent.tag));
    let parsed: Hello = serde_json::from_slice(sent.payload).expect("our hello parses");
    let announced = frame::split(&challenge, usize::MAX).expect("accepted challenge splits");
    assert_eq!(
        input::payload_type(announced.payload).as_deref(),
        Some("challenge"),
        "a payload of another type was taken for a challenge"
    );
    let announced: Challenge = serde_json::from_slice(announced.payload).expect("accepted challenge parses");
    assert_eq!(parsed.server_nonce, announced.server_nonce);
    assert_eq!(parsed.client_nonce, CLIENT_NONCE);
    assert_eq!(parsed.account_id, ACCOUNT);

    let keys = token_key.session_keys(&announced.server_nonce, &CLIENT_NONCE);
    let s2c = MacKey::new(keys.s2c());
    let welcome = match mode {
        RAW => welcome_part.to_vec(),
        _ => frame::signed(&s2c, b"", welcome_part),
    };
    let tagged_by_server =
        frame::split(&welcome, usize::MAX).map(|raw| s2c.verify(b"", raw.payload, raw.tag)).unwrap_or(false);

    let welcome_frame = welcome.clone();
    match awaiting.receive_welcome(&welcome) {
        Ok((mut session, welcome)) => {
            assert!(tagged_by_server, "a welcome was accepted without a K_s2c tag");
            assert_eq!(welcome.seq, 0);
            let raw = frame::split(&welcome_frame, usize::MAX).expect("accepted welcome splits");
            assert_eq!(
                input::payload_type(raw.payload).as_deref(),
                Some("welcome"),
                "a payload of another type was taken for a welcome"
            );
            // The session now refuses a replay of the welcome itself.
            let replay: Result<S2c, _> = session.decode(&frame::signed(&s2c, b"", welcome_part));
            assert!(replay.is_err(), "the welcome was accepted again as a session frame");
            Reached::Accepted
        }
        Err(HandshakeError::Rejected(rejection)) => {
            if rejection.signed {
                assert!(tagged_by_server, "a reject counted as signed without a K_s2c tag");
            }
            if rejection.is_final() {
                assert!(matches!(rejection.code, RejectCode::Revoked | RejectCode::Expired));
            }
            Reached::Parsed
        }
        Err(err) => {
            let _ = err.to_string();
            Reached::Parsed
        }
    }
}

/// The fixture challenge with a welcome, signed rejects and unsigned rejects, in every mode.
pub fn seeds() -> Vec<Vec<u8>> {
    let (server, challenge) = fixture::server();
    let (_, hello) = fixture::client_after_challenge();
    let challenge_payload = &challenge[frame::HEADER_LEN..];
    let welcome = {
        let received = server.receive_hello(&hello, NOW + 1).expect("fixture hello");
        let verified = received.verify(Some(&fixture::token(1).key())).expect("fixture hello verifies");
        verified.accept(fixture::SESSION_ID, 30, Some(NOW + 60)).1
    };
    let signed_reject = |code: RejectCode| {
        let (server, _) = fixture::server();
        let received = server.receive_hello(&hello, NOW + 1).expect("fixture hello");
        received.verify(Some(&fixture::token(1).key())).expect("verifies").reject(code, "no")
    };
    let revoked = signed_reject(RejectCode::Revoked);
    let expired = signed_reject(RejectCode::Expired);
    let unsigned = tether_protocol::handshake::server::unsigned_reject(RejectCode::Revoked, "forged");
    let welcome_payload = &welcome[frame::HEADER_LEN..];
    let other_welcome = serde_json::to_vec(&Welcome {
        seq: 1,
        session_id: fixture::SESSION_ID,
        heartbeat_secs: 30,
        token_expires_at: None,
    })
    .expect("serializes");
    vec![
        input::join_chunks(RAW, &[&challenge, &welcome]),
        input::join_chunks(RAW, &[&challenge, &revoked]),
        input::join_chunks(RAW, &[&challenge, &expired]),
        input::join_chunks(RAW, &[&challenge, &unsigned]),
        input::join_chunks(RAW, &[&unsigned, &welcome]),
        input::join_chunks(SIGN_WELCOME, &[&challenge, welcome_payload]),
        input::join_chunks(SIGN_WELCOME, &[&challenge, &revoked[frame::HEADER_LEN..]]),
        input::join_chunks(SIGN_WELCOME, &[&challenge, &other_welcome]),
        input::join_chunks(WRAP_BOTH, &[challenge_payload, welcome_payload]),
        // The unsigned "challenge" that aborted the delegate.
        input::join_chunks(RAW, &[&crate::boundary::crash_frame(), &welcome]),
    ]
}
