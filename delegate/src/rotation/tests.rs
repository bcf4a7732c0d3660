//! Unit tests of rotation bookkeeping with an in-memory session pair (no sockets): a token
//! that does not unseal is acked `failed` at once; a token that cannot be proven fails
//! without being recorded, so the same rotation may be tried again.
use std::sync::Arc;
use std::time::Duration;

use tether_protocol::message::RotateOutcome;
use uuid::Uuid;

use super::*;
use crate::config::Endpoint;
use crate::connection::Connector;
use crate::test_support::{info, session_pair, token};

/// A rotator whose manager is unreachable (a closed loopback port).
fn rotator() -> (Rotator, mpsc::Receiver<RotationDone>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = Endpoint { host: "127.0.0.1".into(), port };
    let connector = Connector::new(
        vec![endpoint],
        Arc::new(crate::tls::client_config(&[]).unwrap()),
        "acme".into(),
        info(),
    );
    Rotator::new(connector, ApplyMode::Manual, None, Duration::from_secs(1))
}

#[test]
fn a_tampered_sealed_token_is_acked_failed_at_once() {
    let ledger = Ledger::default();
    let old = token();
    let (client, server) = session_pair(&old);
    let (rotation_id, new) = (Uuid::new_v4(), token());
    let mut sealed = server.seal_token(rotation_id, [1; 12], &new);
    let last = sealed.pop().unwrap();
    sealed.push(if last == 'A' { 'B' } else { 'A' });
    let request =
        RotateRequest { rotation_id, token_id: new.id(), sealed_token: &sealed, old_token_valid_until: 0 };
    let Admission::Ack(outcome, detail) = ledger.admit(&client, request) else { panic!("immediate ack") };
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
    assert!(matches!(ledger.admit(&client, request), Admission::Ack(RotateOutcome::Failed, _)));
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
    let Admission::Start(start) = rotator.ledger().admit(&client, request()) else { panic!("not started") };
    assert_eq!(start.token.id(), new.id());
    rotator.start(start);
    // While it runs, a repeat neither acks nor starts a second attempt.
    assert!(matches!(rotator.ledger().admit(&client, request()), Admission::Running));
    let first = tokio::time::timeout(Duration::from_secs(30), done.recv()).await.unwrap().unwrap();
    assert_eq!((first.rotation_id, first.outcome), (rotation_id, RotateOutcome::Failed));
    assert!(first.detail.contains("did not authenticate"), "{}", first.detail);
    assert!(first.switch_to.is_none());
    assert!(done.try_recv().is_err(), "the repeat started a second attempt");
    // Not recorded as done: the same rotation is tried again.
    let Admission::Start(again) = rotator.ledger().admit(&client, request()) else { panic!("not retried") };
    rotator.start(again);
    let second = tokio::time::timeout(Duration::from_secs(30), done.recv()).await.unwrap().unwrap();
    assert_eq!(second.outcome, RotateOutcome::Failed);
}
