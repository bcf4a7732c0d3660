//! Opening a `sealed_token` (the successor token inside a `rotate`) on arbitrary input.
//!
//! Input: a mode byte, then the rest. Mode 0: the rest is the `sealed_token` text, opened by
//! the fixture client session for the fixture rotation id. Mode 1: the rest is a *plaintext*
//! the driver seals correctly (ChaCha20-Poly1305 under `K_seal`, aad = rotation id), so the
//! fuzzer reaches the token parser behind the AEAD. Mode 2: the rest is sealed text opened
//! under another rotation id, which must never open.
//!
//! Invariants: a correctly sealed plaintext opens exactly when it is a valid token string, and
//! then to that token; nothing opens under a wrong rotation id; an opened token carries the
//! announced id.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use tether_protocol::error::SealError;
use tether_protocol::{seal, Token};
use uuid::Uuid;

use crate::fixture::{self, ROTATION_ID};
use crate::input;
use crate::Reached;

/// Mode byte: the rest is the sealed text.
pub const SEALED: u8 = 0;
/// Mode byte: the rest is a plaintext the driver seals.
pub const PLAINTEXT: u8 = 1;
/// Mode byte: the rest is sealed text, opened under another rotation id.
pub const WRONG_ROTATION: u8 = 2;

/// Opens one input and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let Some((mode, rest)) = input::mode(data) else { return Reached::Refused };
    let keys = fixture::session_keys();
    match mode % 3 {
        SEALED => {
            let (client, _) = fixture::sessions();
            let text = String::from_utf8_lossy(rest);
            let announced = fixture::token(2).id();
            match client.open_sealed_token(ROTATION_ID, announced, &text) {
                Ok(token) => {
                    assert_eq!(token.id(), announced);
                    Reached::Accepted
                }
                Err(SealError::Encoding) => Reached::Refused,
                Err(_) => Reached::Parsed,
            }
        }
        PLAINTEXT => {
            let cipher = ChaCha20Poly1305::new(Key::from_slice(keys.seal()));
            let aad = ROTATION_ID.hyphenated().to_string();
            let sealed = cipher
                .encrypt(Nonce::from_slice(&[3; 12]), Payload { msg: rest, aad: aad.as_bytes() })
                .expect("encryption of a short message cannot fail");
            let text = URL_SAFE_NO_PAD.encode([&[3u8; 12][..], &sealed].concat());
            let parsed = std::str::from_utf8(rest).ok().and_then(|s| Token::parse(s).ok());
            match (seal::open(keys.seal(), ROTATION_ID, &text), parsed) {
                (Ok(opened), Some(expected)) => {
                    assert!(opened.same_as(&expected));
                    Reached::Accepted
                }
                (Err(SealError::Token(_)), None) => Reached::Parsed,
                (got, expected) => panic!(
                    "sealed plaintext opened as {:?}, expected {:?}",
                    got.map(|t| t.id()),
                    expected.map(|t| t.id())
                ),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let other = Uuid::from_u128(ROTATION_ID.as_u128() ^ 1);
            assert!(seal::open(keys.seal(), other, &text).is_err(), "opened under a wrong rotation id");
            Reached::Parsed
        }
    }
}

/// A correctly sealed successor in each mode, and its plaintext.
pub fn seeds() -> Vec<Vec<u8>> {
    let keys = fixture::session_keys();
    let successor = fixture::token(2);
    let sealed = seal::seal(keys.seal(), ROTATION_ID, [3; 12], &successor);
    vec![
        [&[SEALED][..], sealed.as_bytes()].concat(),
        [&[PLAINTEXT][..], successor.expose().as_bytes()].concat(),
        [&[WRONG_ROTATION][..], sealed.as_bytes()].concat(),
        [&[SEALED][..], seal::seal(keys.seal(), ROTATION_ID, [4; 12], &fixture::token(3)).as_bytes()]
            .concat(),
    ]
}
