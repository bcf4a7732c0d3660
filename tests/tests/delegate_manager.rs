//! The real `tether-delegate` against the real `tether-manager` on loopback: connect,
//! heartbeat, echo (REST ping and `tether-manager delegate ping`), reconnect after the manager
//! restarts, health, SIGTERM, exit 78 with the message on revoke, file-mode rotation.
use std::time::Duration;

use anyhow::{Context, Result};
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::{poll, Manager};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_connects_answers_echo_survives_a_manager_restart_and_stops_on_sigterm() -> Result<()> {
    let mut manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let state = tempfile::tempdir()?;
    let token = manager.init.default_token.clone();
    let token_id = manager.init.default_token_id;
    let mut delegate = Delegate::start(&env_for(&manager, "e2e-1", &token, state.path()), &[])?;

    let session = manager.wait_for_session("e2e-1", token_id, LIMIT).await.with_context(|| delegate.log())?;
    assert_eq!(manager.ping(session.session_id, "hello-e2e").await?, "hello-e2e");
    poll::until("health to pass", LIMIT, || async { Ok(Delegate::health(state.path())?.then_some(())) })
        .await?;

    // The CLI's ping goes the same way.
    let out = manager.cli(&["delegate", "ping", &session.session_id.to_string(), "--json"])?;
    assert!(out.status.success(), "delegate ping: {}", String::from_utf8_lossy(&out.stderr));

    // Heartbeats arrive at the manager's interval (2 s here) and keep the session alive.
    poll::until("two heartbeats seen by the manager", LIMIT, || async {
        let rows = manager.delegates().await?;
        let row = rows.iter().find(|d| d.session_id == session.session_id).context("session dropped")?;
        Ok((row.last_heartbeat >= row.connected_at + 4).then_some(()))
    })
    .await?;

    manager.restart().await?;
    let again = manager
        .wait_for_session("e2e-1", token_id, Duration::from_secs(75))
        .await
        .with_context(|| delegate.log())?;
    assert_ne!(again.session_id, session.session_id);
    assert_eq!(manager.ping(again.session_id, "after-restart").await?, "after-restart");

    delegate.proc.terminate()?;
    let (status, elapsed) = delegate.wait_exit(LIMIT).await?;
    assert_eq!(status.code(), Some(0), "log:\n{}", delegate.log());
    assert!(elapsed < Duration::from_secs(2), "shutdown took {elapsed:?}");
    poll::until("the session to disappear", LIMIT, || async {
        Ok(manager.delegates().await?.iter().all(|d| d.name != "e2e-1").then_some(()))
    })
    .await?;
    assert!(!Delegate::health(state.path())?);
    let log = delegate.log();
    assert!(log.contains(&token_id.to_string()));
    assert!(!log.contains(&token[4..]), "the token leaked into the delegate's log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_makes_the_delegate_exit_78_saying_what_to_do() -> Result<()> {
    let manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let state = tempfile::tempdir()?;
    let token = manager.init.default_token.clone();
    let token_id = manager.init.default_token_id;
    let mut delegate = Delegate::start(&env_for(&manager, "e2e-revoke", &token, state.path()), &[])?;
    manager.wait_for_session("e2e-revoke", token_id, LIMIT).await.with_context(|| delegate.log())?;

    manager.revoke(token_id).await?;
    let (status, _) = delegate.wait_exit(LIMIT).await?;
    assert_eq!(status.code(), Some(78), "log:\n{}", delegate.log());
    let log = delegate.log();
    assert!(log.contains("was revoked") && log.contains("What to do"), "log:\n{log}");
    assert!(!log.contains(&token[4..]));

    // Restarted at once, as a restart policy would: it exits 78 again, without a hot loop.
    let mut env = env_for(&manager, "e2e-revoke", &token, state.path());
    env.push(("TETHER_FATAL_BACKOFF_SECS".into(), "2".into()));
    let mut again = Delegate::start(&env, &[])?;
    let (status, took) = again.wait_exit(LIMIT).await?;
    assert_eq!(status.code(), Some(78), "log:\n{}", again.log());
    assert!(took >= Duration::from_millis(1500), "restart did not back off: {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_rotation_rewrites_the_file_and_continues_on_the_new_token() -> Result<()> {
    let manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    let token = manager.init.default_token.clone();
    let token_id = manager.init.default_token_id;
    let mut env = env_for(&manager, "e2e-file", &token, dir.path());
    env.retain(|(k, _)| k != "TETHER_APPLY_MODE");
    env.push(("ACCOUNT_SECRET_FILE".into(), file.display().to_string()));
    let mut delegate = Delegate::start(&env, &[])?;
    manager.wait_for_session("e2e-file", token_id, LIMIT).await.with_context(|| delegate.log())?;
    poll::until("the token file to be seeded", LIMIT, || async {
        Ok((std::fs::read_to_string(&file).unwrap_or_default().trim() == token).then_some(()))
    })
    .await?;

    let rotation = manager.rotate(token_id, 60).await?;
    let session = manager
        .wait_for_session("e2e-file", rotation.token_id, LIMIT)
        .await
        .with_context(|| delegate.log())?;
    poll::until("the token file to hold the new token", LIMIT, || async {
        Ok((std::fs::read_to_string(&file)?.trim() == rotation.token).then_some(()))
    })
    .await?;
    manager.wait_for_outcome(rotation.rotation_id, "applied", LIMIT).await?;
    assert_eq!(manager.ping(session.session_id, "on-new-token").await?, "on-new-token");
    poll::until("only the new token in use", LIMIT, || async {
        let rows = manager.delegates().await?;
        Ok(rows
            .iter()
            .filter(|d| d.name == "e2e-file")
            .all(|d| d.token_id == rotation.token_id)
            .then_some(()))
    })
    .await?;
    assert!(delegate.proc.running(), "log:\n{}", delegate.log());
    let log = delegate.log();
    assert!(!log.contains(&token[4..]) && !log.contains(&rotation.token[4..]), "a token leaked into the log");
    Ok(())
}

/// Issue 17, finding 6: the delegate's JSON log carries no `"None"`: a token without an expiry
/// leaves `token_expires_at` out of the `session authenticated` line instead of writing the
/// Debug text of an absent value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_leave_out_absent_values() -> Result<()> {
    let manager = Manager::start(&[]).await?;
    let state = tempfile::tempdir()?;
    let mut env = env_for(&manager, "json-1", &manager.init.default_token, state.path());
    env.push(("TETHER_LOG_FORMAT".into(), "json".into()));
    let delegate = Delegate::start(&env, &[])?;
    let line = poll::until("the session authenticated line", LIMIT, || async {
        Ok(delegate.log().lines().find(|l| l.contains("session authenticated")).map(str::to_owned))
    })
    .await?;
    let v: serde_json::Value = serde_json::from_str(&line).with_context(|| line.clone())?;
    assert!(v.get("token_expires_at").is_none(), "an absent expiry is left out: {line}");
    assert!(!delegate.log().contains("\"None\""), "{}", delegate.log());
    Ok(())
}
