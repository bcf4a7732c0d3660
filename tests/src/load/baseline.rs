//! The comparison point for the manager's figures: a bare TLS + WebSocket server on the
//! manager's stack (axum `ws` over axum-server with rustls/ring, `TCP_NODELAY`, the same
//! WebSocket buffer settings) that exchanges the same number of messages as a v1 handshake but
//! computes no MAC, touches no store and keeps no registry. Runs as its own process
//! (`tether-load baseline-server`) like the manager does; [`Server`] starts and stops it.
//!
//! Three uses: the handshake rate (connect, exchange, close), the RSS slope of idle
//! connections (connect, exchange, hold), and the broadcast fan-out: every held connection
//! waits on one `watch` channel, and `POST /broadcast` wakes them all to write one small binary
//! frame and a Close (4003, as a revoke) in one flush, then wait for the peer's Close as the
//! manager does. The answer comes once every connection has been woken. The frame is a real
//! signed `revoked` ([`broadcast_frame`], signed once at start with a key both sides know),
//! so the client verifies and parses it as a manager session's client does its `revoked`: the
//! client's work, on the same cores, is the same for both servers.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use futures_util::SinkExt;
use tether_protocol::frame;
use tether_protocol::keys::MacKey;
use tether_protocol::message::{RevokedReason, S2c};
use tokio::sync::watch;

use super::transport::Target;

/// The manager's WebSocket read buffer (`manager/src/gateway/mod.rs`, `READ_BUFFER`).
const READ_BUFFER: usize = 1024;
/// The manager's WebSocket write buffer (`WRITE_BUFFER`): frames fed before a flush gather.
const WRITE_BUFFER: usize = 8 * 1024;
/// The manager's default `max_frame`.
const MAX_FRAME: usize = 65_536;

/// The sizes of the manager's frames (tag and JSON), so that both servers write the same
/// bytes: the challenge, the welcome, and the broadcast frame as a signed `revoked` of a
/// revoke. Same sizes matter beyond the bytes: tungstenite's write buffer keeps the capacity
/// of the largest frame so far, so a final frame larger than the welcome costs a `realloc`
/// on both servers alike.
const CHALLENGE_FRAME: usize = 157;
const WELCOME_FRAME: usize = 155;
/// The broadcast frame: a signed `revoked` of a revoke (`registry::kick`'s message).
pub const BROADCAST_FRAME: usize = 215;

/// The key of the broadcast frame's tag, known to the bare server and its clients.
pub const BROADCAST_KEY: [u8; 32] = [0x5a; 32];

/// `registry::kick`'s message to the revoked delegates of a revoke.
const KICK_MESSAGE: &str = "this delegate's token was revoked; restart the delegate with a valid token";

/// The broadcast frame: a v1 frame of a `revoked` (seq 1, as the first after the welcome)
/// tagged with [`BROADCAST_KEY`], the manager's frame to a revoked session byte for byte in
/// size ([`BROADCAST_FRAME`]).
pub fn broadcast_frame() -> Vec<u8> {
    let revoked = S2c::Revoked {
        seq: 1,
        token_id: uuid::Uuid::nil(),
        reason: RevokedReason::Revoked,
        message: KICK_MESSAGE.into(),
    };
    let payload = serde_json::to_vec(&revoked).expect("a message serializes");
    frame::signed(&MacKey::new(&BROADCAST_KEY), b"", &payload)
}

/// Whether `bytes` is a broadcast frame: its tag checked with `key` and its JSON parsed, the
/// work a manager session's client does for its `revoked`.
pub fn is_broadcast_frame(key: &MacKey, bytes: &[u8]) -> bool {
    frame::split(bytes, MAX_FRAME).is_ok_and(|raw| {
        key.verify(b"", raw.payload, raw.tag)
            && matches!(serde_json::from_slice::<S2c>(raw.payload), Ok(S2c::Revoked { .. }))
    })
}

/// How long a closed connection waits for the peer's Close (the manager's `CLOSE_WAIT`).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Writes a self-signed certificate for `127.0.0.1`/`localhost` to `dir` (`ca.pem` doubles as
/// the CA the client trusts) and returns the TLS configuration.
fn tls(dir: &Path) -> Result<RustlsConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    std::fs::write(dir.join("ca.pem"), cert.cert.pem())?;
    let der_cert = cert.cert.der().to_vec();
    let der_key = cert.signing_key.serialize_der();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der_cert.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(der_key.into()))?;
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// The broadcast channel every held connection watches; its value counts broadcasts.
type Broadcast = Arc<watch::Sender<u64>>;

/// The server's state: the broadcast channel and the frame it sends.
#[derive(Clone)]
struct Shared {
    broadcast: Broadcast,
    frame: Arc<[u8]>,
}

