//! Shared fixtures for the protocol tests: a token, a delegate, and a completed handshake.
#![allow(dead_code)]
use tether_protocol::handshake::client::{AwaitingWelcome, ClientHandshake};
use tether_protocol::handshake::server::{HelloReceived, ServerHandshake};
use tether_protocol::message::DelegateInfo;
use tether_protocol::session::{ClientSession, ServerSession};
use tether_protocol::Token;
use uuid::Uuid;

pub const NOW: u64 = 1_795_000_000;

pub fn token(seed: u8) -> Token {
    Token::from_parts(
        Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8800 + u128::from(seed)),
        [seed; 32],
    )
}

pub fn delegate() -> DelegateInfo {
    DelegateInfo {
        name: "d1".into(),
        instance: Uuid::from_u128(42),
        version: "0.1.0".into(),
        host: "h".into(),
    }
}

/// Challenge sent, hello built: (server waiting for the hello, client waiting for the welcome, hello frame).
pub fn until_hello(token: &Token) -> (ServerHandshake, AwaitingWelcome, Vec<u8>) {
    let (server, challenge) = ServerHandshake::new([0xa5; 32], NOW, 65_536);
    let client = ClientHandshake::new("acct", token, delegate());
    let (awaiting, hello) = client.receive_challenge(&challenge, [0x5a; 32], NOW).unwrap();
    (server, awaiting, hello)
}

pub fn received(token: &Token) -> (HelloReceived, AwaitingWelcome) {
    let (server, awaiting, hello) = until_hello(token);
    (server.receive_hello(&hello, NOW + 1).unwrap(), awaiting)
}

/// A completed handshake: both sessions.
pub fn sessions() -> (ClientSession, ServerSession) {
    let t = token(1);
    let (received, awaiting) = received(&t);
    let verified = received.verify(Some(&t.key())).unwrap();
    let (server, welcome) = verified.accept(Uuid::from_u128(7), 30, None);
    let (client, _) = awaiting.receive_welcome(&welcome).unwrap();
    (client, server)
}
