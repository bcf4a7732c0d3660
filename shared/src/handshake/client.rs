//! Client side of the handshake: read the challenge, send the hello, verify the welcome.
use uuid::Uuid;

use crate::error::{HandshakeError, ProtocolError, Rejection};
use crate::frame::{self, HELLO_LABEL, MAX_MAX_FRAME, MIN_MAX_FRAME};
use crate::keys::{MacKey, SessionKeys, TokenKey};
use crate::message::{self, Challenge, DelegateInfo, Hello, Reject, Welcome};
use crate::session::ClientSession;
use crate::token::Token;

/// A client ready to read the challenge.
#[derive(Debug)]
pub struct ClientHandshake {
    account_id: String,
    token_id: Uuid,
    key: TokenKey,
    delegate: DelegateInfo,
}

/// A client that sent its hello and waits for the welcome (or a reject).
#[derive(Debug)]
pub struct AwaitingWelcome {
    keys: SessionKeys,
    max_frame: usize,
}

/// Parses an unsigned reject if that is what `payload` is.
fn unsigned_reject(payload: &[u8]) -> Option<Rejection> {
    message::parse_struct::<Reject>(payload, "reject").ok().map(|r| Rejection {
        code: r.code,
        message: r.message,
        signed: false,
    })
}

impl ClientHandshake {
    /// A handshake for `token` in `account_id`, announcing `delegate`.
    pub fn new(account_id: impl Into<String>, token: &Token, delegate: DelegateInfo) -> Self {
        Self { account_id: account_id.into(), token_id: token.id(), key: token.key(), delegate }
    }

    /// Reads the challenge (or an unsigned reject, e.g. `rate_limited`) and returns the hello
    /// frame to send. `client_nonce` must be 32 fresh random bytes.
    pub fn receive_challenge(
        self,
        bytes: &[u8],
        client_nonce: [u8; 32],
        now: u64,
    ) -> Result<(AwaitingWelcome, Vec<u8>), HandshakeError> {
        let raw = frame::split(bytes, MAX_MAX_FRAME)?;
        if !raw.is_unsigned() {
            return Err(ProtocolError::BadTag.into());
        }
        if let Some(rejection) = unsigned_reject(raw.payload) {
            return Err(HandshakeError::Rejected(rejection));
        }
        let challenge: Challenge = message::parse_struct(raw.payload, "challenge")?;
        if challenge.v != u64::from(crate::PROTOCOL_VERSION) {
            return Err(ProtocolError::UnsupportedVersion { got: challenge.v }.into());
        }
        let max_frame = usize::try_from(challenge.max_frame).unwrap_or(usize::MAX);
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&max_frame) {
            return Err(ProtocolError::BadMaxFrame {
                got: challenge.max_frame,
                min: MIN_MAX_FRAME,
                max: MAX_MAX_FRAME,
            }
            .into());
        }
        let hello = Hello {
            v: u64::from(crate::PROTOCOL_VERSION),
            account_id: self.account_id,
            token_id: self.token_id,
            server_nonce: challenge.server_nonce,
            client_nonce,
            time: now,
            delegate: self.delegate,
        };
        let payload = message::to_payload(&hello);
        let out = frame::signed(&self.key.mac_key(), HELLO_LABEL, &payload);
        let keys = self.key.session_keys(&challenge.server_nonce, &client_nonce);
        Ok((AwaitingWelcome { keys, max_frame }, out))
    }
}

impl AwaitingWelcome {
    /// Verifies the welcome and opens the session; or reports the server's reject, with
    /// whether it was signed. Nothing else is accepted before the welcome.
    pub fn receive_welcome(self, bytes: &[u8]) -> Result<(ClientSession, Welcome), HandshakeError> {
        let raw = frame::split(bytes, self.max_frame)?;
        if raw.is_unsigned() {
            return match unsigned_reject(raw.payload) {
                Some(rejection) => Err(HandshakeError::Rejected(rejection)),
                None => Err(ProtocolError::BadTag.into()),
            };
        }
        let s2c = MacKey::new(self.keys.s2c());
        if !s2c.verify(b"", raw.payload, raw.tag) {
            return Err(ProtocolError::BadTag.into());
        }
        if let Ok(reject) = message::parse_struct::<Reject>(raw.payload, "reject") {
            return Err(HandshakeError::Rejected(Rejection {
                code: reject.code,
                message: reject.message,
                signed: true,
            }));
        }
        let welcome: Welcome = message::parse_struct(raw.payload, "welcome")?;
        if welcome.seq != 0 {
            return Err(ProtocolError::OutOfOrder { expected: 0, got: welcome.seq }.into());
        }
        let session = ClientSession::new(welcome.session_id, &self.keys, self.max_frame);
        Ok((session, welcome))
    }
}
