//! An authenticated session after the handshake: each direction has its own key and its own
//! sequence counter from 0 (the welcome is s2c seq 0). A bad tag, a wrong seq or a frame of
//! the wrong direction is an error, after which the session accepts nothing more.
use uuid::Uuid;

use crate::error::{ProtocolError, SealError};
use crate::frame;
use crate::keys::{MacKey, SessionKeys, KEY_LEN};
use crate::message::{self, C2s, S2c, Sequenced};
use crate::seal;
use crate::token::Token;

/// Direction-independent core: one key and counter to send, one to receive.
struct Core {
    session_id: Uuid,
    send_key: MacKey,
    recv_key: MacKey,
    seal_key: zeroize::Zeroizing<[u8; KEY_LEN]>,
    next_send: u64,
    next_recv: u64,
    max_frame: usize,
    failed: bool,
}

impl Core {
    fn encode<T: Sequenced>(&mut self, mut msg: T) -> Vec<u8> {
        msg.set_seq(self.next_send);
        self.next_send += 1;
        frame::signed(&self.send_key, b"", &message::to_payload(&msg))
    }

    fn decode<T: Sequenced>(&mut self, bytes: &[u8]) -> Result<T, ProtocolError> {
        if self.failed {
            return Err(ProtocolError::SessionFailed);
        }
        let result = self.decode_inner(bytes);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn decode_inner<T: Sequenced>(&mut self, bytes: &[u8]) -> Result<T, ProtocolError> {
        let raw = frame::split(bytes, self.max_frame)?;
        if !self.recv_key.verify(b"", raw.payload, raw.tag) {
            if self.send_key.verify(b"", raw.payload, raw.tag) {
                return Err(ProtocolError::WrongDirection);
            }
            return Err(ProtocolError::BadTag);
        }
        let msg: T = match message::parse(raw.payload, T::TYPES, "a session message") {
            Err(ProtocolError::Unexpected { got, .. }) if T::OTHER_TYPES.contains(&got.as_str()) => {
                return Err(ProtocolError::WrongDirection)
            }
            other => other?,
        };
        let (expected, got) = (self.next_recv, msg.seq());
        if got < expected {
            return Err(ProtocolError::Replayed { expected, got });
        }
        if got > expected {
            return Err(ProtocolError::OutOfOrder { expected, got });
        }
        self.next_recv += 1;
        Ok(msg)
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id)
            .field("next_send", &self.next_send)
            .field("next_recv", &self.next_recv)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The delegate's side of a session: sends [`C2s`], receives [`S2c`].
#[derive(Debug)]
pub struct ClientSession(Core);

/// The manager's side of a session: sends [`S2c`], receives [`C2s`].
#[derive(Debug)]
pub struct ServerSession(Core);

impl ClientSession {
    /// After a verified welcome (s2c seq 0), the next s2c frame is seq 1.
    pub(crate) fn new(session_id: Uuid, keys: &SessionKeys, max_frame: usize) -> Self {
        Self(Core {
            session_id,
            send_key: MacKey::new(keys.c2s()),
            recv_key: MacKey::new(keys.s2c()),
            seal_key: zeroize::Zeroizing::new(*keys.seal()),
            next_send: 0,
            next_recv: 1,
            max_frame,
            failed: false,
        })
    }

    /// The session id from the welcome.
    pub fn session_id(&self) -> Uuid {
        self.0.session_id
    }

    /// The largest frame the server accepts.
    pub fn max_frame(&self) -> usize {
        self.0.max_frame
    }

    /// Encodes and signs a message, assigning the next c2s sequence number.
    pub fn encode(&mut self, msg: C2s) -> Vec<u8> {
        self.0.encode(msg)
    }

    /// Verifies and decodes a server frame. After an error the session is dead.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<S2c, ProtocolError> {
        self.0.decode(bytes)
    }

    /// Opens the `sealed_token` of a `rotate` and checks it carries the announced token id.
    pub fn open_sealed_token(
        &self,
        rotation_id: Uuid,
        token_id: Uuid,
        sealed_token: &str,
    ) -> Result<Token, SealError> {
        let token = seal::open(&self.0.seal_key, rotation_id, sealed_token)?;
        if token.id() != token_id {
            return Err(SealError::IdMismatch);
        }
        Ok(token)
    }
}

impl ServerSession {
    /// After sending the welcome (s2c seq 0), the next s2c frame is seq 1.
    pub(crate) fn new(session_id: Uuid, keys: &SessionKeys, max_frame: usize) -> Self {
        Self(Core {
            session_id,
            send_key: MacKey::new(keys.s2c()),
            recv_key: MacKey::new(keys.c2s()),
            seal_key: zeroize::Zeroizing::new(*keys.seal()),
            next_send: 1,
            next_recv: 0,
            max_frame,
            failed: false,
        })
    }

    /// The session id sent in the welcome.
    pub fn session_id(&self) -> Uuid {
        self.0.session_id
    }

    /// The maximum frame size announced in the challenge.
    pub fn max_frame(&self) -> usize {
        self.0.max_frame
    }

    /// Encodes and signs a message, assigning the next s2c sequence number.
    pub fn encode(&mut self, msg: S2c) -> Vec<u8> {
        self.0.encode(msg)
    }

    /// Verifies and decodes a delegate frame. After an error the session is dead.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<C2s, ProtocolError> {
        self.0.decode(bytes)
    }

    /// Seals a successor token for this session (the `sealed_token` of `rotate`).
    pub fn seal_token(&self, rotation_id: Uuid, nonce: [u8; 12], token: &Token) -> String {
        seal::seal(&self.0.seal_key, rotation_id, nonce, token)
    }
}
