//! Tether wire protocol v1 and the delegate token format.
//!
//! # Layout
//!
//! This crate does no I/O, reads no clock and draws no randomness of its own: callers pass
//! `now` (unix seconds), nonces and secrets in. Everything that knows frame bytes, key
//! derivation or the token string lives here, so the manager and the delegate never build or
//! parse frames by hand.
//!
//! - [`token`]: the `tdt_` token string (generate, parse with precise errors, redacted display).
//! - [`keys`]: the token secret, key derivation (`K_token`, `K_c2s`, `K_s2c`, `K_seal`) and
//!   prepared MAC keys.
//! - [`frame`]: `version || tag || payload` framing, tag sign and constant-time verify.
//! - [`message`]: the closed set of messages as typed enums.
//! - [`seal`]: `sealed_token` seal and open (ChaCha20-Poly1305 under `K_seal`).
//! - [`handshake`]: the handshake as two type-state machines, client and server.
//! - [`session`]: post-handshake sessions with per-direction keys and sequence numbers.
//! - [`error`]: the typed errors and the WebSocket close codes they map to.
//! - [`text`]: bounding untrusted text on character boundaries; control-character checks.
//! - [`secret`]: [`SecretString`], the redacting, zeroizing type for secret text.
//!
//! See `PROTOCOL.md` beside this crate for the byte-level specification.
#![forbid(unsafe_code)]
// This crate parses untrusted bytes: no indexing or slicing that could panic (tests may).
#![cfg_attr(not(test), warn(clippy::string_slice, clippy::indexing_slicing))]

mod b64;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod message;
pub mod seal;
pub mod secret;
pub mod session;
pub mod text;
pub mod token;
pub mod utc;

pub use error::{ProtocolError, RejectCode, TokenError};
pub use keys::{SessionKeys, TokenKey};
pub use secret::SecretString;
pub use token::Token;

/// Protocol version carried in the first byte of every frame and in `v` of the handshake.
pub const PROTOCOL_VERSION: u8 = 1;
