//! Resource attacks on the real manager: 1,000 connections that never finish the handshake
//! (some stop after TCP, some after TLS, most after the challenge) while an honest client still
//! connects promptly; a failed-handshake flood from 127.0.0.2 that hits `rate_limited` while
//! 127.0.0.3 is unaffected.
use std::time::{Duration, Instant};

use tether_protocol::error::close;
use tether_protocol::{RejectCode, Token};
use tether_tests::attack::{
    flip_bit, handshake, hello_for, loopback, nonce32, send_hello_bytes, Raw, TAG_BITS,
};
use tether_tests::harness::Manager;
use tokio::net::TcpStream;
use uuid::Uuid;

/// How long an honest delegate's handshake may take while the flood is on: its usual budget.
const HONEST_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_handshakes_do_not_lock_out_an_honest_delegate() {
    let m =
        Manager::start(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000"), ("TETHER_HELLO_TIMEOUT_SECS", "10")])
            .await
            .unwrap();
    let target = m.target().unwrap();
    let token = m.default_token().unwrap();

    // 50 bare TCP connections that never start TLS, 50 that stop after TLS (no WebSocket
    // upgrade is sent: a raw TLS stream), 900 that read the challenge and never send a hello.
    let started = Instant::now();
    let mut tcp_only = Vec::new();
    for i in 0..50u8 {
        tcp_only.push(TcpStream::connect(m.addr).await.unwrap_or_else(|e| panic!("tcp {i}: {e}")));
    }
    // Opened 100 at a time (each connect is latency-bound), from 20 source addresses.
    let mut stalled = Vec::new();
    for batch in 0..9usize {
        let mut set = tokio::task::JoinSet::new();
        for j in 0..100usize {
            let (target, i) = (target.clone(), batch * 100 + j);
            set.spawn(async move {
                let source = loopback(100 + (i % 20) as u8);
                let mut raw =
                    Raw::connect(&target, Some(source)).await.unwrap_or_else(|e| panic!("stalled {i}: {e}"));
                raw.challenge().await.unwrap();
                raw
            });
        }
        stalled.extend(set.join_all().await);
    }
    let mut tls_only = Vec::new();
    for _ in 0..50 {
        let tcp = TcpStream::connect(m.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(target.tls.clone())
            .connect(target.server_name.clone(), tcp)
            .await;
        tls_only.push(tls.unwrap());
    }
    println!("opened 1000 stalled connections in {:?}", started.elapsed());

    // The honest delegate: a full handshake within its usual budget, three times.
    for n in 0..3 {
        let t0 = Instant::now();
        let answer = tokio::time::timeout(
            HONEST_WITHIN,
            handshake(&target, Some(loopback(3)), &m.init.account_id, &token),
        )
        .await
        .unwrap_or_else(|_| panic!("honest handshake {n} took longer than {HONEST_WITHIN:?} under the flood"))
        .unwrap();
        assert!(answer.is_welcome(), "honest handshake {n}: {}", answer.describe());
        println!("honest handshake {n} under the flood: {:?}", t0.elapsed());
    }

    // The stalled WebSocket clients are closed by the manager with 4008 at the hello deadline.
    let mut codes = std::collections::BTreeMap::new();
    for mut raw in stalled {
        let (_, code) = raw.until_close().await.unwrap();
        *codes.entry(code).or_insert(0u32) += 1;
    }
    println!("stalled clients closed with: {codes:?} after {:?}", started.elapsed());
    assert_eq!(
        codes.get(&Some(close::PROTOCOL)),
        Some(&900),
        "every stalled client closed with 4008: {codes:?}"
    );
    drop(tcp_only);
    drop(tls_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_flood_is_rate_limited_per_source_address() {
    let limit = 5;
    let m = Manager::start(&[
        ("TETHER_HANDSHAKE_FAIL_LIMIT", &limit.to_string()),
        ("TETHER_HANDSHAKE_FAIL_WINDOW_SECS", "300"),
    ])
    .await
    .unwrap();
    let target = m.target().unwrap();
    let account = m.init.account_id.clone();
    let token = m.default_token().unwrap();
    let flood = loopback(2);

    // `limit` failed handshakes from the flood address: bad tags and unknown tokens.
    let unknown = Token::from_parts(Uuid::new_v4(), [9; 32]);
    for i in 0..limit {
        let mut raw = Raw::connect(&target, Some(flood)).await.unwrap();
        let challenge = raw.challenge().await.unwrap();
        let who = if i % 2 == 0 { &token } else { &unknown };
        let (_, hello) = hello_for(&challenge, &account, who, nonce32()).unwrap();
        let (reject, code) = send_hello_bytes(&mut raw, flip_bit(&hello, TAG_BITS.start)).await.unwrap();
        assert_eq!(
            (reject, code),
            (Some((RejectCode::AuthFailed, false)), Some(close::AUTH_FAILED)),
            "failure {i}"
        );
    }
    // From now on the flood address is answered rate_limited (unsigned, 4029), instead of a
    // challenge: even with a valid token, so a guessing attacker learns nothing more.
    for i in 0..20 {
        let answer = handshake(&target, Some(flood), &account, &token).await.unwrap();
        assert_eq!(
            answer.rejection(),
            (RejectCode::RateLimited, false, Some(close::RATE_LIMITED)),
            "flood try {i}"
        );
    }
    // Another address is unaffected.
    for i in 0..3 {
        let answer = handshake(&target, Some(loopback(3)), &account, &token).await.unwrap();
        assert!(answer.is_welcome(), "127.0.0.3 try {i}: {}", answer.describe());
    }
}
