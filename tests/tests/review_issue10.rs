//! Regression tests from the outside review of the issue-10 fixes, against the real binaries:
//! peer text that reaches the manager's log through a protocol error (any authenticated
//! delegate at INFO, any unauthenticated client at DEBUG) is bounded and cannot forge log
//! lines or steer an operator's terminal; the delegate reads at most a few KiB from its token
//! file, whatever the file is.
use std::time::Duration;

use serde_json::json;
use tether_protocol::frame;
use tether_tests::attack::{self, handshake, send_hello_bytes, Raw};
use tether_tests::harness::{poll, Manager};

/// A log line a peer tries to forge; it must never start a line of the manager's log.
const FORGED: &str = "FORGED-LINE 2026-01-01T00:00:00Z  INFO tether_manager: admin token revoked";
/// An OSC sequence that retitles a terminal; tracing never writes one of its own.
const OSC: &str = "\u{1b}]0;pwned\u{7}";

fn forged_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.starts_with("FORGED-LINE")).collect()
}

fn longest_line_with(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).map(str::len).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegates_malformed_frame_cannot_forge_or_flood_manager_log_lines() {
    let m = Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await.expect("manager starts");
    let target = m.target().unwrap();
    let token = m.default_token().unwrap();
    let padding = "p".repeat(30_000);
    // Each attack runs on its own authenticated session (a protocol error ends the session).
    let attacks = [
        // A known type with an unknown enum variant: serde quotes the variant in full.
        json!({"type": "rotate_ack", "seq": 0, "rotation_id": uuid::Uuid::new_v4(),
               "outcome": format!("{OSC}\n{FORGED}\n{padding}"), "detail": "x"}),
        // An unknown type (bounded to 64 bytes, but raw).
        json!({"type": format!("\n{}", &FORGED[..40]), "seq": 0}),
        json!({"type": format!("{OSC}x"), "seq": 0}),
    ];
    for payload in &attacks {
        let answer = handshake(&target, None, &m.init.account_id, &token).await.unwrap();
        let attack::Answer::Welcome(mut est) = answer else { panic!("control: {}", answer.describe()) };
        let forged = est.forge_c2s(payload);
        est.raw.send(forged).await;
        let code = est.closed_with().await.unwrap();
        assert_eq!(code, Some(tether_protocol::error::close::PROTOCOL), "payload {payload}");
    }
    let logs = poll::until("the protocol errors are logged", Duration::from_secs(10), || async {
        let logs = m.logs();
        Ok((logs.matches("session protocol error").count() >= attacks.len()).then_some(logs))
    })
    .await
    .unwrap();
    assert_eq!(forged_lines(&logs), Vec::<&str>::new(), "a delegate forged a manager log line");
    assert!(!logs.contains(OSC), "a delegate's terminal control sequence reached the manager log");
    let longest = longest_line_with(&logs, "session protocol error");
    assert!(longest < 2_048, "one protocol error wrote a {longest}-byte log line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_hello_cannot_forge_manager_log_lines_at_debug() {
    let m = Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"), ("RUST_LOG", "debug")])
        .await
        .expect("manager starts");
    let target = m.target().unwrap();
    for kind in [format!("\n{}", &FORGED[..40]), format!("{OSC}x")] {
        let mut raw = Raw::connect(&target, None).await.unwrap();
        raw.challenge().await.unwrap();
        let hello = frame::unsigned(serde_json::to_vec(&json!({ "type": kind })).unwrap().as_slice());
        let (reject, _) = send_hello_bytes(&mut raw, hello).await.unwrap();
        assert_eq!(reject, Some((tether_protocol::RejectCode::Protocol, false)));
    }
    let logs = poll::until("the bad hellos are logged", Duration::from_secs(10), || async {
        let logs = m.logs();
        Ok((logs.matches("bad hello").count() >= 2).then_some(logs))
    })
    .await
    .unwrap();
    assert_eq!(forged_lines(&logs), Vec::<&str>::new(), "an unauthenticated peer forged a log line");
    assert!(!logs.contains(OSC), "an unauthenticated peer's control sequence reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_never_locks_an_honest_client_out() {
    let m = Manager::start(&[]).await.expect("manager starts");
    let url = format!("{}/api/v1/accounts", m.url());
    // RFC 9110: the scheme is case-insensitive. Before the fix each of these was "malformed",
    // counted as a failed guess, and the sixth request with the valid token got 429.
    for (i, scheme) in ["bearer", "BEARER", "Bearer\t", "bEaReR", "bearer", "Bearer"].iter().enumerate() {
        let value = format!("{scheme} {}", m.init.admin_token);
        let resp = m.http().get(&url).header("authorization", value).send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "request {i} with scheme {scheme:?}");
    }
}
