//! Helpers of the unit tests: tokens, delegate info, and a client and server session that
//! completed the v1 handshake in memory (no sockets).
use rand::RngCore;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::DelegateInfo;
use tether_protocol::session::{ClientSession, ServerSession};
use tether_protocol::Token;
use uuid::Uuid;

/// A fresh random token.
pub fn token() -> Token {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Token::from_parts(Uuid::new_v4(), secret)
}

/// Delegate info for a hello.
pub fn info() -> DelegateInfo {
    DelegateInfo { name: "unit".into(), instance: Uuid::new_v4(), version: "0".into(), host: "h".into() }
}

/// A client and server session that completed the v1 handshake in memory.
pub fn session_pair(token: &Token) -> (ClientSession, ServerSession) {
    let (server, challenge) = ServerHandshake::new([7; 32], 1000, 65_536);
    let (awaiting, hello) =
        ClientHandshake::new("acme", token, info()).receive_challenge(&challenge, [9; 32], 1000).unwrap();
    let verified = server.receive_hello(&hello, 1000).unwrap().verify(Some(&token.key())).unwrap();
    let (server_session, welcome) = verified.accept(Uuid::new_v4(), 30, None);
    let (client_session, _) = awaiting.receive_welcome(&welcome).unwrap();
    (client_session, server_session)
}
