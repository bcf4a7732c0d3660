//! Connection-level resource attacks on the real manager over real TLS on loopback:
//! - idle TCP, idle TLS and header-trickling connections from one address are capped (the
//!   excess is closed at once and counted) and closed within the configured timeouts, while an
//!   honest delegate and `/healthz` from another address are unaffected (finding 3);
//! - a few addresses holding the global cap with keep-alive requests cannot lock others out:
//!   a newcomer evicts the oldest connection of the address holding the most, and a busy
//!   unauthenticated connection is closed at its maximum age (review of issue 10, N1);
//! - live sessions are capped per token, per account and in total (the total fitted to the
//!   open-file limit): the session over a cap gets an unsigned, retryable `rate_limited`
//!   while other tokens, accounts and `/healthz` are served (review of issue 10, N2);
//! - 500 concurrent bad handshakes from one address yield at most `limit` `auth_failed`, the
//!   rest `rate_limited`, and another address still connects (finding 7);
//! - a delegate that stops reading while the manager has a lot to send is dropped within the
//!   write timeout, its revoke answers promptly, and another session is unaffected (finding 11).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_protocol::error::HandshakeError;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::{RejectCode, Token};
use tether_tests::attack::{
    challenge_nonce, delegate, handshake, loopback, nonce32, read_answer, Answer, Incoming, Raw,
};
use tether_tests::harness::{poll, unix_now, Manager};
use tether_tests::load::session::{self as load_session, HoldOptions, Identity};
use tether_tests::load::transport::{self, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// How long an honest client may take while a flood is on.
const HONEST_WITHIN: Duration = Duration::from_secs(5);

/// Slack on top of a configured timeout before a connection must be seen closed.
const SLACK: Duration = Duration::from_secs(6);

/// TCP from `source` to `addr`.
async fn tcp_from(source: IpAddr, addr: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket.connect(addr).await?)
}

/// TCP, then TLS, from `source` (no HTTP sent).
async fn tls_from(target: &Target, source: IpAddr) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(source, target.addr).await?;
    Ok(tokio_rustls::TlsConnector::from(target.tls.clone()).connect(target.server_name.clone(), tcp).await?)
}

/// Waits (bounded by `within`) for the peer to close `stream`: EOF or an error on read.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(mut stream: S, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    tokio::time::timeout(within, async {
        // Bounded: a peer that keeps sending ends the loop after 64 reads.
        for _ in 0..64 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                Ok(_) => continue,
            }
        }
        bail!("the manager kept sending")
    })
    .await
    .map_err(|_| anyhow!("still open after {within:?}"))?
}

/// The value of one metric sample (`name{labels}`), 0 when absent.
async fn metric(m: &Manager, sample: &str) -> Result<f64> {
    let text = m.http().get(format!("{}/metrics", m.url())).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0))
}

async fn healthz_from(m: &Manager, source: IpAddr) -> Result<StatusCode> {
    let client = m.http_from(source)?;
    let resp = tokio::time::timeout(HONEST_WITHIN, client.get(format!("{}/healthz", m.url())).send())
        .await
        .map_err(|_| anyhow!("/healthz from {source} took longer than {HONEST_WITHIN:?}"))??;
    Ok(resp.status())
}

