//! Fuzz drivers for `tether-protocol`, shared by the libFuzzer targets, the seed writer and
//! the seed regression tests.
//!
//! # Layout
//!
//! - [`fixture`]: the fixed token, nonces and clock every driver uses, and a completed
//!   in-memory handshake (no I/O, no randomness: every run is reproducible).
//! - [`input`]: how a driver cuts one fuzz input into a mode byte and length-prefixed parts.
//! - [`boundary`]: text at the limits byte-index code gets wrong (multi-byte characters
//!   straddling 64/128/512 bytes, control characters), mixed into the seeds of every text path.
//! - [`targets`]: one module per fuzz target. Each has `run(&[u8]) -> Reached`, which feeds
//!   the bytes to the protocol code and asserts its invariants (a panic is a finding), and
//!   `seeds()`, valid inputs built with the protocol crate itself (never by hand).
//!
//! Several drivers have a *signing mode*: the driver tags the fuzzed payload with the right
//! key before handing it over, so the fuzzer explores the JSON, sequence and state logic
//! behind the MAC instead of only ever hitting `BadTag`.
#![forbid(unsafe_code)]

pub mod boundary;
pub mod fixture;
pub mod input;
pub mod targets;

/// How far into the code under test one input got; the seed tests use it to prove that the
/// seeds reach the deep paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Refused by the first checks (size, version byte, mode byte).
    Refused,
    /// Parsed, then refused by a later check (tag, nonce, seq, checksum, …).
    Parsed,
    /// Got all the way through: authenticated, accepted, opened.
    Accepted,
}
