//! Unit tests of rotation bookkeeping with an in-memory session pair (no sockets): a token
//! that does not unseal is acked `failed` at once; a token that cannot be proven fails
//! without being recorded, so the same rotation may be tried again.
use std::time::Duration;

use rand::RngCore;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::{DelegateInfo, RotateOutcome};
use tether_protocol::session::{ClientSession, ServerSession};
use tether_protocol::Token;
use uuid::Uuid;

use super::*;
use crate::config::Endpoint;
use crate::connection::{tls_config, Connector};

fn token() -> Token {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Token::from_parts(Uuid::new_v4(), secret)
}

fn info() -> DelegateInfo {
    DelegateInfo { name: "unit".into(), instance: Uuid::new_v4(), version: "0".into(), host: "h".into() }
}

/// A client and server session that completed the v1 handshake in memory.
fn session_pair(token: &Token) -> (ClientSession, ServerSession) {
    let (server, challenge) = ServerHandshake::new([7; 32], 1000, 65_536);
    let (awaiting, hello) =
        ClientHandshake::new("acme", token, info()).receive_challenge(&challenge, [9; 32], 1000).unwrap();
    let verified = server.receive_hello(&hello, 1000).unwrap().verify(Some(&token.key())).unwrap();
    let (server_session, welcome) = verified.accept(Uuid::new_v4(), 30, None);
    let (client_session, _) = awaiting.receive_welcome(&welcome).unwrap();
    (client_session, server_session)
}

/// A rotator whose manager is unreachable (a closed loopback port).
fn rotator() -> (Rotator, mpsc::Receiver<RotationDone>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = Endpoint { host: "127.0.0.1".into(), port };
    let connector = Connector::new(endpoint, tls_config(&[]).unwrap(), "acme".into(), info());
    Rotator::new(connector, ApplyMode::Manual, None, Duration::from_secs(1))
}

#[tokio::test]
async fn a_tampered_sealed_token_is_acked_failed_at_once() {
    let (rotator, _done) = rotator();
    let old = token();
    let (client, server) = session_pair(&old);
    let (rotation_id, new) = (Uuid::new_v4(), token());
    let mut sealed = server.seal_token(rotation_id, [1; 12], &new);
    let last = sealed.pop().unwrap();
    sealed.push(if last == 'A' { 'B' } else { 'A' });
    let request =
        RotateRequest { rotation_id, token_id: new.id(), sealed_token: &sealed, old_token_valid_until: 0 };
    let (outcome, detail) = rotator.on_rotate(&client, request).expect("immediate ack");
    assert_eq!(outcome, RotateOutcome::Failed);
    assert!(detail.contains("sealed token"), "{detail}");
    assert!(!detail.contains(&new.expose()[4..]));

    // A token id that differs from the sealed one is refused too.
    let sealed = server.seal_token(rotation_id, [2; 12], &new);
    let request = RotateRequest {
        rotation_id,
        token_id: Uuid::new_v4(),
        sealed_token: &sealed,
        old_token_valid_until: 0,
    };
    assert_eq!(rotator.on_rotate(&client, request).unwrap().0, RotateOutcome::Failed);
}

#[tokio::test]
async fn an_unprovable_token_fails_and_the_rotation_can_be_retried() {
    let (rotator, mut done) = rotator();
    let old = token();
    let (client, server) = session_pair(&old);
    let (rotation_id, new) = (Uuid::new_v4(), token());
    let sealed = server.seal_token(rotation_id, [3; 12], &new);
    let request =
        || RotateRequest { rotation_id, token_id: new.id(), sealed_token: &sealed, old_token_valid_until: 0 };
    assert!(rotator.on_rotate(&client, request()).is_none(), "started in the background");
    // While it runs, a repeat neither acks nor starts a second attempt.
    assert!(rotator.on_rotate(&client, request()).is_none());
    let first = tokio::time::timeout(Duration::from_secs(30), done.recv()).await.unwrap().unwrap();
    assert_eq!((first.rotation_id, first.outcome), (rotation_id, RotateOutcome::Failed));
    assert!(first.detail.contains("did not authenticate"), "{}", first.detail);
    assert!(first.switch_to.is_none());
    assert!(done.try_recv().is_err(), "the repeat started a second attempt");
    // Not recorded as done: the same rotation is tried again.
    assert!(rotator.on_rotate(&client, request()).is_none());
    let second = tokio::time::timeout(Duration::from_secs(30), done.recv()).await.unwrap().unwrap();
    assert_eq!(second.outcome, RotateOutcome::Failed);
}
