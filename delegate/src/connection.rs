//! One connection to the manager: TCP, TLS (as configured by [`crate::tls`]), the WebSocket
//! upgrade with small buffers, and the v1 handshake through `tether-protocol`. The welcome is verified before anything else is accepted.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tether_protocol::error::{HandshakeError, Rejection};
use tether_protocol::frame::MAX_MAX_FRAME;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::message::{C2s, DelegateInfo, GoodbyeReason, Welcome};
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use crate::config::Endpoint;
use crate::dial::DialState;
use crate::state::unix_now;

/// The WebSocket over TLS over TCP.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// WebSocket read buffer: small, since frames are small and sessions many.
pub const READ_BUFFER: usize = 8 * 1024;
/// Bound of the WebSocket write buffer.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Limit for TCP connect, TLS and the WebSocket upgrade together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for connect, TLS and upgrade to one address when there are several to try.
pub const PER_ADDRESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit for each handshake message from the manager.
pub const HANDSHAKE_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit for one write to the manager.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for the closing handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_millis(800);

/// An authenticated session on a live connection.
#[derive(Debug)]
pub struct Connection {
    /// The WebSocket.
    pub link: Link,
    /// The protocol session (keys and sequence numbers).
    pub session: ClientSession,
    /// The verified welcome.
    pub welcome: Welcome,
    /// The token id this session authenticated with.
    pub token_id: Uuid,
}

impl Connection {
    /// Says goodbye and closes a session we do not use (e.g. the proof of a rotated token).
    pub async fn close_quietly(mut self) {
        let bytes = self.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
        let _ = self.link.send(bytes).await;
        self.link.close(tether_protocol::error::close::NORMAL).await;
    }
}

/// The WebSocket of an authenticated connection: every write and the close are time-bounded.
#[derive(Debug)]
pub struct Link {
    ws: Ws,
}

impl Link {
    /// Sends a binary message within [`SEND_TIMEOUT`].
    pub async fn send(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(Message::Binary(bytes.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("send failed: {err}")),
            Err(_) => Err("send timed out".into()),
        }
    }

    /// Sends a WebSocket ping within [`SEND_TIMEOUT`].
    pub async fn ping(&mut self) -> Result<(), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(Message::Ping(Vec::new().into()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err("ping failed".into()),
        }
    }

    /// The next message from the manager; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        self.ws.next().await
    }

    /// Sends a close frame and waits briefly (at most [`CLOSE_TIMEOUT`]) for the manager's.
    pub async fn close(&mut self, code: u16) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
        let closing = async {
            let _ = self.ws.close(Some(frame)).await;
            // Drain until the peer's close or the end; bounded by the timeout below.
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("cannot reach the manager at {addr}: {source}")]
    Tcp {
        /// host:port.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS failed (certificate not trusted, wrong name, …).
    #[error("TLS with the manager failed: {0}")]
    Tls(std::io::Error),
    /// The WebSocket upgrade failed.
    #[error("WebSocket upgrade failed: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// A step took too long.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// The manager closed the connection during the handshake without a reject.
    #[error("the manager closed the connection during the handshake")]
    Closed,
    /// The handshake failed: a protocol error or a reject.
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
}

impl ConnectError {
    /// The reject, if the manager sent one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Handshake(HandshakeError::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    }

    /// A signed `revoked` or `expired`: this token will never work again.
    pub fn is_final(&self) -> bool {
        self.rejection().is_some_and(Rejection::is_final)
    }
}

/// Opens connections to the manager (one address, or any of a replica set's) for one account.
#[derive(Clone)]
pub struct Connector {
    endpoints: Arc<[Endpoint]>,
    dial: Arc<Mutex<DialState>>,
    tls: tokio_rustls::TlsConnector,
    account_id: String,
    info: DelegateInfo,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoints", &self.endpoints)
            .field("account_id", &self.account_id)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `account_id` at `endpoints` (tried in turn; at least one), announcing
    /// `info` in every hello.
    pub fn new(
        endpoints: Vec<Endpoint>,
        tls: Arc<ClientConfig>,
        account_id: String,
        info: DelegateInfo,
    ) -> Self {
        let tls = tokio_rustls::TlsConnector::from(tls);
        Self { endpoints: endpoints.into(), dial: Arc::default(), tls, account_id, info }
    }

    /// The manager's addresses, for logs: their URLs, comma-separated.
    pub fn describe(&self) -> String {
        self.endpoints.iter().map(Endpoint::url).collect::<Vec<_>>().join(",")
    }

    /// The current session's manager said `goodbye` (it is draining): the next connection
    /// tries its address last.
    pub fn note_goodbye(&self) {
        self.dial.lock().unwrap_or_else(|p| p.into_inner()).goodbye();
    }

