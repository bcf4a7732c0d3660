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

/// Which side of a session this is: what it sends and what it receives.
pub trait Role: std::fmt::Debug + private::Sealed {
    /// Messages this side sends.
    type Out: Sequenced;
    /// Messages this side receives.
    type In: Sequenced;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Client {}
    impl Sealed for super::Server {}
}

/// The delegate's role: sends [`C2s`], receives [`S2c`].
#[derive(Debug)]
pub struct Client;

/// The manager's role: sends [`S2c`], receives [`C2s`].
#[derive(Debug)]
pub struct Server;

impl Role for Client {
    type Out = C2s;
    type In = S2c;
}

impl Role for Server {
    type Out = S2c;
    type In = C2s;
}

/// One side of an authenticated session.
#[derive(Debug)]
pub struct Session<R: Role> {
    core: Core,
    role: std::marker::PhantomData<R>,
}

/// The delegate's side of a session: sends [`C2s`], receives [`S2c`].
pub type ClientSession = Session<Client>;

/// The manager's side of a session: sends [`S2c`], receives [`C2s`].
pub type ServerSession = Session<Server>;

impl<R: Role> Session<R> {
    /// The session id from the welcome.
    pub fn session_id(&self) -> Uuid {
        self.core.session_id
    }

    /// The maximum frame size announced in the challenge.
    pub fn max_frame(&self) -> usize {
        self.core.max_frame
    }

    /// Encodes and signs a message, assigning this direction's next sequence number.
    pub fn encode(&mut self, msg: R::Out) -> Vec<u8> {
        self.core.encode(msg)
    }

    /// Verifies and decodes a frame from the peer. After an error the session is dead.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<R::In, ProtocolError> {
        self.core.decode(bytes)
    }

    /// `send` and `recv` keys; the welcome was s2c seq 0, so s2c counts on from 1.
    fn with_keys(
        session_id: Uuid,
        send: &[u8; KEY_LEN],
        recv: &[u8; KEY_LEN],
        keys: &SessionKeys,
        max_frame: usize,
        next_send: u64,
        next_recv: u64,
    ) -> Self {
        Self {
            core: Core {
                session_id,
                send_key: MacKey::new(send),
                recv_key: MacKey::new(recv),
                seal_key: zeroize::Zeroizing::new(*keys.seal()),
                next_send,
                next_recv,
                max_frame,
                failed: false,
            },
            role: std::marker::PhantomData,
        }
    }
}

impl Session<Client> {
    /// After a verified welcome (s2c seq 0), the next s2c frame is seq 1.
    pub(crate) fn new(session_id: Uuid, keys: &SessionKeys, max_frame: usize) -> Self {
        Self::with_keys(session_id, keys.c2s(), keys.s2c(), keys, max_frame, 0, 1)
    }

    /// Opens the `sealed_token` of a `rotate` and checks it carries the announced token id.
    pub fn open_sealed_token(
        &self,
        rotation_id: Uuid,
        token_id: Uuid,
        sealed_token: &str,
    ) -> Result<Token, SealError> {
        let token = seal::open(&self.core.seal_key, rotation_id, sealed_token)?;
        if token.id() != token_id {
            return Err(SealError::IdMismatch);
        }
        Ok(token)
    }
}

impl Session<Server> {
    /// After sending the welcome (s2c seq 0), the next s2c frame is seq 1.
    pub(crate) fn new(session_id: Uuid, keys: &SessionKeys, max_frame: usize) -> Self {
        Self::with_keys(session_id, keys.s2c(), keys.c2s(), keys, max_frame, 1, 0)
    }

    /// Seals a successor token for this session (the `sealed_token` of `rotate`).
    pub fn seal_token(&self, rotation_id: Uuid, nonce: [u8; 12], token: &Token) -> String {
        seal::seal(&self.core.seal_key, rotation_id, nonce, token)
    }
}
