//! Test support: an in-test manager built on `tether-protocol`'s `ServerHandshake` over real
//! TLS (rustls, a throwaway CA from rcgen), for faults the real manager cannot produce (a
//! forged unsigned `revoked`, a scripted `rotate`), and the real `tether-delegate` binary run
//! through the end-to-end harness (`tether_tests::harness`: binary lookup, collected log,
//! bounded polling, the clock).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tether_protocol::error::RejectCode;
use tether_protocol::handshake::server::{unsigned_reject, ServerHandshake};
use tether_protocol::message::{C2s, S2c};
use tether_protocol::{Token, TokenKey};
use tether_tests::harness::{poll, unix_now};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// How the fake answers a hello for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Welcome.
    Active,
    /// Signed `revoked` reject.
    Revoked,
    /// Signed `expired` reject.
    Expired,
    /// Unsigned `revoked` reject: a forgery the delegate must not believe.
    ForgedRevoked,
}

/// What the fake saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// A session was accepted.
    Authenticated { session_id: Uuid, token_id: Uuid },
    /// A hello was rejected.
    Rejected { token_id: Uuid, code: RejectCode, signed: bool },
    /// A session message arrived.
    Received { session_id: Uuid, message: C2s },
    /// A session ended.
    Closed { session_id: Uuid },
    /// A queued hostile frame was sent in place of the challenge (index in the queue).
    HostileChallenge { index: usize },
}

#[derive(Default)]
struct Shared {
    tokens: HashMap<Uuid, (TokenKey, TokenState)>,
    sessions: HashMap<Uuid, mpsc::UnboundedSender<Outbound>>,
    events: Vec<Event>,
    /// Frames to send instead of the challenge, one per connection, before honest ones.
    hostile: VecDeque<Vec<u8>>,
    hostile_sent: usize,
}

enum Outbound {
    Message(S2c),
    /// Seal `token` for this session and send it as `rotate`.
    Rotate {
        rotation_id: Uuid,
        token: Token,
        valid_until: u64,
    },
}

/// An in-test manager on 127.0.0.1 with a fresh CA.
pub struct FakeManager {
    pub port: u16,
    pub ca_path: PathBuf,
    _dir: tempfile::TempDir,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    heartbeat_secs: u64,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fake tether CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

impl FakeManager {
    /// Starts the fake with a heartbeat interval.
    pub async fn start(heartbeat_secs: u64) -> Self {
        Self::start_on(0, heartbeat_secs).await
    }