async fn upgrade(State(shared): State<Shared>, ws: WebSocketUpgrade) -> axum::response::Response {
    let woken = shared.broadcast.subscribe();
    // The manager's settings (`gateway::READ_BUFFER`, `WRITE_BUFFER`, the default max_frame).
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_FRAME + WRITE_BUFFER + 1024)
        .max_message_size(MAX_FRAME + 1)
        .max_frame_size(MAX_FRAME + 1)
        .on_upgrade(move |ws| exchange(ws, woken, shared.frame))
}

/// challenge-sized frame out, one frame in, welcome-sized frame out; then hold until the peer
/// closes or a broadcast comes.
async fn exchange(mut ws: WebSocket, mut woken: watch::Receiver<u64>, broadcast_frame: Arc<[u8]>) {
    let challenge = vec![0x42u8; CHALLENGE_FRAME];
    if ws.send(Message::Binary(challenge.into())).await.is_err() {
        return;
    }
    match ws.recv().await {
        Some(Ok(Message::Binary(_))) => {}
        _ => return,
    }
    let welcome = vec![0x24u8; WELCOME_FRAME];
    if ws.send(Message::Binary(welcome.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            changed = woken.changed() => {
                if changed.is_err() {
                    return;
                }
                break;
            }
        }
    }
    // The frame and the Close in one flush, then the peer's Close (bounded), as the manager.
    // A frame of its own per connection, as the manager's (which also signs each).
    let frame = broadcast_frame.to_vec();
    if ws.feed(Message::Binary(frame.into())).await.is_err() {
        return;
    }
    let close = CloseFrame { code: 4003, reason: "revoked".into() };
    if ws.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        for _ in 0..16 {
            match ws.recv().await {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

/// Wakes every held connection; answers with how many were watching.
async fn broadcast(State(shared): State<Shared>) -> String {
    shared.broadcast.send_modify(|n| *n += 1);
    shared.broadcast.receiver_count().to_string()
}

/// Serves until killed; prints `LISTENING <addr>` once bound. `dir` receives `ca.pem`.
pub async fn serve(listen: SocketAddr, dir: &Path) -> Result<()> {
    let config = tls(dir).context("baseline TLS")?;
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, _) = watch::channel(0u64);
    let app = Router::new()
        .route("/api/v1/delegates/connect", get(upgrade))
        .route("/broadcast", post(broadcast))
        .with_state(Shared { broadcast: Arc::new(tx), frame: broadcast_frame().into() });
    println!("LISTENING {addr}");
    // The same acceptor stack as the manager: TLS over TCP_NODELAY sockets.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?.acceptor(acceptor).serve(app.into_make_service()).await?;
    Ok(())
}

/// A running baseline server process (`tether-load baseline-server`), killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: std::process::Child,
    /// Where its WebSocket endpoint is, trusting its certificate.
    pub target: Target,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `self_bin baseline-server` on a free loopback port and waits for its address.
    pub async fn start(self_bin: &Path) -> Result<Self> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let mut child = std::process::Command::new(self_bin)
            .args(["baseline-server", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("baseline stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let started = async {
            let line =
                tokio::time::timeout(Duration::from_secs(10), line).await.context("baseline start")???;
            let addr =
                line.trim().strip_prefix("LISTENING ").context("baseline did not report its address")?;
            let target = Target::new(addr.parse()?, "localhost", &dir.path().join("ca.pem"))?;
            let http = reqwest::Client::builder()
                .use_preconfigured_tls((*target.tls).clone())
                .resolve("localhost", target.addr)
                .timeout(Duration::from_secs(60))
                .build()?;
            anyhow::Ok((target, http))
        };
        match started.await {
            Ok((target, http)) => Ok(Self { child, target, http, _dir: dir }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wakes every held connection to write its frame and close; returns how many connections
    /// were watching when the answer was made.
    pub async fn broadcast(&self) -> Result<usize> {
        let url = format!("https://localhost:{}/broadcast", self.target.addr.port());
        let resp = self.http.post(url).send().await?.error_for_status()?;
        Ok(resp.text().await?.trim().parse()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcast_frame_has_the_size_of_the_managers_revoked_and_verifies() {
        let frame = broadcast_frame();
        assert_eq!(frame.len(), BROADCAST_FRAME);
        assert!(is_broadcast_frame(&MacKey::new(&BROADCAST_KEY), &frame));
        assert!(!is_broadcast_frame(&MacKey::new(&[1; 32]), &frame), "another key's tag fails");
        let mut flipped = frame.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(!is_broadcast_frame(&MacKey::new(&BROADCAST_KEY), &flipped));
    }
}
