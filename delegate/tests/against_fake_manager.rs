//! The real `tether-delegate` binary against an in-test manager speaking v1 over real TLS:
//! session life, echo, goodbye, restart, forged and signed rejects, exit codes, file-mode
//! rotation, start-up token choice, health, logs. (Tests against the real manager binary live
//! in the end-to-end crate.)
mod support;

use std::time::Duration;

use tether_protocol::message::{C2s, GoodbyeReason, RevokedReason, RotateOutcome, S2c, TaskKind};
use tether_protocol::RejectCode;
use uuid::Uuid;

use support::{env_for, new_token, Delegate, Event, FakeManager, TokenState};
use tether_tests::harness::poll;

const LIMIT: Duration = Duration::from_secs(15);

fn authenticated(events: &[Event], token: Uuid, skip: usize) -> Option<Uuid> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Authenticated { session_id, token_id } if *token_id == token => Some(*session_id),
            _ => None,
        })
        .nth(skip)
}

fn health(state_dir: &std::path::Path) -> bool {
    Delegate::health(state_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_heartbeats_answers_echo_and_stops_on_sigterm() {
    let fake = FakeManager::start(1).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Active);
    let state = tempfile::tempdir().unwrap();
    assert!(!health(state.path()), "healthy before any session");
    let mut delegate = Delegate::start(&env_for(&fake, &token, state.path()), &[]);

    let session = fake.wait_for(LIMIT, "authentication", |e| authenticated(e, token.id(), 0)).await;
    let heartbeats = |events: &[Event]| {
        events.iter().filter(|e| matches!(e, Event::Received { message: C2s::Heartbeat { .. }, .. })).count()
    };
    fake.wait_for(LIMIT, "two heartbeats", |e| (heartbeats(e) >= 2).then_some(())).await;
    assert!(health(state.path()), "not healthy while authenticated; log:\n{}", delegate.log());

    let task_id = Uuid::new_v4();
    fake.send(session, S2c::Task { seq: 0, task_id, kind: TaskKind::Echo, payload: "ping-42".into() });
    let reply = fake
        .wait_for(LIMIT, "echo reply", |events| {
            events.iter().find_map(|e| match e {
                Event::Received { message: C2s::TaskResult { task_id: id, ok, payload, .. }, .. }
                    if *id == task_id =>
                {
                    Some((*ok, payload.clone()))
                }
                _ => None,
            })
        })
        .await;
    assert_eq!(reply, (true, "ping-42".to_owned()));

    delegate.terminate();
    let (code, elapsed) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(0), "log:\n{}", delegate.log());
    assert!(elapsed < Duration::from_secs(2), "shutdown took {elapsed:?}");
    let events = fake.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Received { message: C2s::Goodbye { reason: GoodbyeReason::Shutdown, .. }, .. }
    )));
    assert!(!health(state.path()), "still healthy after exit");

    let log = delegate.log();
    assert!(log.contains(&token.id().to_string()), "token id should be logged");
    assert!(!log.contains(&token.expose()[4..]), "secret leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodbye_and_restart_lead_to_prompt_reconnects() {
    let mut fake = FakeManager::start(5).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Active);
    let state = tempfile::tempdir().unwrap();
    let _delegate = Delegate::start(&env_for(&fake, &token, state.path()), &[]);
    let first = fake.wait_for(LIMIT, "first session", |e| authenticated(e, token.id(), 0)).await;

    let said_goodbye = std::time::Instant::now();
    fake.send(first, S2c::Goodbye { seq: 0, reason: GoodbyeReason::Restart });
    fake.wait_for(LIMIT, "second session", |e| authenticated(e, token.id(), 1)).await;
    let after_goodbye = said_goodbye.elapsed();
    assert!(after_goodbye < Duration::from_millis(3500), "reconnect after goodbye took {after_goodbye:?}");

    let crashed = std::time::Instant::now();
    fake.restart().await;
    fake.wait_for(LIMIT, "session after restart", |e| authenticated(e, token.id(), 2)).await;
    assert!(crashed.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_unsigned_revoked_only_causes_retries() {
    let fake = FakeManager::start(5).await;
    let token = new_token();
    fake.add_token(&token, TokenState::ForgedRevoked);
    let state = tempfile::tempdir().unwrap();
    let mut delegate = Delegate::start(&env_for(&fake, &token, state.path()), &[]);
    let rejects = |events: &[Event]| {
        events.iter().filter(|e| matches!(e, Event::Rejected { signed: false, .. })).count()
    };
    fake.wait_for(LIMIT, "two forged rejects", |e| (rejects(e) >= 2).then_some(())).await;
    assert!(delegate.running(), "a forged reject made the delegate exit; log:\n{}", delegate.log());
    fake.add_token(&token, TokenState::Active);
    fake.wait_for(Duration::from_secs(30), "authentication after the forgery stops", |e| {
        authenticated(e, token.id(), 0)
    })
    .await;
    assert!(delegate.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_revoked_exits_78_and_a_restart_waits_before_its_handshake() {
    let fake = FakeManager::start(5).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Active);
    let state = tempfile::tempdir().unwrap();
    let mut env = env_for(&fake, &token, state.path());
    env.push(("TETHER_FATAL_BACKOFF_SECS", "3".to_owned()));
    let mut delegate = Delegate::start(&env, &[]);
    let session = fake.wait_for(LIMIT, "session", |e| authenticated(e, token.id(), 0)).await;
    fake.add_token(&token, TokenState::Revoked);
    fake.send(
        session,
        S2c::Revoked {
            seq: 0,
            token_id: token.id(),
            reason: RevokedReason::Revoked,
            message: "revoked by admin".into(),
        },
    );
    let (code, _) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(78));
    let log = delegate.log();
    assert!(log.contains("was revoked") && log.contains("What to do"), "log:\n{log}");
    assert!(log.contains("revoked by admin"));

    // Restarted at once (as a restart policy would): no handshake during the quiet period,
    // then a signed reject at the handshake, and exit 78 again.
    let restarted = std::time::Instant::now();
    let mut again = Delegate::start(&env, &[]);
    let (code, _) = again.wait_exit(LIMIT).await;
    assert_eq!(code, Some(78), "log:\n{}", again.log());
    let waited = restarted.elapsed();
    assert!(waited >= Duration::from_millis(2500), "restart did not wait: {waited:?}");
    let signed = fake
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Rejected { code: RejectCode::Revoked, signed: true, .. }))
        .count();
    assert_eq!(signed, 1, "exactly one handshake after the quiet period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fatal_exit_a_restart_with_a_different_token_connects_at_once() {
    let fake = FakeManager::start(5).await;
    let (revoked, fresh) = (new_token(), new_token());
    fake.add_token(&revoked, TokenState::Revoked);
    fake.add_token(&fresh, TokenState::Active);
    let state = tempfile::tempdir().unwrap();
    // A quiet period far longer than the test's limits: waiting it out would fail the test.
    let backoff = ("TETHER_FATAL_BACKOFF_SECS", "120".to_owned());
    let mut env = env_for(&fake, &revoked, state.path());
    env.push(backoff.clone());
    let mut delegate = Delegate::start(&env, &[]);
    let (code, _) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(78), "log:\n{}", delegate.log());
    assert!(state.path().join("fatal").exists(), "the fatal exit was not recorded");

    // The same token again: quiet, no handshake while the period runs.
    let mut same = Delegate::start(&env, &[]);
    let rejects = || {
        fake.events()
            .iter()
            .filter(|e| matches!(e, Event::Rejected { code: RejectCode::Revoked, signed: true, .. }))
            .count()
    };
    let quiet = poll::until("the same token to announce its wait", LIMIT, || {
        let log = same.log();
        let handshakes = rejects();
        async move {
            assert_eq!(handshakes, 1, "the same token tried a handshake during the quiet period");
            Ok(log.contains("waiting before trying again").then_some(()))
        }
    })
    .await;
    assert!(quiet.is_ok(), "the same token did not announce its wait; log:\n{}", same.log());
    assert!(same.running(), "log:\n{}", same.log());
    assert_eq!(rejects(), 1, "the same token tried a handshake during the quiet period");
    same.terminate();
    let (code, _) = same.wait_exit(LIMIT).await;
    assert_eq!(code, Some(0), "SIGTERM during the quiet period; log:\n{}", same.log());

    // A different token: no wait, it authenticates at once.
    let mut env = env_for(&fake, &fresh, state.path());
    env.push(backoff);
    let restarted = std::time::Instant::now();
    let _other = Delegate::start(&env, &[]);
    fake.wait_for(LIMIT, "the different token to authenticate", |e| authenticated(e, fresh.id(), 0)).await;
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(10), "a different token waited: {took:?}");
    assert_eq!(rejects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_rotation_switches_in_place_and_acks_repeats_without_reapplying() {
    let fake = FakeManager::start(5).await;
    let (old, new) = (new_token(), new_token());
    fake.add_token(&old, TokenState::Active);
    fake.add_token(&new, TokenState::Active);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let mut env = env_for(&fake, &old, dir.path());
    env.retain(|(k, _)| *k != "TETHER_APPLY_MODE");
    env.push(("ACCOUNT_SECRET_FILE", file.display().to_string()));
    let mut delegate = Delegate::start(&env, &[]);
    let first = fake.wait_for(LIMIT, "session on the old token", |e| authenticated(e, old.id(), 0)).await;
    // The first handshake seeds the file from ACCOUNT_SECRET.
    let read = || std::fs::read_to_string(&file).unwrap_or_default().trim().to_owned();
    poll::until("the token file to be seeded", LIMIT, || {
        let seeded = read() == *old.expose();
        async move { Ok(seeded.then_some(())) }
    })
    .await
    .expect("token file not seeded");

    let rotation_id = Uuid::new_v4();
    fake.rotate(first, rotation_id, &new);
    let ack = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Received { session_id, message: C2s::RotateAck { rotation_id: id, outcome, .. } }
                    if *id == rotation_id =>
                {
                    Some((*session_id, *outcome))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let acks = fake.wait_for(LIMIT, "rotate ack", |e| Some(ack(e)).filter(|a| !a.is_empty())).await;
    assert_eq!(acks[0], (first, RotateOutcome::Applied));
    assert_eq!(read(), *new.expose(), "token file not rewritten");
    // The proven session on the new token carries on; the old one is closed.
    let second = fake.wait_for(LIMIT, "session on the new token", |e| authenticated(e, new.id(), 0)).await;
    fake.wait_for(LIMIT, "old session closed", |e| {
        e.iter().any(|x| matches!(x, Event::Closed { session_id } if *session_id == first)).then_some(())
    })
    .await;
    assert_eq!(fake.live_sessions(), [second]);

    // A repeated rotate for the same id is acked again, not re-applied.
    fake.rotate(second, rotation_id, &new);
    let acks = fake.wait_for(LIMIT, "second ack", |e| Some(ack(e)).filter(|a| a.len() >= 2)).await;
    assert_eq!(acks[1], (second, RotateOutcome::Applied));
    // Barrier: an echo round trip after the ack; a re-apply would have opened a proof session.
    let task_id = Uuid::new_v4();
    fake.send(second, S2c::Task { seq: 0, task_id, kind: TaskKind::Echo, payload: String::new() });
    fake.wait_for(LIMIT, "echo after the repeated rotate", |e| {
        e.iter().any(|x| matches!(x, Event::Received { message: C2s::TaskResult { task_id: id, .. }, .. } if *id == task_id)).then_some(())
    })
    .await;
    assert!(authenticated(&fake.events(), new.id(), 1).is_none(), "rotation was applied twice");
    assert_eq!(fake.live_sessions(), [second]);
    assert!(delegate.running());

    let log = delegate.log();
    for secret in [&old.expose()[4..], &new.expose()[4..]] {
        assert!(!log.contains(secret), "secret leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_prefers_the_token_that_authenticates_and_writes_it_to_the_file() {
    let fake = FakeManager::start(5).await;
    let (stale, current) = (new_token(), new_token());
    fake.add_token(&stale, TokenState::Revoked);
    fake.add_token(&current, TokenState::Active);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");

    // The file holds a revoked token, the environment a new one put there by hand.
    std::fs::write(&file, format!("{}\n", &*stale.expose())).unwrap();
    let mut env = env_for(&fake, &current, dir.path());
    env.push(("ACCOUNT_SECRET_FILE", file.display().to_string()));
    let delegate = Delegate::start(&env, &[]);
    fake.wait_for(LIMIT, "session on the environment's token", |e| authenticated(e, current.id(), 0)).await;
    poll::until("the token file to be updated", LIMIT, || {
        let updated = std::fs::read_to_string(&file).unwrap().trim() == *current.expose();
        async move { Ok(updated.then_some(())) }
    })
    .await
    .expect("file not updated");
    drop(delegate);

    // Now the environment still carries the revoked value (an old compose file): the file wins.
    let env = {
        let mut env = env_for(&fake, &stale, dir.path());
        env.push(("ACCOUNT_SECRET_FILE", file.display().to_string()));
        env
    };
    let mut delegate = Delegate::start(&env, &[]);
    fake.wait_for(LIMIT, "second session on the file's token", |e| authenticated(e, current.id(), 1)).await;
    assert!(delegate.running());
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), *current.expose());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_64_naming_the_variable_not_the_value() {
    let token = new_token();
    let value = token.expose().to_string();
    let mut chars: Vec<char> = value.chars().collect();
    chars[30] = if chars[30] == 'x' { 'y' } else { 'x' };
    let mistyped: String = chars.into_iter().collect();
    let env = vec![
        ("ACCOUNT_ID", "acme".to_owned()),
        ("ACCOUNT_SECRET", mistyped.clone()),
        ("MANAGER_HOST_AND_PORT", "localhost:1".to_owned()),
    ];
    let mut delegate = Delegate::start(&env, &[]);
    let (code, _) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(64));
    let log = delegate.log();
    assert!(log.contains("ACCOUNT_SECRET") && log.contains("checksum"), "log:\n{log}");
    assert!(!log.contains(&mistyped[4..]), "value leaked");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tether-delegate"))
        .arg("--help")
        .env("ACCOUNT_SECRET", &value)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("ACCOUNT_SECRET") && !help.contains(&value[4..]), "help:\n{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let fake = FakeManager::start(1).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Active);
    let state = tempfile::tempdir().unwrap();
    let mut delegate = Delegate::start(&env_for(&fake, &token, state.path()), &["--log-format", "json"]);
    fake.wait_for(LIMIT, "session", |e| authenticated(e, token.id(), 0)).await;
    delegate.terminate();
    assert_eq!(delegate.wait_exit(LIMIT).await.0, Some(0));
    let log = delegate.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2);
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value.get("level").is_some() && value.get("message").is_some(), "{line}");
    }
    assert!(log.contains(&token.id().to_string()) && !log.contains(&token.expose()[4..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_prompt_while_a_manager_does_not_answer() {
    // A listener that completes TCP handshakes (backlog) but never speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let fake = FakeManager::start(5).await;
    let token = new_token();
    let state = tempfile::tempdir().unwrap();
    let mut env = env_for(&fake, &token, state.path());
    env.retain(|(k, _)| *k != "MANAGER_HOST_AND_PORT");
    env.push(("MANAGER_HOST_AND_PORT", format!("127.0.0.1:{port}")));
    let mut delegate = Delegate::start(&env, &[]);
    poll::until("the start line", LIMIT, || {
        let started = delegate.log().contains("tether-delegate starting");
        async move { Ok(started.then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("no start line ({e}); log:\n{}", delegate.log()));
    delegate.terminate();
    let (code, elapsed) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(0), "log:\n{}", delegate.log());
    assert!(elapsed < Duration::from_secs(2), "shutdown took {elapsed:?} while connecting");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_expired_reject_at_the_handshake_exits_78_saying_so() {
    let fake = FakeManager::start(5).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Expired);
    let state = tempfile::tempdir().unwrap();
    let mut delegate = Delegate::start(&env_for(&fake, &token, state.path()), &[]);
    let (code, _) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(78), "log:\n{}", delegate.log());
    let log = delegate.log();
    assert!(log.contains("has expired") && log.contains("token expired at its set expiry"), "log:\n{log}");
    assert!(state.path().join("fatal").exists(), "the fatal exit was not recorded");
    let signed = fake
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Rejected { code: RejectCode::Expired, signed: true, .. }))
        .count();
    assert_eq!(signed, 1);
}

/// An unsigned frame: version 0x01, 32 zero bytes for the tag, then `payload`.
fn unsigned_frame(payload: &str) -> Vec<u8> {
    let mut frame = vec![0x01];
    frame.extend_from_slice(&[0u8; 32]);
    frame.extend_from_slice(payload.as_bytes());
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unsigned_challenges_only_cause_retries() {
    // Anything answering on the manager's address can send these in place of the challenge.
    // The first two once aborted the delegate (exit 134): `peek_type` truncated the `type` at
    // byte 64, inside a multi-byte character.
    let long_ascii_then_e = format!("{}é", "a".repeat(511));
    let payloads = [
        format!(r#"{{"type":"{}é"}}"#, "a".repeat(63)),
        format!(r#"{{"type":"{}"}}"#, "日".repeat(64)),
        format!(r#"{{"type":"{long_ascii_then_e}"}}"#),
        format!(
            r#"{{"type":"challenge","v":1,"server_nonce":"{long_ascii_then_e}","time":0,"max_frame":65536}}"#
        ),
        format!(r#"{{"type":"reject","code":"rate_limited","message":"{long_ascii_then_e}"}}"#),
    ];
    let fake = FakeManager::start(5).await;
    let token = new_token();
    fake.add_token(&token, TokenState::Active);
    fake.queue_hostile_challenges(payloads.iter().map(|p| unsigned_frame(p)).collect());
    let state = tempfile::tempdir().unwrap();
    let mut delegate = Delegate::start(&env_for(&fake, &token, state.path()), &[]);

    // Each hostile frame went to a new connection: the delegate survived it, backed off and
    // tried again; after the last one it authenticates against the honest fake.
    let hostile_sent =
        |events: &[Event]| events.iter().filter(|e| matches!(e, Event::HostileChallenge { .. })).count();
    poll::until("a session after the hostile challenges", Duration::from_secs(60), || {
        // An exit fails the test at once, naming it.
        let status = delegate.exited();
        assert!(
            status.is_none(),
            "the delegate exited ({status:?}) after hostile challenge {} of {}; log:\n{}",
            hostile_sent(&fake.events()),
            payloads.len(),
            delegate.log()
        );
        let found = authenticated(&fake.events(), token.id(), 0);
        async move { Ok(found) }
    })
    .await
    .unwrap_or_else(|e| panic!("no session after the hostile challenges ({e}); log:\n{}", delegate.log()));
    assert!(delegate.running(), "log:\n{}", delegate.log());
    assert_eq!(hostile_sent(&fake.events()), payloads.len());

    delegate.terminate();
    let (code, _) = delegate.wait_exit(LIMIT).await;
    assert_eq!(code, Some(0), "log:\n{}", delegate.log());
    let log = delegate.log();
    // The log names each protocol error, with the type bounded on a character boundary.
    assert!(log.contains(&format!("unknown message type `{}`", "a".repeat(63))), "log:\n{log}");
    assert!(log.contains(&format!("unknown message type `{}`", "日".repeat(21))), "log:\n{log}");
    assert!(log.contains(&format!("unknown message type `{}`", "a".repeat(64))), "log:\n{log}");
    assert!(log.contains("malformed payload"), "log:\n{log}");
    assert!(log.contains("rate_limited") || log.contains("rate limited"), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
}
