//! Typed errors of the protocol crate and the WebSocket close codes they map to.
use std::fmt;

/// WebSocket close codes used by Tether v1.
pub mod close {
    /// Normal closure (RFC 6455).
    pub const NORMAL: u16 = 1000;
    /// Going away: the peer shuts down or restarts (sent after `goodbye`).
    pub const GOING_AWAY: u16 = 1001;
    /// Message too big (RFC 6455): a frame over the announced maximum.
    pub const TOO_BIG: u16 = 1009;
    /// Authentication failed: unknown token or bad tag.
    pub const AUTH_FAILED: u16 = 4001;
    /// The token is revoked.
    pub const REVOKED: u16 = 4003;
    /// The token is expired.
    pub const EXPIRED: u16 = 4004;
    /// The source address is not in the token's allowed CIDRs.
    pub const IP_NOT_ALLOWED: u16 = 4005;
    /// Protocol violation: bad tag in session, wrong seq, wrong direction, late hello, …
    pub const PROTOCOL: u16 = 4008;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_VERSION: u16 = 4010;
    /// Too many failed handshakes from this source address.
    pub const RATE_LIMITED: u16 = 4029;
}

/// Why a token string could not be parsed. Never carries any part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The string does not start with `tdt_`.
    #[error("token does not start with the `tdt_` prefix (is it a Tether delegate token?)")]
    Prefix,
    /// The string is not 74 characters long.
    #[error("token has {got} characters, expected 74 (was it truncated or padded?)")]
    Length {
        /// Characters found.
        got: usize,
    },
    /// The part after the prefix is not URL-safe base64 without padding.
    #[error("token contains characters outside URL-safe base64")]
    Encoding,
    /// The CRC-32 does not match: a character was mistyped or altered.
    #[error("token checksum does not match (a character was mistyped or altered)")]
    Checksum,
}

/// Reject codes of the handshake, each with its WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// Unknown token or bad tag (indistinguishable on purpose).
    AuthFailed,
    /// The token is revoked.
    Revoked,
    /// The token is expired.
    Expired,
    /// The source address is not allowed for this token.
    IpNotAllowed,
    /// The client broke the protocol.
    Protocol,
    /// Too many failed handshakes from this address.
    RateLimited,
    /// The client speaks a version the server does not.
    UnsupportedVersion,
}

impl RejectCode {
    /// The WebSocket close code that follows this reject.
    pub fn close_code(self) -> u16 {
        match self {
            Self::AuthFailed => close::AUTH_FAILED,
            Self::Revoked => close::REVOKED,
            Self::Expired => close::EXPIRED,
            Self::IpNotAllowed => close::IP_NOT_ALLOWED,
            Self::Protocol => close::PROTOCOL,
            Self::RateLimited => close::RATE_LIMITED,
            Self::UnsupportedVersion => close::UNSUPPORTED_VERSION,
        }
    }

    /// The wire name, e.g. `auth_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::Protocol => "protocol",
            Self::RateLimited => "rate_limited",
            Self::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reject received from the server during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What the server said.
    pub code: RejectCode,
    /// The server's human-readable explanation.
    pub message: String,
    /// Whether the reject carried a valid `K_s2c` tag, i.e. came from a server that holds
    /// the token key. Only a signed reject can be trusted to be final.
    pub signed: bool,
}

impl Rejection {
    /// A signed `revoked` or `expired`: the delegate must stop, not retry.
    pub fn is_final(&self) -> bool {
        self.signed && matches!(self.code, RejectCode::Revoked | RejectCode::Expired)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.signed { "signed" } else { "unsigned" };
        write!(f, "{how} reject `{}`: {}", self.code, self.message)
    }
}

/// Every way a frame or a handshake step can be wrong. Each variant is distinct so that tests
/// and logs can tell replay from reorder from tampering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Fewer bytes than the 33-byte header.
    #[error("frame of {len} bytes is shorter than the 33-byte header")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// The first byte is not a known protocol version.
    #[error("frame version byte {got:#04x} is not supported (expected 0x01)")]
    BadVersion {
        /// The version byte received.
        got: u8,
    },
    /// The frame is larger than the announced maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversize {
        /// Bytes received.
        len: usize,
        /// The announced maximum.
        max: usize,
    },
    /// The tag does not verify under the expected key.
    #[error("frame tag does not verify")]
    BadTag,
    /// The tag verifies under the key of the other direction: a reflected frame.
    #[error("frame belongs to the other direction (reflected)")]
    WrongDirection,
    /// The payload is not the JSON object the message type requires.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The `type` is not in the closed message set.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// A known message arrived where the state machine does not allow it.
    #[error("unexpected `{got}` message, expected {expected}")]
    Unexpected {
        /// What the state machine waited for.
        expected: &'static str,
        /// What arrived.
        got: String,
    },
    /// A sequence number already seen: a replayed or duplicated frame.
    #[error("replayed frame: seq {got}, expected {expected}")]
    Replayed {
        /// The next sequence number expected.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// A sequence number from the future: a dropped or reordered frame.
    #[error("out-of-order frame: seq {got}, expected {expected}")]
    OutOfOrder {
        /// The next sequence number expected.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// The hello came after the handshake deadline.
    #[error("hello arrived {elapsed_secs} s after the challenge (limit {limit_secs} s)")]
    LateHello {
        /// Seconds since the challenge.
        elapsed_secs: u64,
        /// The limit.
        limit_secs: u64,
    },
    /// The hello does not echo this connection's server nonce.
    #[error("hello does not echo this connection's server nonce")]
    NonceMismatch,
    /// The handshake names a protocol version this side does not speak.
    #[error("protocol version {got} is not supported (this side speaks 1)")]
    UnsupportedVersion {
        /// The version received.
        got: u64,
    },
    /// The challenge announces a maximum frame size outside sane bounds.
    #[error("announced max_frame {got} is outside {min}..={max}")]
    BadMaxFrame {
        /// Announced.
        got: u64,
        /// Lowest accepted.
        min: usize,
        /// Highest accepted.
        max: usize,
    },
    /// An earlier error already ended this session; nothing more is accepted.
    #[error("session already failed")]
    SessionFailed,
}

impl ProtocolError {
    /// The WebSocket close code a peer should close with after this error.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Oversize { .. } => close::TOO_BIG,
            Self::UnsupportedVersion { .. } => close::UNSUPPORTED_VERSION,
            _ => close::PROTOCOL,
        }
    }

    /// The reject code a server sends for this error during the handshake.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            Self::UnsupportedVersion { .. } => RejectCode::UnsupportedVersion,
            _ => RejectCode::Protocol,
        }
    }
}

/// A handshake step failed: either the peer broke the protocol or the server rejected us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes received break the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The server sent a reject.
    #[error("{0}")]
    Rejected(Rejection),
}

/// Why a `sealed_token` could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Not base64url, or shorter than nonce plus AEAD tag.
    #[error("sealed token is not well-formed base64url of nonce and ciphertext")]
    Encoding,
    /// The AEAD tag does not verify (wrong key, wrong rotation id, or tampered).
    #[error("sealed token does not open under this session's seal key")]
    Open,
    /// The plaintext is not a valid token string.
    #[error("sealed plaintext is not a valid token: {0}")]
    Token(TokenError),
    /// The sealed token's id differs from the `token_id` the rotate message announced.
    #[error("sealed token id does not match the announced token id")]
    IdMismatch,
}
