//! Server side of the handshake: send the challenge, read the hello, verify it against the
//! token key the caller looked up, then accept (welcome) or reject.
//!
//! The caller drives the checks in the normative order: [`ServerHandshake::receive_hello`]
//! checks the version, the deadline and the echoed nonce; the caller looks the token up in
//! the hello's account; [`HelloReceived::verify`] checks the tag (with a dummy MAC when the
//! token is unknown, so both failures take the same time); the caller checks the token's
//! state and calls [`VerifiedHello::accept`] or [`VerifiedHello::reject`].
use uuid::Uuid;

use crate::error::{ProtocolError, RejectCode};
use crate::frame::{self, HELLO_LABEL};
use crate::keys::{MacKey, SessionKeys, TokenKey, KEY_LEN};
use crate::message::{self, Challenge, Hello, Reject, Welcome};
use crate::session::ServerSession;

use super::HELLO_TIMEOUT_SECS;

/// A server that sent its challenge and waits for the hello.
#[derive(Debug)]
pub struct ServerHandshake {
    server_nonce: [u8; 32],
    started_at: u64,
    max_frame: usize,
}

/// A well-formed hello that echoes the right nonce; its tag is not verified yet.
#[derive(Debug)]
pub struct HelloReceived {
    hello: Hello,
    payload: Vec<u8>,
    tag: [u8; KEY_LEN],
    max_frame: usize,
}

/// A hello whose tag verified under the token's key.
#[derive(Debug)]
pub struct VerifiedHello {
    hello: Hello,
    keys: SessionKeys,
    max_frame: usize,
}

/// The hello did not authenticate: unknown token or bad tag, on purpose not told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: unknown token or bad tag")]
pub struct AuthFailed;

/// The key used for the dummy MAC when the token is unknown.
const DUMMY_KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];

impl ServerHandshake {
    /// Starts a handshake at `now` with a fresh random `server_nonce`; returns the
    /// challenge frame to send.
    pub fn new(server_nonce: [u8; 32], now: u64, max_frame: usize) -> (Self, Vec<u8>) {
        let challenge = Challenge {
            v: u64::from(crate::PROTOCOL_VERSION),
            server_nonce,
            time: now,
            max_frame: max_frame as u64,
        };
        let out = frame::unsigned(&message::to_payload(&challenge));
        (Self { server_nonce, started_at: now, max_frame }, out)
    }

    /// The unix second after which a hello is too late.
    pub fn deadline(&self) -> u64 {
        self.started_at + HELLO_TIMEOUT_SECS
    }

    /// Reads the hello: size, version byte, deadline, JSON shape, protocol version and the
    /// echoed nonce. The tag is verified later, once the caller has looked the token up.
    pub fn receive_hello(self, bytes: &[u8], now: u64) -> Result<HelloReceived, ProtocolError> {
        let raw = frame::split(bytes, self.max_frame)?;
        let elapsed_secs = now.saturating_sub(self.started_at);
        if elapsed_secs > HELLO_TIMEOUT_SECS {
            return Err(ProtocolError::LateHello { elapsed_secs, limit_secs: HELLO_TIMEOUT_SECS });
        }
        let hello: Hello = message::parse_struct(raw.payload, "hello")?;
        if hello.v != u64::from(crate::PROTOCOL_VERSION) {
            return Err(ProtocolError::UnsupportedVersion { got: hello.v });
        }
        check_printable(&hello)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&hello.server_nonce[..], &self.server_nonce[..])) {
            return Err(ProtocolError::NonceMismatch);
        }
        Ok(HelloReceived { hello, payload: raw.payload.to_vec(), tag: *raw.tag, max_frame: self.max_frame })
    }
}

/// Refuses a hello whose account id or delegate fields hold a control or bidi-override
/// character: they are shown to operators (CLI tables, logs), whose terminals would obey them.
fn check_printable(hello: &Hello) -> Result<(), ProtocolError> {
    let d = &hello.delegate;
    for (field, value) in
        [("account_id", &hello.account_id), ("name", &d.name), ("host", &d.host), ("version", &d.version)]
    {
        if crate::text::has_control(value) {
            return Err(ProtocolError::Malformed(format!("hello `{field}` contains a control character")));
        }
    }
    Ok(())
}

impl HelloReceived {
    /// The hello, for looking the token up. Not authenticated yet.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Verifies the tag under `key`, the token's `K_token` if the token exists in the hello's
    /// account. With `None`, a dummy MAC is computed so that an unknown token and a bad tag
    /// take the same time; both yield [`AuthFailed`], to be answered with
    /// [`unsigned_reject`]`(RejectCode::AuthFailed, …)`.
    pub fn verify(self, key: Option<&TokenKey>) -> Result<VerifiedHello, AuthFailed> {
        let (mac, known) = match key {
            Some(key) => (key.mac_key(), true),
            None => (MacKey::new(&DUMMY_KEY), false),
        };
        let tag_ok = mac.verify(HELLO_LABEL, &self.payload, &self.tag);
        match (known, tag_ok, key) {
            (true, true, Some(key)) => Ok(VerifiedHello {
                keys: key.session_keys(&self.hello.server_nonce, &self.hello.client_nonce),
                hello: self.hello,
                max_frame: self.max_frame,
            }),
            _ => Err(AuthFailed),
        }
    }
}

impl VerifiedHello {
    /// The authenticated hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Accepts: returns the session and the welcome frame (s2c seq 0, tagged with `K_s2c`).
    pub fn accept(
        self,
        session_id: Uuid,
        heartbeat_secs: u64,
        token_expires_at: Option<u64>,
    ) -> (ServerSession, Vec<u8>) {
        let welcome = Welcome { seq: 0, session_id, heartbeat_secs, token_expires_at };
        let out = frame::signed(&MacKey::new(self.keys.s2c()), b"", &message::to_payload(&welcome));
        (ServerSession::new(session_id, &self.keys, self.max_frame), out)
    }

    /// Rejects after a verified tag (revoked, expired, ip_not_allowed): the reject is signed
    /// with `K_s2c`, so the delegate can trust it.
    pub fn reject(self, code: RejectCode, message: impl Into<String>) -> Vec<u8> {
        let reject = Reject { code, message: message.into() };
        frame::signed(&MacKey::new(self.keys.s2c()), b"", &message::to_payload(&reject))
    }
}

/// An unsigned reject frame, for every failure before the tag verified.
pub fn unsigned_reject(code: RejectCode, message: impl Into<String>) -> Vec<u8> {
    let reject = Reject { code, message: message.into() };
    frame::unsigned(&message::to_payload(&reject))
}
