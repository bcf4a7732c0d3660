//! The comparison point for the handshake rate: a bare TLS + WebSocket accept loop on the
//! manager's stack (axum `ws` over axum-server with rustls/ring, same buffer settings) that
//! exchanges the same number of messages as a v1 handshake but computes no MAC and touches no
//! store. Runs as its own process (`tether-load baseline-server`) like the manager does.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

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

async fn upgrade(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(65_536)
        .on_upgrade(exchange)
}

/// challenge-sized frame out, one frame in, welcome-sized frame out, then wait for close.
async fn exchange(mut ws: WebSocket) {
    let challenge = vec![0x42u8; 160];
    if ws.send(Message::Binary(challenge.into())).await.is_err() {
        return;
    }
    match ws.recv().await {
        Some(Ok(Message::Binary(_))) => {}
        _ => return,
    }
    let welcome = vec![0x24u8; 170];
    if ws.send(Message::Binary(welcome.into())).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = ws.recv().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
}

/// Serves until killed; prints `LISTENING <addr>` once bound. `dir` receives `ca.pem`.
pub async fn serve(listen: SocketAddr, dir: &Path) -> Result<()> {
    let config = tls(dir).context("baseline TLS")?;
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/api/v1/delegates/connect", get(upgrade));
    println!("LISTENING {addr}");
    // The same acceptor stack as the manager: TLS over TCP_NODELAY sockets.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?.acceptor(acceptor).serve(app.into_make_service()).await?;
    Ok(())
}
