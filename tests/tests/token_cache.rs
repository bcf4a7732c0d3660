//! The handshake's token cache (issue 16) never admits a token after a change to it: a token
//! revoked right after a welcome (the cache holds it, its last use just recorded) is refused
//! at the very next handshake with a signed `revoked`, on the manager that revoked it and on
//! another replica of the same PostgreSQL; an expired one with a signed `expired`; and the
//! first handshake still records the token's last use.
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use tether_protocol::error::close;
use tether_protocol::RejectCode;
use tether_tests::attack::{handshake, Answer};
use tether_tests::harness::replicas::{hold_sessions, options};
use tether_tests::harness::{poll, Manager};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(30);

/// `answer` is a signed reject with `code`, closed with `close_code`.
fn assert_signed(answer: &Answer, code: RejectCode, close_code: u16) {
    assert_eq!(answer.rejection(), (code, true, Some(close_code)), "{}", answer.describe());
}

async fn token_doc(m: &Manager, id: uuid::Uuid) -> Result<Value> {
    let path = format!("/api/v1/accounts/{}/tokens/{id}", m.init.account_id);
    let (status, doc) = m.api(Method::GET, &path, None).await?;
    anyhow::ensure!(status.is_success(), "GET token: {status} {doc}");
    Ok(doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_after_a_welcome_is_refused_at_the_next_handshake() -> Result<()> {
    let m = Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await?;
    let (target, account) = (m.target()?, m.init.account_id.clone());
    let token = m.create_token(&account, "cached", json!({})).await?;
    assert_eq!(token_doc(&m, token.id()).await?["last_used_at"], Value::Null);
    for _ in 0..2 {
        let answer = handshake(&target, None, &account, &token).await?;
        assert!(answer.is_welcome(), "{}", answer.describe());
    }
    // The first handshake recorded the last use (later ones within a minute need not).
    let used = token_doc(&m, token.id()).await?;
    assert!(used["last_used_at"].as_u64().is_some_and(|t| t > 0), "{used}");

    m.revoke(token.id()).await?;
    let answer = handshake(&target, None, &account, &token).await?;
    assert_signed(&answer, RejectCode::Revoked, close::REVOKED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_that_expires_is_refused_as_expired() -> Result<()> {
    let m = Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await?;
    let (target, account) = (m.target()?, m.init.account_id.clone());
    let token = m.create_token(&account, "brief", json!({"expires_in_secs": 2})).await?;
    let answer = handshake(&target, None, &account, &token).await?;
    assert!(answer.is_welcome(), "{}", answer.describe());
    let refused = poll::until("the cached token to be refused as expired", LIMIT, || async {
        let answer = handshake(&target, None, &account, &token).await?;
        Ok((!answer.is_welcome()).then_some(answer))
    })
    .await?;
    assert_signed(&refused, RejectCode::Expired, close::EXPIRED);
    Ok(())
}

/// A session on replica B keeps B's cache warm; the revoke goes through replica A. Once B's
/// session is closed by the change feed, B's cache has been emptied: the next handshake on B
/// is refused, with no waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_another_replica_is_refused_at_the_next_handshake() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let a = Manager::start_with(options(&db, 10)).await?;
    let b = a.replica().await?;
    let account = a.init.account_id.clone();
    let token = a.create_token(&account, "cached-on-b", json!({})).await?;
    let target_b = b.target()?;
    let answer = handshake(&target_b, None, &account, &token).await?;
    assert!(answer.is_welcome(), "{}", answer.describe());
    let (_stop_tx, stop) = watch::channel(false);
    let held = hold_sessions(&b, &token, "b", 1, &stop).await?;

    a.revoke(token.id()).await?;
    for h in held {
        let ended = tokio::time::timeout(LIMIT, h).await.context("B's session was not closed")??;
        assert!(ended.revoked, "{ended:?}");
    }
    let answer = handshake(&target_b, None, &account, &token).await?;
    assert_signed(&answer, RejectCode::Revoked, close::REVOKED);
    Ok(())
}
