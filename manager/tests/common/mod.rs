//! Test harness: a real manager (real TLS on a loopback port 0, the real SQLite file in a
//! tempdir) and a small delegate client built on tether-protocol and tokio-tungstenite;
//! [`rest`] calls the REST API, [`binary`] runs the real binary and its CLI.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod binary;
pub mod rest;

pub use binary::*;
pub use rest::*;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tether_manager::cli::{ApiClient, ClientError};
use tether_manager::config::ServeConfig;
use tether_protocol::error::HandshakeError;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::message::{C2s, DelegateInfo, HeartbeatStatus, S2c, Welcome};
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Upper bound of any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running in-process manager.
pub struct Manager {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub admin_token: String,
    pub account: String,
    pub default_token: String,
    pub default_token_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Manager {
    /// Initialises a data dir and serves it with `tune` applied to the default config.
    pub async fn start(tune: impl FnOnce(&mut ServeConfig)) -> Self {
        install_provider();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let out = tether_manager::init::init(&tether_manager::init::InitOptions {
            data_dir: dir.path().to_owned(),
            account: "acme".into(),
            tls_sans: vec![],
            manager_url: "https://127.0.0.1:0".into(),
            database: None,
        })
        .unwrap();
        let mut config = ServeConfig::for_data_dir(dir.path());
        tune(&mut config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tether_manager::run(
                config,
                listener,
                async {
                    let _ = stopped.await;
                },
                move || {
                    let _ = ready_tx.send(());
                },
            )
            .await
            .unwrap();
        });
        tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
        Self {
            addr,
            ca: out.ca_cert.clone(),
            admin_token: out.admin_token.to_string(),
            account: out.account_id.clone(),
            default_token: out.default_token.to_string(),
            default_token_id: out.default_token_id.clone(),
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn client_with(&self, admin_token: &str) -> ApiClient {
        ApiClient::new(&self.url(), &self.ca, admin_token).unwrap()
    }

    pub fn client(&self) -> ApiClient {
        self.client_with(&self.admin_token)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        self.client().request(Method::GET, path, None::<&Value>).await.unwrap()
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        self.client().request(Method::POST, path, Some(&body)).await.unwrap()
    }

    pub async fn try_req(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.client().request(method, path, body.as_ref()).await
    }

    /// Creates a token in the test account; returns (id, value).
    pub async fn create_token(&self, body: Value) -> (String, String) {
        let v: Value = self.post(&format!("/api/v1/accounts/{}/tokens", self.account), body).await;
        (v["token"]["id"].as_str().unwrap().to_owned(), v["value"].as_str().unwrap().to_owned())
    }

    /// Stops the server (graceful) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }

    pub fn ws_url(&self) -> String {
        format!("wss://{}/api/v1/delegates/connect", self.addr)
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a TLS WebSocket to the delegate endpoint.
pub async fn open_ws(url: &str, ca: &std::path::Path) -> Ws {
    install_provider();
    let tls = tether_manager::tls::client_config(ca).unwrap();
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls))),
    )
    .await
    .unwrap();
    ws
}

/// How a connection attempt ended when it did not produce a session.
#[derive(Debug)]
pub struct Refused {
    pub error: HandshakeError,
    pub close_code: Option<u16>,
}

/// A connected test delegate.
pub struct TestDelegate {
    pub ws: Ws,
    pub session: ClientSession,
    pub welcome: Welcome,
    pub instance: Uuid,
}

pub fn info(name: &str, instance: Uuid) -> DelegateInfo {
    DelegateInfo { name: name.into(), instance, version: "test".into(), host: "localhost".into() }
}

/// Next binary message, or the close code (None on a closed stream without a code).
pub async fn next_binary(ws: &mut Ws) -> Result<Vec<u8>, Option<u16>> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("no message within the wait bound")
}

/// Waits for the close and returns its code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match next_binary(ws).await {
            Ok(_) => continue,
            Err(code) => return code,
        }
    }
}

/// Runs the client handshake on `ws`.
pub async fn handshake_on(
    mut ws: Ws,
    account: &str,
    token: &Token,
    instance: Uuid,
    name: &str,
) -> Result<TestDelegate, Refused> {
    let hs = ClientHandshake::new(account, token, info(name, instance));
    let challenge = match next_binary(&mut ws).await {
        Ok(b) => b,
        Err(code) => panic!("closed before the challenge: {code:?}"),
    };
    let (awaiting, hello) = match hs.receive_challenge(&challenge, rand_nonce(), now()) {
        Ok(x) => x,
        Err(error) => {
            let close_code = close_code(&mut ws).await;
            return Err(Refused { error, close_code });
        }
    };
    ws.send(Message::Binary(hello.into())).await.unwrap();
    let reply = match next_binary(&mut ws).await {
        Ok(b) => b,
        Err(code) => panic!("closed before welcome or reject: {code:?}"),
    };
    match awaiting.receive_welcome(&reply) {
        Ok((session, welcome)) => Ok(TestDelegate { ws, session, welcome, instance }),
        Err(error) => {
            let close_code = close_code(&mut ws).await;
            Err(Refused { error, close_code })
        }
    }
}

/// Connects and authenticates with `token` (a token string).
pub async fn connect(m: &Manager, token: &str, instance: Uuid, name: &str) -> Result<TestDelegate, Refused> {
    let token = Token::parse(token).unwrap();
    let ws = open_ws(&m.ws_url(), &m.ca).await;
    handshake_on(ws, &m.account, &token, instance, name).await
}

pub fn rand_nonce() -> [u8; 32] {
    tether_tests::attack::nonce32()
}

pub fn now() -> u64 {
    tether_manager::clock::now_unix()
}

impl TestDelegate {
    pub async fn send(&mut self, msg: C2s) {
        let frame = self.session.encode(msg);
        self.ws.send(Message::Binary(frame.into())).await.unwrap();
    }

    pub async fn heartbeat(&mut self) {
        self.send(C2s::Heartbeat { seq: 0, status: HeartbeatStatus::default() }).await;
    }

    /// The next session message (verified), or the close code.
    pub async fn recv(&mut self) -> Result<S2c, Option<u16>> {
        let bytes = next_binary(&mut self.ws).await?;
        Ok(self.session.decode(&bytes).expect("server frames verify"))
    }

    /// Answers tasks and heartbeats until closed; returns the close code.
    pub fn serve_tasks(mut self) -> tokio::task::JoinHandle<Option<u16>> {
        tokio::spawn(async move {
            loop {
                match self.recv().await {
                    Ok(S2c::Task { task_id, payload, .. }) => {
                        self.send(C2s::TaskResult { seq: 0, task_id, ok: true, payload }).await;
                    }
                    Ok(_) => {}
                    Err(code) => return code,
                }
            }
        })
    }
}

/// Polls `f` until it returns `Some`, at most [`WAIT`] (the end-to-end harness's poll).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tether_tests::harness::poll::until(what, WAIT, || {
        let probe = f();
        async move { Ok(probe.await) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}