async fn honest_handshake(m: &Manager, source: IpAddr) -> Result<Duration> {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        HONEST_WITHIN,
        handshake(&m.target()?, Some(source), &m.init.account_id, &m.default_token()?),
    )
    .await
    .map_err(|_| anyhow!("the honest handshake from {source} took longer than {HONEST_WITHIN:?}"))??;
    if !answer.is_welcome() {
        bail!("honest handshake from {source}: {}", answer.describe());
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_are_capped_and_timed_out_while_honest_clients_connect() {
    let timeout = Duration::from_secs(8);
    let secs = timeout.as_secs().to_string();
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"),
        ("TETHER_TLS_HANDSHAKE_TIMEOUT_SECS", &secs),
        ("TETHER_HTTP_HEADER_TIMEOUT_SECS", &secs),
        ("TETHER_HTTP_IDLE_TIMEOUT_SECS", &secs),
        ("TETHER_MAX_UNAUTHENTICATED_CONNECTIONS", "300"),
        ("TETHER_MAX_UNAUTHENTICATED_PER_ADDRESS", "250"),
    ])
    .await
    .unwrap();
    let target = m.target().unwrap();
    let flood = loopback(2);

    // 100 bare TCP connections that never start TLS.
    let started = Instant::now();
    let mut tcp_only = Vec::new();
    for i in 0..100 {
        tcp_only.push(tcp_from(flood, m.addr).await.unwrap_or_else(|e| panic!("tcp {i}: {e}")));
    }
    // 100 TLS connections that never send a byte of HTTP, and 50 that trickle a request
    // head one byte every 500 ms (the idle timer never fires for them: the header timeout must).
    let tls_opened = Instant::now();
    let mut idle_tls = JoinSet::new();
    for _ in 0..100 {
        let target = target.clone();
        idle_tls.spawn(async move { tls_from(&target, flood).await });
    }
    let idle_tls: Vec<_> = idle_tls.join_all().await.into_iter().collect::<Result<_>>().unwrap();
    let mut trickling = JoinSet::new();
    for _ in 0..50 {
        let target = target.clone();
        let mut tls = tls_from(&target, flood).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Trickle: ").await.unwrap();
        trickling.spawn(async move {
            let t0 = Instant::now();
            let mut buf = [0u8; 256];
            // Bounded: at most 120 bytes (60 s); the manager must close long before.
            for _ in 0..120 {
                tokio::select! {
                    read = tls.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Ok(t0.elapsed()),
                        Ok(_) => return Err(anyhow!("the manager answered an incomplete request head")),
                    },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        if tls.write_all(b"a").await.is_err() {
                            return Ok(t0.elapsed());
                        }
                    }
                }
            }
            Err(anyhow!("a trickling connection was still open after 60 s"))
        });
    }
    let opened_in = started.elapsed();
    println!("opened 100 TCP, 100 idle TLS, 50 trickling TLS from {flood} in {opened_in:?}");
    assert!(
        opened_in < timeout,
        "opening took longer than the timeouts; the cap check below needs them open"
    );

    // The per-address cap (250) is reached: 50 more from the same address are closed at once.
    let mut over = JoinSet::new();
    for _ in 0..50 {
        let tcp = tcp_from(flood, m.addr).await.unwrap();
        over.spawn(closed_within(tcp, Duration::from_secs(3)));
    }
    for res in over.join_all().await {
        let closed_after = res.expect("a connection over the per-address cap is closed at once");
        assert!(closed_after < Duration::from_secs(3));
    }
    assert_eq!(metric(&m, r#"tether_connections_refused_total{cap="per_address"}"#).await.unwrap(), 50.0);

    // Meanwhile an honest delegate and /healthz from another address are served promptly.
    for n in 0..3 {
        let took = honest_handshake(&m, loopback(3)).await.unwrap();
        println!("honest handshake {n} during the flood: {took:?}");
    }
    assert_eq!(healthz_from(&m, loopback(3)).await.unwrap(), StatusCode::OK);
    println!("flood checks done {:?} after the first connection", started.elapsed());

    // Every flooding connection is closed by the manager within its timeout.
    let mut closes = JoinSet::new();
    let within = timeout + SLACK;
    for tcp in tcp_only {
        let left = within.saturating_sub(started.elapsed());
        closes.spawn(async move { ("bare TCP (TLS handshake timeout)", closed_within(tcp, left).await) });
    }
    for tls in idle_tls {
        let left = within.saturating_sub(tls_opened.elapsed());
        closes.spawn(async move { ("idle TLS (idle timeout)", closed_within(tls, left).await) });
    }
    let mut slowest = std::collections::BTreeMap::<&str, Duration>::new();
    for (kind, res) in closes.join_all().await {
        let after = res.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let entry = slowest.entry(kind).or_default();
        *entry = (*entry).max(after);
    }
    for res in trickling.join_all().await {
        let after = res.unwrap();
        assert!(after < within, "a trickling connection was closed only after {after:?}");
        let entry = slowest.entry("trickling TLS (header timeout)").or_default();
        *entry = (*entry).max(after);
    }
    println!("all 250 flooding connections closed; slowest wait per kind from the checks: {slowest:?}");
    assert!(metric(&m, "tether_connection_idle_timeouts_total").await.unwrap() >= 100.0);
    poll::until(
        "no unauthenticated connection left but the /metrics call",
        Duration::from_secs(10),
        || async { Ok((metric(&m, "tether_unauthenticated_connections").await? == 1.0).then_some(())) },
    )
    .await
    .unwrap();
}

/// A TLS connection from `source` that has answered one keep-alive `/healthz` request.
async fn keep_alive_from(
    target: &Target,
    source: IpAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tls = tls_from(target, source).await?;
    keep_alive_request(&mut tls).await?;
    Ok(tls)
}

/// One `GET /healthz` on a kept-alive connection; an error if the manager closed it.
async fn keep_alive_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
) -> Result<()> {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(HONEST_WITHIN, tls.read(&mut buf)).await??;
    if !buf[..n].starts_with(b"HTTP/1.1 200") {
        bail!("not a 200 (or closed): {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_addresses_holding_the_global_cap_cannot_lock_other_addresses_out() {
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"),
        ("TETHER_MAX_UNAUTHENTICATED_CONNECTIONS", "40"),
        ("TETHER_MAX_UNAUTHENTICATED_PER_ADDRESS", "10"),
    ])
    .await
    .unwrap();
    let target = m.target().unwrap();
    // 4 addresses × 10 keep-alive connections, each with a request answered: the global cap.
    let mut held = Vec::new();
    for a in 10..14 {
        for i in 0..10 {
            let tls = keep_alive_from(&target, loopback(a)).await;
            held.push(tls.unwrap_or_else(|e| panic!("keep-alive {i} from {}: {e}", loopback(a))));
        }
    }
    // One of the holders trying for more is refused at once (its address holds its share).
    let tcp = tcp_from(loopback(10), m.addr).await.unwrap();
    closed_within(tcp, Duration::from_secs(3)).await.expect("refused: the address holds the most");
    // Every flooding connection keeps itself alive with a request (well within the timeouts).
    for tls in held.iter_mut() {
        keep_alive_request(tls).await.unwrap();
    }

    // An honest delegate and /healthz from other addresses are served promptly, each time.
    for n in 0..3 {
        let took = honest_handshake(&m, loopback(20)).await.unwrap();
        println!("honest handshake {n} while the cap is held: {took:?}");
    }
    for n in 0..3 {
        assert_eq!(healthz_from(&m, loopback(21 + n)).await.unwrap(), StatusCode::OK);
    }
    // Their places were made by closing flooding connections (the oldest of the addresses
    // holding the most), not by refusing them; a place freed by an honest client that left is
    // taken without an eviction.
    let evicted = metric(&m, "tether_connections_evicted_total").await.unwrap();
    let mut closed = 0;
    for tls in held.iter_mut() {
        if keep_alive_request(tls).await.is_err() {
            closed += 1;
        }
    }
    println!("{evicted} evictions; {closed} of 40 flooding connections closed");
    assert!(evicted >= 1.0, "no eviction");
    assert!(f64::from(closed) >= evicted, "{evicted} evictions but {closed} flooding connections closed");
    assert_eq!(metric(&m, r#"tether_connections_refused_total{cap="total"}"#).await.unwrap(), 0.0);
    assert_eq!(metric(&m, r#"tether_connections_refused_total{cap="per_address"}"#).await.unwrap(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_unauthenticated_connection_is_closed_at_its_maximum_age() {
    let age = Duration::from_secs(4);
    let m = Manager::start(&[
        ("TETHER_MAX_UNAUTHENTICATED_AGE_SECS", &age.as_secs().to_string()),
        ("TETHER_HTTP_IDLE_TIMEOUT_SECS", "30"),
        ("TETHER_HTTP_HEADER_TIMEOUT_SECS", "30"),
    ])
    .await
    .unwrap();
    let mut tls = keep_alive_from(&m.target().unwrap(), loopback(2)).await.unwrap();
    let started = Instant::now();
    // A request every 500 ms: never idle; bounded to 30 requests (15 s).
    let mut answered = 0;
    for _ in 0..30 {
        if keep_alive_request(&mut tls).await.is_err() {
            break;
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lived = started.elapsed();
    println!("closed after {lived:?} and {answered} requests");
    assert!(lived < age + SLACK, "a busy unauthenticated connection lived {lived:?}");
    assert!(answered >= 2, "answered {answered} requests first");
    assert!(metric(&m, "tether_connection_max_age_closes_total").await.unwrap() >= 1.0);
}

/// A handshake on `token` from `source`; the answer (a welcome holds its session open).
async fn session_on(m: &Manager, source: IpAddr, account: &str, token: &Token) -> Answer {
    tokio::time::timeout(HONEST_WITHIN, handshake(&m.target().unwrap(), Some(source), account, token))
        .await
        .expect("a prompt answer")
        .unwrap()
}

fn assert_rate_limited(answer: &Answer, what: &str) {
    assert!(!answer.is_welcome(), "{what}: welcomed over the cap");
    assert_eq!(
        answer.rejection(),
        (RejectCode::RateLimited, false, Some(tether_protocol::error::close::RATE_LIMITED)),
        "{what}: an unsigned, retryable rate_limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_are_capped_per_token_and_per_account() {
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"),
        ("TETHER_MAX_SESSIONS_PER_TOKEN", "3"),
        ("TETHER_MAX_SESSIONS_PER_ACCOUNT", "5"),
    ])
    .await
    .unwrap();
    let account = m.init.account_id.clone();
    let a = m.default_token().unwrap();
    let b = m.create_token(&account, "b", json!({})).await.unwrap();
    let (status, v) = m.api(Method::POST, "/api/v1/accounts", Some(json!({ "id": "other" }))).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let d = m.create_token("other", "d", json!({})).await.unwrap();
    let source = loopback(2);

    let mut live = Vec::new();
    for n in 0..3 {
        let answer = session_on(&m, source, &account, &a).await;
        assert!(answer.is_welcome(), "session {n} on the token: {}", answer.describe());
        live.push(answer);
    }
    assert_rate_limited(&session_on(&m, source, &account, &a).await, "the 4th session on one token");
    // Another token of the account connects, up to the account's cap.
    for n in 0..2 {
        let answer = session_on(&m, source, &account, &b).await;
        assert!(answer.is_welcome(), "session {n} on another token: {}", answer.describe());
        live.push(answer);
    }
    assert_rate_limited(&session_on(&m, source, &account, &b).await, "the 6th session in one account");
    // Another account, and /healthz from another address, are unaffected.
    let other = session_on(&m, source, "other", &d).await;
    assert!(other.is_welcome(), "another account: {}", other.describe());
    assert_eq!(healthz_from(&m, loopback(3)).await.unwrap(), StatusCode::OK);
    // Counted by the cap that was full.
    assert_eq!(metric(&m, r#"tether_sessions_refused_total{cap="token"}"#).await.unwrap(), 1.0);
    assert_eq!(metric(&m, r#"tether_sessions_refused_total{cap="account"}"#).await.unwrap(), 1.0);

    // A session that ends frees its place: the delegate's retry gets in.
    drop(live.remove(0));
    let again = poll::until("a session on the token once one closed", Duration::from_secs(10), || async {
        let answer = session_on(&m, source, &account, &a).await;
        Ok(answer.is_welcome().then_some(answer))
    })
    .await
    .unwrap();
    assert!(again.is_welcome());
    drop((live, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_fit_the_open_file_limit_and_healthz_still_answers() {
    // The manager under `ulimit -n 256`: 128 unauthenticated connections at most, 64 files
    // spare, so 64 sessions at most.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("tether-manager");
    let real = tether_tests::harness::process::binary("tether-manager").unwrap();
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 256 || exit 70\nexec '{}' \"$@\"\n", real.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let options = tether_tests::harness::Options {
        bin: Some(wrapper),
        ..tether_tests::harness::Options::with_env(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")])
    };
    let m = Manager::start_with(options).await.unwrap();
    let account = m.init.account_id.clone();
    let token = m.default_token().unwrap();
    let mut live = Vec::new();
    let mut refused = None;
    // Bounded: 100 attempts.
    for n in 0..100 {
        let answer = session_on(&m, loopback(2), &account, &token).await;
        if !answer.is_welcome() {
            refused = Some((n, answer));
            break;
        }
        live.push(answer);
    }
    let (n, answer) = refused.expect("100 sessions under ulimit -n 256: no cap");
    println!("session {n} refused: {}", answer.describe());
    assert_rate_limited(&answer, "the session over the open-file cap");
    assert_eq!(n, 64, "the cap is the limit minus the unauthenticated cap minus 64 spare");
    // The manager still has files for the API.
    for n in 0..3 {
        assert_eq!(healthz_from(&m, loopback(3 + n)).await.unwrap(), StatusCode::OK);
    }
    assert!(metric(&m, r#"tether_sessions_refused_total{cap="total"}"#).await.unwrap() >= 1.0);
    drop(live);
}

/// How one of the concurrent bad handshakes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    AuthFailed,
    RateLimited,
    /// Closed for a missing hello (a slow start made the hello late): counts as a failure.
    HelloTimeout,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bad_handshakes_from_one_address_stay_within_the_limit() {
    let limit = 20usize;
    let attempts = 500usize;
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", &limit.to_string()),
        ("TETHER_HANDSHAKE_FAIL_WINDOW_SECS", "300"),
        ("TETHER_HELLO_TIMEOUT_SECS", "10"),
        ("TETHER_MAX_UNAUTHENTICATED_CONNECTIONS", "2000"),
        ("TETHER_MAX_UNAUTHENTICATED_PER_ADDRESS", "1000"),
    ])
    .await
    .unwrap();
    let target = m.target().unwrap();
    let account = m.init.account_id.clone();
    let unknown = Arc::new(Token::from_parts(Uuid::new_v4(), [9; 32]));
    let source = loopback(5);

    // Every attempt connects and reads its first frame (a challenge or a reject); only when
    // all have, the ones holding a challenge send their (bad) hello at once.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(attempts);
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut set = JoinSet::new();
    for _ in 0..attempts {
        let (target, account, unknown, ready_tx, mut go_rx) =
            (target.clone(), account.clone(), unknown.clone(), ready_tx.clone(), go_rx.clone());
        set.spawn(async move {
            let connected = async {
                let mut raw = Raw::connect(&target, Some(source)).await?;
                match raw.recv().await? {
                    Incoming::Frame(f) => Ok((raw, f)),
                    Incoming::Closed(code) => bail!("closed before the first frame ({code:?})"),
                }
            }
            .await;
            let _ = ready_tx.send(()).await;
            let (raw, first) = connected?;
            let client_nonce = nonce32();
            let hs = ClientHandshake::new(account.as_str(), &unknown, delegate("flood"));
            let prepared = hs.receive_challenge(&first, client_nonce, unix_now());
            let _ = go_rx.wait_for(|go| *go).await;
            match prepared {
                Err(HandshakeError::Rejected(r)) if r.code == RejectCode::RateLimited => {
                    Ok(Outcome::RateLimited)
                }
                Err(e) => bail!("unexpected answer instead of a challenge: {e}"),
                Ok((awaiting, hello)) => {
                    let keys = unknown.key().session_keys(&challenge_nonce(&first)?, &client_nonce);
                    let mut raw = raw;
                    raw.send(hello).await;
                    match read_answer(raw, awaiting, keys).await? {
                        Answer::Rejected { code: RejectCode::AuthFailed, .. } => Ok(Outcome::AuthFailed),
                        Answer::Closed(Some(tether_protocol::error::close::PROTOCOL))
                        | Answer::Rejected { code: RejectCode::Protocol, .. } => Ok(Outcome::HelloTimeout),
                        other => bail!("unexpected answer to a bad hello: {}", other.describe()),
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let started = Instant::now();
    for n in 0..attempts {
        let ready = tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await;
        assert!(matches!(ready, Ok(Some(()))), "only {n} of {attempts} attempts connected within 120 s");
    }
    println!("{attempts} concurrent attempts connected in {:?}", started.elapsed());
    go_tx.send(true).unwrap();
    let mut counts = std::collections::BTreeMap::<Outcome, usize>::new();
    for res in set.join_all().await {
        *counts.entry(res.unwrap()).or_default() += 1;
    }
    println!("outcomes: {counts:?}");
    let get = |o| counts.get(&o).copied().unwrap_or(0);
    assert!(get(Outcome::AuthFailed) <= limit, "more than {limit} auth_failed: {counts:?}");
    assert!(get(Outcome::AuthFailed) + get(Outcome::HelloTimeout) <= limit, "{counts:?}");
    assert!(get(Outcome::RateLimited) >= attempts - limit, "{counts:?}");
    let metric_failed = metric(&m, r#"tether_handshakes_total{outcome="auth_failed"}"#).await.unwrap();
    assert!(metric_failed <= limit as f64, "the manager counted {metric_failed} auth_failed");
    // The address stays limited; another address is unaffected.
    let again = handshake(&target, Some(source), &account, &m.default_token().unwrap()).await.unwrap();
    assert_eq!(again.rejection().0, RejectCode::RateLimited);
    honest_handshake(&m, loopback(6)).await.unwrap();
}

async fn next_binary(ws: &mut transport::Ws) -> Result<Vec<u8>> {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => Ok(b.to_vec()),
        other => Err(anyhow!("expected a binary frame, got {other:?}")),
    }
}

/// TCP with a tiny receive buffer (so the manager's writes back up quickly), TLS, WebSocket,
/// then the handshake: an authenticated session whose socket the test then stops reading.
/// Returns the socket, the session id and the client's address.
async fn stalling_session(
    target: &Target,
    source: IpAddr,
    account: &str,
    token: &Token,
) -> Result<(transport::Ws, Uuid, SocketAddr)> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(target.addr).await?;
    let local = tcp.local_addr()?;
    let tls =
        tokio_rustls::TlsConnector::from(target.tls.clone()).connect(target.server_name.clone(), tcp).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.url(), tls, Some(transport::ws_config())).await?;
    let challenge = next_binary(&mut ws).await?;
    let (awaiting, hello) = ClientHandshake::new(account, token, delegate("stops-reading"))
        .receive_challenge(&challenge, nonce32(), unix_now())
        .map_err(|e| anyhow!("{e}"))?;
    ws.send(Message::binary(hello)).await?;
    let welcome = next_binary(&mut ws).await?;
    let (_, welcome) = awaiting.receive_welcome(&welcome).map_err(|e| anyhow!("{e}"))?;
    Ok((ws, welcome.session_id, local))
}

/// `ADDR:PORT` as `/proc/net/tcp` prints an IPv4 socket address (little-endian host).
fn proc_net_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.octets()), addr.port()),
        IpAddr::V6(_) => String::new(),
    }
}

/// Bytes the manager has written to its socket towards `client` that the client has not
/// taken (`tx_queue` of the manager's end in `/proc/net/tcp`).
fn manager_send_queue(manager: SocketAddr, client: SocketAddr) -> Result<Option<u64>> {
    let (local, remote) = (proc_net_addr(manager), proc_net_addr(client));
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, l, r, _, queues, ..] = fields.as_slice() {
            if *l == local && *r == remote {
                let tx = queues.split(':').next().unwrap_or("0");
                return Ok(Some(u64::from_str_radix(tx, 16)?));
            }
        }
    }
    Ok(None)
}

async fn listed(m: &Manager, session_id: Uuid) -> Result<bool> {
    let (status, v) = m.api(Method::GET, "/api/v1/delegates", None).await?;
    if status != StatusCode::OK {
        bail!("delegate list: {status} {v}");
    }
    let id = session_id.to_string();
    Ok(v.as_array().is_some_and(|list| list.iter().any(|d| d["session_id"] == id.as_str())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_that_stops_reading_is_dropped_within_the_write_timeout() {
    // Long enough that the revoke below normally lands while the session task is stuck in a
    // write, even on a loaded machine (the wedge is detected only after the queue stops
    // growing for 1.2 s); the test tolerates the write timeout winning that race.
    let write_timeout = Duration::from_secs(15);
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"),
        // Heartbeats would only close it after 3 minutes: only the write bound can act sooner.
        ("TETHER_HEARTBEAT_SECS", "60"),
        ("TETHER_SESSION_WRITE_TIMEOUT_SECS", &write_timeout.as_secs().to_string()),
    ])
    .await
    .unwrap();
    let target = m.target().unwrap();
    let account = m.init.account_id.clone();
    let stuck_token = m.create_token(&account, "stuck", json!({})).await.unwrap();
    let honest_token = m.create_token(&account, "honest", json!({})).await.unwrap();

    // An honest session (answers tasks, sends heartbeats) on another token.
    let who = Identity { account_id: account.clone(), token: Arc::new(honest_token), name: "honest".into() };
    let opened = load_session::open(&target, Some(loopback(8)), &who, Duration::from_secs(10)).await.unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hold = HoldOptions {
        follow_rotation: false,
        target: None,
        source: None,
        max_time: Duration::from_secs(180),
    };
    let honest = tokio::spawn(load_session::hold(opened, who, hold, stop_rx));
    let honest_id = poll::until("the honest session in the list", Duration::from_secs(10), || async {
        let (_, list) = m.api(Method::GET, "/api/v1/delegates", None).await?;
        Ok(list
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == "honest"))
            .and_then(|d| d["session_id"].as_str())
            .map(str::to_owned))
    })
    .await
    .unwrap();

    // The stalling session: authenticated, then never read again.
    let (stuck_ws, stuck_id, stuck_addr) =
        stalling_session(&target, loopback(7), &account, &stuck_token).await.unwrap();
    assert!(listed(&m, stuck_id).await.unwrap());

    // Push far more than the socket buffers hold: echo tasks of 1,024 control characters
    // (6 KiB each as JSON escapes), each ping cancelled after 300 ms so its task slot frees.
    let admin = m.init.admin_token.clone();
    let url = format!("{}/api/v1/delegates/{stuck_id}/ping", m.url());
    let body = Arc::new(json!({ "payload": "\u{1}".repeat(1024) }));
    let client = m.http();
    let (stop_flood, flood_stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..16 {
        let (client, url, admin, body) = (client.clone(), url.clone(), admin.clone(), body.clone());
        let stopped = flood_stopped.clone();
        workers.spawn(async move {
            // Bounded: 200 pings per worker at most.
            for _ in 0..200 {
                if *stopped.borrow() {
                    return;
                }
                let sent = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&*body)
                    .timeout(Duration::from_millis(300))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == StatusCode::NOT_FOUND) {
                    return;
                }
            }
        });
    }
    // The manager's writes are blocked once its send queue to the client is large and stops
    // growing while tasks keep coming (1.2 s without a byte more).
    let mut last = (0u64, 0u32);
    let wedged_at =
        poll::until("the manager's writes to the stalled delegate to block", Duration::from_secs(60), || {
            let step = manager_send_queue(m.addr, stuck_addr).and_then(|queued| {
                let queued = queued.ok_or_else(|| anyhow!("the manager's socket is not in /proc/net/tcp"))?;
                last = if queued == last.0 { (queued, last.1 + 1) } else { (queued, 0) };
                Ok((queued >= 256 * 1024 && last.1 >= 48).then_some(queued))
            });
            async move { step }
        })
        .await
        .unwrap();
    println!("manager's writes blocked after {:?} with {wedged_at} bytes queued", started.elapsed());
    stop_flood.send(true).unwrap();

    // Revoke the token while the session task is stuck in a write: the API answers promptly,
    // counting the session as closed.
    let t0 = Instant::now();
    let path = format!("/api/v1/accounts/{account}/tokens/{}/revoke", stuck_token.id());
    let (status, v) = m.api(Method::POST, &path, Some(json!({}))).await.unwrap();
    let revoke_took = t0.elapsed();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(revoke_took < Duration::from_secs(2), "revoke took {revoke_took:?}");
    // 1: counted as closed while stuck (the usual case). 0 only if the write timeout had already
    // dropped it — then it must not be listed any more.
    match v["sessions_closed"].as_u64() {
        Some(1) => {}
        Some(0) => assert!(!listed(&m, stuck_id).await.unwrap(), "not counted, yet still listed: {v}"),
        _ => panic!("unexpected revoke answer {v}"),
    }
    println!("revoke answered in {revoke_took:?}: {}", v["sessions_closed"]);

    // The manager drops the session it cannot write to within the write bound.
    poll::until("the stalled session to leave the registry", write_timeout + SLACK, || async {
        Ok((!listed(&m, stuck_id).await?).then_some(()))
    })
    .await
    .unwrap();
    println!("stalled session gone {:?} after the revoke", t0.elapsed());
    assert_eq!(metric(&m, "tether_session_write_timeouts_total").await.unwrap(), 1.0);
    workers.join_all().await;

    // The honest session is unaffected.
    let ping = format!("/api/v1/delegates/{honest_id}/ping");
    let (status, v) = m.api(Method::POST, &ping, Some(json!({ "payload": "still here" }))).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["payload"], "still here");
    assert!(!honest.is_finished(), "the honest session is still held");
    drop(stuck_ws);
}