    /// Connects and authenticates with `token`. A manager that refuses the handshake (an
    /// unsigned reject: cut off from its database, full, rate limiting) is tried last next
    /// time, so a delegate that knows several replicas goes to another one.
    pub async fn connect(&self, token: &Token) -> Result<Connection, ConnectError> {
        let ws = self.open().await?;
        let result = self.authenticate(ws, token).await;
        if result.is_err() {
            self.note_goodbye();
        }
        result
    }

    async fn authenticate(&self, mut ws: Ws, token: &Token) -> Result<Connection, ConnectError> {
        let handshake = ClientHandshake::new(self.account_id.clone(), token, self.info.clone());
        let challenge = next_binary(&mut ws, "waiting for the challenge").await?;
        let mut client_nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut client_nonce);
        let (awaiting, hello) = handshake
            .receive_challenge(&challenge, client_nonce, unix_now())
            .map_err(ConnectError::Handshake)?;
        ws.send(Message::Binary(hello.into())).await.map_err(|e| ConnectError::WebSocket(Box::new(e)))?;
        let welcome_bytes = next_binary(&mut ws, "waiting for the welcome").await?;
        let (session, welcome) = awaiting.receive_welcome(&welcome_bytes).map_err(ConnectError::Handshake)?;
        Ok(Connection { link: Link { ws }, session, welcome, token_id: token.id() })
    }

    /// Opens a WebSocket to the first address that answers: every address of every endpoint,
    /// in [`DialState`]'s order, each within its own time limit. The error is the last one.
    async fn open(&self) -> Result<Ws, ConnectError> {
        let single = self.endpoints.len() == 1;
        let order = self.lock_dial().endpoint_order(self.endpoints.len(), &mut rand::thread_rng());
        let mut last = None;
        for index in order {
            let Some(endpoint) = self.endpoints.get(index) else { continue };
            let addr = format!("{}:{}", endpoint.host, endpoint.port);
            let resolved = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
            )
            .await
            {
                Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
                Ok(Err(source)) => {
                    last = Some(ConnectError::Tcp { addr, source });
                    continue;
                }
                Err(_) => {
                    last = Some(ConnectError::Timeout("resolving the manager's name"));
                    continue;
                }
            };
            let addrs = self.lock_dial().address_order(resolved, &mut rand::thread_rng());
            // One address keeps the whole limit; several share out time so one that drops
            // packets cannot hold up the others for long.
            let limit = if single && addrs.len() == 1 { CONNECT_TIMEOUT } else { PER_ADDRESS_TIMEOUT };
            for sock in addrs {
                match tokio::time::timeout(limit, self.open_at(endpoint, sock, &addr)).await {
                    Ok(Ok(ws)) => {
                        self.lock_dial().connected(index, sock);
                        return Ok(ws);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(manager = %sock, error = %e, "manager address did not answer; trying the next");
                        last = Some(e);
                    }
                    Err(_) => last = Some(ConnectError::Timeout("connect, TLS and WebSocket upgrade")),
                }
            }
        }
        Err(last.unwrap_or(ConnectError::Timeout("connect, TLS and WebSocket upgrade")))
    }

    fn lock_dial(&self) -> std::sync::MutexGuard<'_, DialState> {
        self.dial.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn open_at(&self, endpoint: &Endpoint, sock: SocketAddr, addr: &str) -> Result<Ws, ConnectError> {
        let tcp = TcpStream::connect(sock)
            .await
            .map_err(|source| ConnectError::Tcp { addr: addr.to_owned(), source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| ConnectError::Tls(std::io::Error::other("invalid server name")))?;
        let tls = self.tls.connect(name, tcp).await.map_err(ConnectError::Tls)?;
        let request =
            endpoint.url().into_client_request().map_err(|e| ConnectError::WebSocket(Box::new(e)))?;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .max_message_size(Some(MAX_MAX_FRAME))
            .max_frame_size(Some(MAX_MAX_FRAME));
        let (ws, _response) = tokio_tungstenite::client_async_with_config(request, tls, Some(config))
            .await
            .map_err(|e| ConnectError::WebSocket(Box::new(e)))?;
        Ok(ws)
    }
}

/// The next binary message, skipping pings and pongs, within the handshake step limit.
async fn next_binary(ws: &mut Ws, step: &'static str) -> Result<Vec<u8>, ConnectError> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(_))) => {
                    return Err(ConnectError::Handshake(HandshakeError::Protocol(
                        tether_protocol::ProtocolError::Malformed("text message in the handshake".into()),
                    )))
                }
                Some(Ok(Message::Close(_))) | None => return Err(ConnectError::Closed),
                Some(Err(e)) => return Err(ConnectError::WebSocket(Box::new(e))),
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_STEP_TIMEOUT, read).await.map_err(|_| ConnectError::Timeout(step))?
}
