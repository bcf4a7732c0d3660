//! The server side of the handshake on arbitrary bytes: `receive_hello` then `verify`, the
//! path an unauthenticated network peer reaches.
//!
//! Input: a mode byte, then the rest. Mode 0: the rest is the hello frame as received.
//! Mode 1: the rest is a hello *payload*, which the driver tags with the fixture token's
//! `K_token`, so the fuzzer explores everything behind the tag. Mode 2: the payload is tagged
//! with another token's key, which must never authenticate.
//!
//! Invariants: only a payload of type `hello` is read as a hello; a hello is never accepted after the 10 s deadline; an unknown token (no key)
//! never verifies; a hello tagged with another key never verifies; a correctly tagged hello
//! for the fixture token always verifies; the welcome of an accepted hello is tagged with the
//! `K_s2c` of that hello's nonces.
use tether_protocol::frame::{self, HELLO_LABEL};
use tether_protocol::handshake::HELLO_TIMEOUT_SECS;
use tether_protocol::keys::MacKey;
use tether_protocol::{RejectCode, TokenKey};

use crate::fixture::{self, ACCOUNT, NOW};
use crate::input;
use crate::Reached;

/// Mode byte: the rest is the frame as received.
pub const RAW: u8 = 0;
/// Mode byte: the rest is a payload the driver tags with the fixture token's key.
pub const SIGNED: u8 = 1;
/// Mode byte: the rest is a payload the driver tags with a different token's key.
pub const WRONG_KEY: u8 = 2;

/// Feeds one input to a fresh server handshake and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let Some((mode, rest)) = input::mode(data) else { return Reached::Refused };
    let mode = mode % 3;
    let right = fixture::token(1).key();
    let frame = match mode {
        RAW => rest.to_vec(),
        SIGNED => frame::signed(&MacKey::new(right.expose_bytes()), HELLO_LABEL, rest),
        _ => frame::signed(&MacKey::new(fixture::token(2).key().expose_bytes()), HELLO_LABEL, rest),
    };

    // A late hello is refused whatever it contains.
    let (late, _) = fixture::server();
    assert!(late.receive_hello(&frame, NOW + HELLO_TIMEOUT_SECS + 1).is_err());

    let (hs, _) = fixture::server();
    let received = match hs.receive_hello(&frame, NOW + 1) {
        Ok(received) => received,
        Err(err) => {
            let _ = (err.close_code(), err.reject_code(), err.to_string());
            return Reached::Refused;
        }
    };
    let hello = received.hello().clone();
    let sent = frame::split(&frame, fixture::MAX_FRAME).expect("accepted hello splits");
    assert_eq!(
        input::payload_type(sent.payload).as_deref(),
        Some("hello"),
        "a payload of another type was taken for a hello"
    );
    assert_eq!(hello.server_nonce, fixture::SERVER_NONCE, "a hello with a foreign nonce got through");
    let known = hello.account_id == ACCOUNT && hello.token_id == fixture::token(1).id();

    // Unknown token: the dummy MAC must never verify.
    let (hs, _) = fixture::server();
    let again = hs.receive_hello(&frame, NOW + 1).expect("same bytes, same answer");
    assert!(again.verify(None).is_err(), "an unknown token authenticated");

    let key: Option<TokenKey> = known.then(|| fixture::token(1).key());
    match received.verify(key.as_ref()) {
        Err(_) => {
            assert!(!(known && mode == SIGNED), "a correctly tagged hello was refused");
            let _ = tether_protocol::handshake::server::unsigned_reject(RejectCode::AuthFailed, "x");
            Reached::Parsed
        }
        Ok(verified) => {
            assert!(known, "a hello verified without the token's key");
            assert_ne!(mode, WRONG_KEY, "a hello tagged with another token's key verified");
            let keys = right.session_keys(&hello.server_nonce, &hello.client_nonce);
            let (_, welcome) = verified.accept(fixture::SESSION_ID, 30, None);
            let raw = frame::split(&welcome, fixture::MAX_FRAME).expect("welcome splits");
            assert!(MacKey::new(keys.s2c()).verify(b"", raw.payload, raw.tag));
            Reached::Accepted
        }
    }
}

/// The fixture hello as a raw frame and as a payload to sign, plus near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    let (_, hello) = fixture::client_after_challenge();
    let payload = hello[frame::HEADER_LEN..].to_vec();
    let mut seeds = vec![
        [&[RAW][..], &hello].concat(),
        [&[SIGNED][..], &payload].concat(),
        [&[WRONG_KEY][..], &payload].concat(),
    ];
    // The same hello for another account and for an unknown token id.
    let text = String::from_utf8(payload).expect("JSON is UTF-8");
    let other_account = text.replace(ACCOUNT, "acct-other");
    let other_token = text.replace(&fixture::token(1).id().to_string(), &fixture::token(3).id().to_string());
    let version_2 = text.replace("\"v\":1", "\"v\":2");
    for variant in [other_account, other_token, version_2] {
        seeds.push([&[SIGNED][..], variant.as_bytes()].concat());
    }
    // The frame that aborted the manager, and hellos whose type or delegate fields straddle
    // the bounds with multi-byte characters or carry control characters.
    seeds.push([&[RAW][..], &crate::boundary::crash_frame()].concat());
    let name = format!("\"name\":\"{}\"", fixture::delegate().name);
    for evil in crate::boundary::straddling().into_iter().chain(crate::boundary::control()) {
        let quoted = serde_json::to_string(&evil).expect("a string serialises");
        seeds.push([&[SIGNED][..], text.replacen("\"hello\"", &quoted, 1).as_bytes()].concat());
        seeds.push([&[SIGNED][..], text.replace(&name, &format!("\"name\":{quoted}")).as_bytes()].concat());
    }
    seeds
}
