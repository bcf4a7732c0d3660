//! Storage faults on the real manager: while another process holds an exclusive lock on the
//! SQLite file (the store cannot write), the manager refuses changes with an error answer (not
//! a hang, not a false success), keeps serving existing sessions and still accepts handshakes;
//! a refused revoke changes nothing; once the lock is gone, changes work again.
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tether_protocol::message::{C2s, HeartbeatStatus};
use tether_tests::attack::{handshake, Answer};
use tether_tests::harness::{poll, Manager};

/// Another process holding the SQLite write lock (through the `sqlite3` shell).
struct Lock {
    holder: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Lock {
    /// Takes the lock and proves it holds it (the shell answers after `BEGIN EXCLUSIVE`).
    fn take(m: &Manager) -> Self {
        let mut holder = Command::new("sqlite3")
            .arg(m.db_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("this test needs the `sqlite3` shell (apt-get install sqlite3)");
        let mut stdin = holder.stdin.take().unwrap();
        writeln!(stdin, ".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';").unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "the lock holder did not get its lock");
        Self { holder, stdin: Some(stdin) }
    }

    /// Commits nothing and lets go.
    fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;\n.quit");
        }
        let _ = self.holder.wait();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.release();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_refuses_changes_and_keeps_sessions_up() {
    let m = Manager::start(&[]).await.unwrap();
    let account = m.init.account_id.clone();
    let target = m.target().unwrap();
    let token = m.default_token().unwrap();
    let Answer::Welcome(est) = handshake(&target, None, &account, &token).await.unwrap() else {
        panic!("handshake")
    };
    let mut est = *est;

    let mut lock = Lock::take(&m);

    // A change is refused with an error answer within the store's busy timeout (5 s) + slack.
    let tokens = format!("/api/v1/accounts/{account}/tokens");
    let started = Instant::now();
    let (status, body) = m.api(Method::POST, &tokens, Some(json!({"name": "while-locked"}))).await.unwrap();
    println!("create while locked: {status} after {:?}: {body}", started.elapsed());
    assert!(status.is_server_error(), "create while locked: {status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let (status, body) = m.api(Method::POST, &format!("{tokens}/{}/revoke", token.id()), None).await.unwrap();
    assert!(status.is_server_error(), "revoke while locked: {status} {body}");

    // The live session is still served: heartbeats go through, nothing closes it, the refused
    // revoke did not revoke anything, and reads and new handshakes still work.
    for _ in 0..2 {
        let f = est
            .session
            .encode(C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 2, apply_mode: None } });
        est.raw.send(f).await;
    }
    // (Admin reads are not asserted here: authenticating an admin token records its last use,
    // a write, so while the file is locked even reads answer 500 — see SECURITY.md.)
    let (status, _) = m.api(Method::GET, "/api/v1/delegates", None).await.unwrap();
    println!("admin read while locked: {status}");
    assert!(
        est.raw.recv_within(Duration::from_millis(300)).await.is_err(),
        "the session received something (a revoke?) while the database was locked"
    );

    // Release the lock: changes work again, and the token was never revoked.
    lock.release();
    let created = poll::until("create after the lock is released", Duration::from_secs(15), || async {
        let (status, _) = m.api(Method::POST, &tokens, Some(json!({"name": "after-lock"}))).await?;
        Ok((status.as_u16() == 201).then_some(()))
    })
    .await;
    created.unwrap();
    let (_, v) = m.api(Method::GET, &format!("{tokens}/{}", token.id()), None).await.unwrap();
    assert_eq!(v["state"], "active", "{v}");
    let id = est.session.session_id().to_string();
    let (_, list) = m.api(Method::GET, "/api/v1/delegates", None).await.unwrap();
    assert!(list.to_string().contains(&id), "the session that lived through the lock is listed: {list}");
    let f = est
        .session
        .encode(C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 3, apply_mode: None } });
    est.raw.send(f).await;
    assert!(
        est.raw.recv_within(Duration::from_millis(300)).await.is_err(),
        "the session ended after the lock"
    );
}

/// A delegate that reconnects while the database cannot be written must not be told, signed,
/// that its valid token is revoked: a signed `revoked` is final (the delegate exits 78 and
/// stays down), so a busy, full or read-only disk would take the whole fleet down for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_while_the_database_is_locked_is_never_told_revoked() {
    let m = Manager::start(&[]).await.unwrap();
    let token = m.default_token().unwrap();
    let mut lock = Lock::take(&m);
    let answer = handshake(&m.target().unwrap(), None, &m.init.account_id, &token).await.unwrap();
    lock.release();
    if let Answer::Rejected { code, signed, .. } = &answer {
        assert!(!signed, "a valid token got a signed {code} while the database was locked");
    }
    println!("handshake while locked: {}", answer.describe());
}

/// A rotation whose deadline comes while the store cannot be written is finished as soon as it
/// can be: the old token is revoked and its session closed, without waiting for a restart
/// (before, one refused write left the old token valid until the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_finished_while_the_database_is_locked_is_retried_until_the_old_token_is_revoked() {
    let m = Manager::start(&[]).await.unwrap();
    let token = m.default_token().unwrap();
    // A delegate that never acks keeps the rotation running until its deadline.
    let mut held = match handshake(&m.target().unwrap(), None, &m.init.account_id, &token).await.unwrap() {
        Answer::Welcome(established) => established,
        other => panic!("no session: {}", other.describe()),
    };
    let rotation = m.rotate(token.id(), 2).await.unwrap();
    let mut lock = Lock::take(&m);
    poll::until("the manager to fail finishing the rotation", Duration::from_secs(30), || async {
        Ok(m.logs().contains("cannot finish rotation").then_some(()))
    })
    .await
    .unwrap();
    lock.release();
    let limit = Duration::from_secs(40);
    poll::until("the rotation to finish after the lock", limit, || async {
        let doc = m.rotation(rotation.rotation_id).await?;
        Ok((doc["state"] == "grace_expired").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nmanager log:\n{}", m.logs()));
    let path = format!("/api/v1/accounts/{}/tokens/{}", m.init.account_id, token.id());
    let (_, shown) = m.api(Method::GET, &path, None).await.unwrap();
    assert_eq!(shown["state"], "revoked", "{shown}");
    let code = tokio::time::timeout(limit, held.closed_with()).await.expect("the session is closed").unwrap();
    assert_eq!(code, Some(tether_protocol::error::close::REVOKED), "the old token's session got a revoke");
}
