//! Load measurements against the real `tether-manager` binary (release build) over loopback
//! TLS: handshake rate, manager RSS per idle session, revoke fan-out latency, and a rotation
//! of many live delegates. Run: `cargo bench -p tether-manager --bench load [-- SESSIONS]`.
//! Client and server share the machine, so the numbers are a floor, not a ceiling.
#![allow(missing_docs)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tether_manager::cli::ApiClient;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::message::{C2s, DelegateInfo, GoodbyeReason, RotateOutcome, S2c};
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Env {
    url: String,
    ws_url: String,
    tls: Arc<rustls::ClientConfig>,
    api: ApiClient,
    pid: u32,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn start(dir: &Path) -> (Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether-manager"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir)
        .env("TETHER_HEARTBEAT_SECS", "3600")
        .env("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")
        .env("RUST_LOG", "warn,tether_manager::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tether-manager listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    (child, v["addr"].as_str().unwrap().to_owned())
}

async fn open(env: &Env) -> Ws {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        env.ws_url.as_str(),
        Some(config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(env.tls.clone())),
    )
    .await
    .unwrap();
    ws
}

async fn next(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn session(env: &Env, token: &Token, instance: Uuid) -> (Ws, ClientSession) {
    let mut ws = open(env).await;
    let info = DelegateInfo {
        name: format!("bench-{instance}"),
        instance,
        version: "bench".into(),
        host: "bench".into(),
    };
    let hs = ClientHandshake::new("default", token, info);
    let challenge = next(&mut ws).await.unwrap();
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let (awaiting, hello) =
        hs.receive_challenge(&challenge, nonce, tether_manager::clock::now_unix()).unwrap();
    ws.send(Message::Binary(hello.into())).await.unwrap();
    let welcome = next(&mut ws).await.unwrap();
    let (s, _) = awaiting.receive_welcome(&welcome).unwrap();
    (ws, s)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn post(env: &Env, path: &str, body: Value) -> Value {
    env.api.request(Method::POST, path, Some(&body)).await.unwrap()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let out = tether_manager::init::init(&tether_manager::init::InitOptions {
        data_dir: dir.path().to_owned(),
        account: "default".into(),
        tls_sans: vec![],
        manager_url: String::new(),
    })
    .unwrap();
    let (mut child, addr) = start(dir.path());
    let ca: PathBuf = out.ca_cert.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let env = Arc::new(Env {
            url: format!("https://{addr}"),
            ws_url: format!("wss://{addr}/api/v1/delegates/connect"),
            tls: Arc::new(tether_manager::tls::client_config(&ca).unwrap()),
            api: ApiClient::new(&format!("https://{addr}"), &ca, &out.admin_token).unwrap(),
            pid: child.id(),
        });
        let _ = &env.url;
        let created = post(&env, "/api/v1/accounts/default/tokens", json!({"name": "load"})).await;
        let token = Arc::new(Token::parse(created["value"].as_str().unwrap()).unwrap());
        let token_id = created["token"]["id"].as_str().unwrap().to_owned();

        // 1. Handshake rate and RSS per idle session.
        let rss0 = rss_kib(env.pid);
        let started = Instant::now();
        let concurrency = 64;
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (env, token, sem) = (env.clone(), token.clone(), sem.clone());
            let permit = sem.acquire_owned().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut ws, _s) = session(&env, &token, Uuid::new_v4()).await;
                drop(permit);
                // Idle until closed; report when the close arrived.
                let _ = next(&mut ws).await;
                Instant::now()
            }));
        }
        let sessions_live = || async {
            let v: Vec<Value> = env.api.request(Method::GET, "/api/v1/delegates", None::<&Value>).await.unwrap();
            v.len()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while sessions_live().await < n {
            assert!(Instant::now() < deadline, "sessions did not all connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle before sampling RSS
        let rss1 = rss_kib(env.pid);
        println!("handshakes: {n} sessions (TLS 1.3 + WebSocket + v1 handshake, {concurrency} at a time) in {took:.2?} = {:.0}/s", n as f64 / took.as_secs_f64());
        println!("manager RSS: {rss0} KiB idle, {rss1} KiB with {n} sessions = {:.1} KiB per session", (rss1 - rss0) as f64 / n as f64);

        // 2. Revoke fan-out: time from the API's answer to each session's close.
        let req = Instant::now();
        let r = post(&env, &format!("/api/v1/accounts/default/tokens/{token_id}/revoke"), json!({})).await;
        let answered = Instant::now();
        assert_eq!(r["sessions_closed"].as_u64().unwrap() as usize, n);
        let mut lat = Vec::with_capacity(n);
        for t in tasks {
            let closed_at = t.await.unwrap();
            lat.push(closed_at.saturating_duration_since(answered));
        }
        lat.sort();
        println!(
            "revoke of a token with {n} live sessions: API answered in {:.2?}; sessions closed after the answer: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            answered - req,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat[n - 1]
        );

        // 3. Rotation of 100 live delegates that move in place (file mode).
        let k = 100;
        let created = post(&env, "/api/v1/accounts/default/tokens", json!({"name": "rot"})).await;
        let token = Arc::new(Token::parse(created["value"].as_str().unwrap()).unwrap());
        let mut delegates = Vec::new();
        for _ in 0..k {
            let instance = Uuid::new_v4();
            delegates.push((instance, session(&env, &token, instance).await));
        }
        let started = Instant::now();
        let r = post(&env, "/api/v1/accounts/default/tokens/rot/rotate", json!({"grace_secs": 60})).await;
        let rotation_id = r["rotation_id"].as_str().unwrap().to_owned();
        let mut movers = Vec::new();
        for (instance, (mut ws, mut s)) in delegates {
            let env = env.clone();
            movers.push(tokio::spawn(async move {
                let bytes = next(&mut ws).await.unwrap();
                let S2c::Rotate { rotation_id, token_id, sealed_token, .. } = s.decode(&bytes).unwrap() else { panic!("expected rotate") };
                let new = s.open_sealed_token(rotation_id, token_id, &sealed_token).unwrap();
                let (new_ws, new_s) = session(&env, &new, instance).await; // prove and continue on the new token
                let ack = s.encode(C2s::RotateAck { seq: 0, rotation_id, outcome: RotateOutcome::Applied, detail: "bench".into() });
                ws.send(Message::Binary(ack.into())).await.unwrap();
                let bye = s.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
                ws.send(Message::Binary(bye.into())).await.unwrap();
                let _ = next(&mut ws).await;
                (new_ws, new_s)
            }));
        }
        let mut kept = Vec::new();
        for m in movers {
            kept.push(m.await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: Value = env.api.request(Method::GET, &format!("/api/v1/rotations/{rotation_id}"), None::<&Value>).await.unwrap();
            if v["state"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "rotation did not complete");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("rotation of {k} live delegates: all on the new token and the old revoked in {:.2?}", started.elapsed());
        drop(kept);
    });
    let _ = child.kill();
    let _ = child.wait();
}