    /// Starts the fake on `port` (0: any).
    pub async fn start_on(port: u16, heartbeat_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_pem) = tls_acceptor();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem).unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = Self::spawn(listener, acceptor.clone(), shared.clone(), heartbeat_secs);
        Self { port, ca_path, _dir: dir, shared, task, heartbeat_secs, acceptor }
    }

    /// Simulates a crash and restart: every connection drops, then the same port and
    /// certificate serve again.
    pub async fn restart(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.shared.lock().unwrap().sessions.clear();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.task = Self::spawn(listener, self.acceptor.clone(), self.shared.clone(), self.heartbeat_secs);
    }

    fn spawn(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        accept_shared: Arc<Mutex<Shared>>,
        heartbeat_secs: u64,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { break };
                let (acceptor, shared) = (acceptor.clone(), accept_shared.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let Ok(ws) = tokio_tungstenite::accept_async(tls).await else { return };
                    serve(ws, shared, heartbeat_secs).await;
                });
            }
        })
    }

    /// Makes the fake know `token` in state `state`.
    pub fn add_token(&self, token: &Token, state: TokenState) {
        self.shared.lock().unwrap().tokens.insert(token.id(), (token.key(), state));
    }

    /// Queues raw frames to send in place of the challenge, one per new connection, in
    /// order; once they are used up the fake answers honestly again.
    pub fn queue_hostile_challenges(&self, frames: Vec<Vec<u8>>) {
        self.shared.lock().unwrap().hostile.extend(frames);
    }

    /// All events so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.lock().unwrap().events.clone()
    }

    /// Waits until `pick` finds something in the events, or panics after `limit`.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(&[Event]) -> Option<T>,
    ) -> T {
        poll::until(what, limit, || {
            let found = pick(&self.events());
            async move { Ok(found) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; events: {:#?}", self.events()))
    }

    /// Live session ids.
    pub fn live_sessions(&self) -> Vec<Uuid> {
        self.shared.lock().unwrap().sessions.keys().copied().collect()
    }

    /// Sends `message` on a live session.
    pub fn send(&self, session_id: Uuid, message: S2c) {
        let shared = self.shared.lock().unwrap();
        shared.sessions[&session_id].send(Outbound::Message(message)).ok().unwrap();
    }

    /// Sends a `rotate` carrying `token`, sealed for that session.
    pub fn rotate(&self, session_id: Uuid, rotation_id: Uuid, token: &Token) {
        let token = token.duplicate();
        let shared = self.shared.lock().unwrap();
        let valid_until = unix_now() + 3600;
        shared.sessions[&session_id].send(Outbound::Rotate { rotation_id, token, valid_until }).ok().unwrap();
    }
}

async fn serve<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    shared: Arc<Mutex<Shared>>,
    heartbeat_secs: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hostile = {
        let mut shared = shared.lock().unwrap();
        let frame = shared.hostile.pop_front();
        frame.map(|frame| {
            let index = shared.hostile_sent;
            shared.hostile_sent += 1;
            (index, frame)
        })
    };
    if let Some((index, frame)) = hostile {
        let sent = ws.send(Message::Binary(frame.into())).await.is_ok();
        if sent {
            shared.lock().unwrap().events.push(Event::HostileChallenge { index });
        }
        // The delegate gives up on this connection: wait (bounded) until it goes.
        let drain = async { while let Some(Ok(_)) = ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        return;
    }
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let (hs, challenge) = ServerHandshake::new(nonce, unix_now(), 65_536);
    if ws.send(Message::Binary(challenge.into())).await.is_err() {
        return;
    }
    let Some(Ok(Message::Binary(hello))) = ws.next().await else { return };
    let Ok(received) = hs.receive_hello(&hello, unix_now()) else { return };
    let token_id = received.hello().token_id;
    let entry = shared
        .lock()
        .unwrap()
        .tokens
        .get(&token_id)
        .map(|(k, s)| (TokenKey::from_bytes(*k.expose_bytes()), *s));
    let reject = |code, signed| Event::Rejected { token_id, code, signed };
    let (key, state) = match entry {
        Some((key, TokenState::ForgedRevoked)) => {
            let _ = key;
            shared.lock().unwrap().events.push(reject(RejectCode::Revoked, false));
            let _ = ws.send(Message::Binary(unsigned_reject(RejectCode::Revoked, "forged").into())).await;
            let _ = ws.close(None).await;
            return;
        }
        Some(found) => (Some(found.0), found.1),
        None => (None, TokenState::Active),
    };
    let verified = match received.verify(key.as_ref()) {
        Ok(verified) => verified,
        Err(_) => {
            shared.lock().unwrap().events.push(reject(RejectCode::AuthFailed, false));
            let _ =
                ws.send(Message::Binary(unsigned_reject(RejectCode::AuthFailed, "auth failed").into())).await;
            let _ = ws.close(None).await;
            return;
        }
    };
    if matches!(state, TokenState::Revoked | TokenState::Expired) {
        let (code, text) = match state {
            TokenState::Expired => (RejectCode::Expired, "token expired at its set expiry"),
            _ => (RejectCode::Revoked, "token revoked by the operator"),
        };
        shared.lock().unwrap().events.push(reject(code, true));
        let frame = verified.reject(code, text);
        let _ = ws.send(Message::Binary(frame.into())).await;
        let _ = ws.close(None).await;
        return;
    }
    let session_id = Uuid::new_v4();
    let (mut session, welcome) = verified.accept(session_id, heartbeat_secs, None);
    if ws.send(Message::Binary(welcome.into())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut shared = shared.lock().unwrap();
        shared.sessions.insert(session_id, tx);
        shared.events.push(Event::Authenticated { session_id, token_id });
    }
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break };
                let (frame, revoked) = match out {
                    Outbound::Message(message) => {
                        let revoked = matches!(message, S2c::Revoked { .. });
                        (session.encode(message), revoked)
                    }
                    Outbound::Rotate { rotation_id, token, valid_until } => {
                        let mut nonce = [0u8; 12];
                        rand::rngs::OsRng.fill_bytes(&mut nonce);
                        let sealed_token = session.seal_token(rotation_id, nonce, &token);
                        let message = S2c::Rotate { seq: 0, rotation_id, token_id: token.id(), sealed_token, old_token_valid_until: valid_until };
                        (session.encode(message), false)
                    }
                };
                if ws.send(Message::Binary(frame.into())).await.is_err() || revoked {
                    break;
                }
            }
            incoming = ws.next() => {
                match incoming {
                    Some(Ok(Message::Binary(bytes))) => match session.decode(&bytes) {
                        Ok(message) => shared.lock().unwrap().events.push(Event::Received { session_id, message }),
                        Err(_) => break,
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    let mut shared = shared.lock().unwrap();
    shared.sessions.remove(&session_id);
    shared.events.push(Event::Closed { session_id });
}

/// A new random token.
pub fn new_token() -> Token {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Token::from_parts(Uuid::new_v4(), secret)
}

/// A running `tether-delegate`: the end-to-end harness's delegate process (binary lookup,
/// collected log, killed on drop), with this crate's panicking call style.
pub struct Delegate {
    inner: tether_tests::harness::delegate::Delegate,
}

impl Delegate {
    /// Starts the real binary (`$TETHER_DELEGATE_BIN` if set, e.g. to check that a test fails
    /// on an earlier build) with exactly `env` (plus `RUST_LOG=info` unless `env` sets it)
    /// and `args`.
    pub fn start(env: &[(&str, String)], args: &[&str]) -> Self {
        let mut all = vec![("RUST_LOG".to_owned(), "info".to_owned())];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let inner = tether_tests::harness::delegate::Delegate::start(&all, args)
            .unwrap_or_else(|e| panic!("starting tether-delegate: {e:#}"));
        Self { inner }
    }

    /// Log lines so far.
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// Sends SIGTERM (through `kill`, as Docker would).
    pub fn terminate(&self) {
        self.inner.proc.terminate().unwrap();
    }

    /// Waits for the exit within `limit`; returns the code and the elapsed time.
    pub async fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let (status, elapsed) = self.inner.wait_exit(limit).await.unwrap_or_else(|e| panic!("{e:#}"));
        (status.code(), elapsed)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.inner.proc.running()
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.proc.exited()
    }

    /// Runs `tether-delegate health` against `state_dir`.
    pub fn health(state_dir: &std::path::Path) -> bool {
        tether_tests::harness::delegate::Delegate::health(state_dir).unwrap()
    }
}

/// The environment for a delegate connecting to `fake` with `token`.
pub fn env_for(
    fake: &FakeManager,
    token: &Token,
    state_dir: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("ACCOUNT_ID", "acme".to_owned()),
        ("ACCOUNT_SECRET", token.expose().to_string()),
        ("MANAGER_HOST_AND_PORT", format!("localhost:{}", fake.port)),
        ("MANAGER_CA_CERT", fake.ca_path.display().to_string()),
        ("DELEGATE_NAME", "test-delegate".to_owned()),
        ("TETHER_STATE_DIR", state_dir.display().to_string()),
        ("TETHER_APPLY_MODE", "manual".to_owned()),
        ("TETHER_DOCKER_SOCKET", "/nonexistent/docker.sock".to_owned()),
    ]
}
