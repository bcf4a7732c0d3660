//! Secret hygiene of the real delegate at `RUST_LOG=trace` against the real manager: start on
//! `ACCOUNT_SECRET`, seed the token file, two file-mode rotations (each successor unsealed,
//! proven by a second handshake, written to the file, the session switched to it), then a
//! revoke of the token in use (the fatal exit and its advice). Every log line is searched for every token seen (the string, its secret-bearing
//! body, the secret and `K_token` in hex and base64): zero hits; and no library writes a record
//! below warn although `RUST_LOG` asks for trace. (The Docker-mode rotation, where the Docker
//! client library sees both tokens, is scanned the same way in `delegate_docker`.)
use std::time::Duration;

use anyhow::{Context, Result};
use tether_protocol::Token;
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::{poll, Manager};
use tether_tests::secrets::{find_needles, token_needles};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(30);
const NAME: &str = "e2e-secrets";

async fn file_holds(file: &std::path::Path, token: &str) -> Result<Option<()>> {
    Ok((std::fs::read_to_string(file).unwrap_or_default().trim() == token).then_some(()))
}

async fn rotate_and_follow(manager: &Manager, file: &std::path::Path, from: Uuid) -> Result<(Uuid, String)> {
    let rotation = manager.rotate(from, 60).await?;
    manager.wait_for_session(NAME, rotation.token_id, LIMIT).await?;
    poll::until("the token file to hold the successor", LIMIT, || file_holds(file, &rotation.token)).await?;
    manager.wait_for_outcome(rotation.rotation_id, "applied", LIMIT).await?;
    Ok((rotation.token_id, rotation.token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_the_delegate_log_at_trace_through_file_mode_rotations() -> Result<()> {
    let manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    let first = manager.init.default_token.clone();
    let mut env = env_for(&manager, NAME, &first, dir.path());
    // Auto mode: no Docker socket, so the token file (and a debug line saying so).
    env.retain(|(k, _)| k != "TETHER_APPLY_MODE" && k != "RUST_LOG");
    env.push(("ACCOUNT_SECRET_FILE".into(), file.display().to_string()));
    env.push(("RUST_LOG".into(), "trace".into()));
    let mut delegate = Delegate::start(&env, &[])?;
    manager
        .wait_for_session(NAME, manager.init.default_token_id, LIMIT)
        .await
        .with_context(|| delegate.log())?;
    poll::until("the token file to be seeded", LIMIT, || file_holds(&file, &first)).await?;

    let mut tokens = vec![first];
    let (second_id, second) = rotate_and_follow(&manager, &file, manager.init.default_token_id)
        .await
        .with_context(|| delegate.log())?;
    tokens.push(second);
    let (third_id, third) =
        rotate_and_follow(&manager, &file, second_id).await.with_context(|| delegate.log())?;
    tokens.push(third);

    // Revoke the token in use: the signed revoke ends the delegate (exit 78, what to do).
    manager.revoke(third_id).await?;
    let (status, _) = delegate.wait_exit(LIMIT).await?;
    assert_eq!(status.code(), Some(78), "log:\n{}", delegate.log());
    let log = delegate.log();

    let mut needles = Vec::new();
    for token in &tokens {
        needles.extend(token_needles(&Token::parse(token).context("a token")?));
    }
    let hits: Vec<String> = log
        .lines()
        .enumerate()
        .flat_map(|(n, line)| find_needles(&format!("log line {}", n + 1), line, &needles))
        .collect();
    assert!(hits.is_empty(), "secrets in the delegate's log at RUST_LOG=trace: {hits:?}");
    // The scan means something only if the delegate logged at debug level, and the rotations
    // happened.
    assert!(log.contains("docker mode unavailable"), "no debug-level line:\n{log}");
    // The libraries on the path (rustls, tungstenite, …) stay at warn: the delegate's own code
    // logs nothing at trace, so no TRACE line at all (their records once made up nearly all of
    // the log at this level).
    let trace_lines: Vec<&str> = log.lines().filter(|l| l.contains(" TRACE ")).collect();
    assert!(
        trace_lines.is_empty(),
        "library records at TRACE: {} lines, e.g. {:?}",
        trace_lines.len(),
        trace_lines.first()
    );
    assert_eq!(log.matches("now using the rotated token").count(), 2, "log:\n{log}");
    assert!(log.contains("was revoked"), "log:\n{log}");
    eprintln!(
        "delegate secret scan at TRACE: 0 hits for {} needles in {} log lines ({} bytes)",
        needles.len(),
        log.lines().count(),
        log.len()
    );
    Ok(())
}
