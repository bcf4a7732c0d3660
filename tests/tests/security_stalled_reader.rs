//! A delegate that stops reading while the manager has a lot to send is dropped within the
//! write timeout, its revoke answers promptly, and another session is unaffected (issue 10,
//! finding 11). Against the real manager over real TLS on loopback.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::Token;
use tether_tests::attack::{delegate, loopback, nonce32};
use tether_tests::harness::probe::SLACK;
use tether_tests::harness::{poll, unix_now, Manager};
use tether_tests::load::session::{self as load_session, HoldOptions, Identity};
use tether_tests::load::transport::{self, Target};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;
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
    assert_eq!(m.metric("tether_session_write_timeouts_total").await.unwrap(), 1.0);
    workers.join_all().await;

    // The honest session is unaffected.
    let ping = format!("/api/v1/delegates/{honest_id}/ping");
    let (status, v) = m.api(Method::POST, &ping, Some(json!({ "payload": "still here" }))).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["payload"], "still here");
    assert!(!honest.is_finished(), "the honest session is still held");
    drop(stuck_ws);
}
