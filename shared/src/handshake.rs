//! The v1 handshake as two type-state machines that take bytes and `now` and return frames
//! to send. Client: [`client::ClientHandshake`] → [`client::AwaitingWelcome`] →
//! [`crate::session::ClientSession`]. Server: [`server::ServerHandshake`] →
//! [`server::HelloReceived`] → [`server::VerifiedHello`] → [`crate::session::ServerSession`].
pub mod client;
pub mod server;

/// The hello must arrive within this many seconds of the challenge, or the server closes
/// with 4008.
pub const HELLO_TIMEOUT_SECS: u64 = 10;
