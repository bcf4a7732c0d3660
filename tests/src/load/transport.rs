//! TLS + WebSocket transport to the manager from a chosen source address, with the small
//! buffers a many-connection client needs.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket stream type of one session.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// The manager's TLS address.
    pub addr: SocketAddr,
    /// The name to verify in the manager's certificate.
    pub server_name: ServerName<'static>,
    /// TLS client configuration trusting the manager's CA.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// A target at `addr` trusting the CA in `ca_pem`, verifying `server_name`.
    pub fn new(addr: SocketAddr, server_name: &str, ca_pem: &Path) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).context("reading the CA PEM")? {
            roots.add(cert.context("parsing the CA PEM")?).context("adding the CA")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned()).context("server name")?;
        Ok(Self { addr, server_name, tls: Arc::new(tls) })
    }

    /// The delegate endpoint URL.
    pub fn url(&self) -> String {
        format!("wss://{}/api/v1/delegates/connect", self.addr)
    }
}

/// The `i`-th source address of `spread` loopback addresses starting at 127.0.0.10, so that
/// more than ~28,000 connections fit (each source address has its own ephemeral ports).
pub fn source_for(i: usize, spread: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + (i % usize::from(spread.max(1))) as u8))
}

/// WebSocket settings for many idle connections: small read buffer, bounded write buffer.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// TCP from `source` (port chosen by the kernel), then TLS, then the WebSocket upgrade.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Ws> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))?;
    }
    socket.set_nodelay(true)?;
    let tcp = socket.connect(target.addr).await.with_context(|| format!("connecting to {}", target.addr))?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(target.server_name.clone(), tcp)
        .await
        .context("TLS handshake")?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(target.url(), tls, Some(ws_config()))
        .await
        .context("WebSocket upgrade")?;
    Ok(ws)
}
