//! Connection-level resource attacks on the real manager over real TLS on loopback, before
//! any authentication:
//! - idle TCP, idle TLS and header-trickling connections from one address are capped (the
//!   excess is closed at once and counted) and closed within the configured timeouts, while an
//!   honest delegate and `/healthz` from another address are unaffected (finding 3);
//! - a few addresses holding the global cap with keep-alive requests cannot lock others out:
//!   a newcomer evicts the oldest connection of the address holding the most, and a busy
//!   unauthenticated connection is closed at its maximum age (review of issue 10, N1).
//!
//! Caps on authenticated sessions and the handshake limit are in `security_session_caps`, the
//! stalled reader in `security_stalled_reader`.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use reqwest::StatusCode;
use tether_tests::attack::loopback;
use tether_tests::harness::probe::{HONEST_WITHIN, SLACK};
use tether_tests::harness::{poll, Manager};
use tether_tests::load::transport::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

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
    assert_eq!(m.metric(r#"tether_connections_refused_total{cap="per_address"}"#).await.unwrap(), 50.0);

    // Meanwhile an honest delegate and /healthz from another address are served promptly.
    for n in 0..3 {
        let took = m.honest_handshake(loopback(3)).await.unwrap();
        println!("honest handshake {n} during the flood: {took:?}");
    }
    assert_eq!(m.healthz_from(loopback(3)).await.unwrap(), StatusCode::OK);
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
    assert!(m.metric("tether_connection_idle_timeouts_total").await.unwrap() >= 100.0);
    poll::until(
        "no unauthenticated connection left but the /metrics call",
        Duration::from_secs(10),
        || async { Ok((m.metric("tether_unauthenticated_connections").await? == 1.0).then_some(())) },
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
        let took = m.honest_handshake(loopback(20)).await.unwrap();
        println!("honest handshake {n} while the cap is held: {took:?}");
    }
    for n in 0..3 {
        assert_eq!(m.healthz_from(loopback(21 + n)).await.unwrap(), StatusCode::OK);
    }
    // Their places were made by closing flooding connections (the oldest of the addresses
    // holding the most), not by refusing them; a place freed by an honest client that left is
    // taken without an eviction.
    let evicted = m.metric("tether_connections_evicted_total").await.unwrap();
    let mut closed = 0;
    for tls in held.iter_mut() {
        if keep_alive_request(tls).await.is_err() {
            closed += 1;
        }
    }
    println!("{evicted} evictions; {closed} of 40 flooding connections closed");
    assert!(evicted >= 1.0, "no eviction");
    assert!(f64::from(closed) >= evicted, "{evicted} evictions but {closed} flooding connections closed");
    assert_eq!(m.metric(r#"tether_connections_refused_total{cap="total"}"#).await.unwrap(), 0.0);
    assert_eq!(m.metric(r#"tether_connections_refused_total{cap="per_address"}"#).await.unwrap(), 1.0);
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
    assert!(m.metric("tether_connection_max_age_closes_total").await.unwrap() >= 1.0);
}
