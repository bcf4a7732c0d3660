//! A TCP proxy on loopback between a manager and its PostgreSQL server, to cut one replica
//! off the database the way a network partition does: [`Proxy::blackhole`] stops moving bytes
//! on every connection and holds new ones unanswered (no FIN, no RST: the peer hears nothing,
//! as after `docker network disconnect`), and [`Proxy::restore`] drops what it held (the peer's
//! connections then fail) and forwards again. Every task ends when the proxy is dropped.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The address to connect to instead of the upstream.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    cut: tokio::sync::watch::Sender<bool>,
    /// Forwarding tasks.
    pipes: Mutex<Vec<JoinHandle<()>>>,
    /// Sockets held open, silent, while cut.
    held: Mutex<Vec<TcpStream>>,
}

impl Inner {
    fn hold(&self, s: TcpStream) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }
}

/// Moves bytes both ways until either side closes or the proxy is cut; when cut, both
/// sockets are handed to the held list (kept open and silent).
async fn pipe(inner: Arc<Inner>, mut client: TcpStream, upstream: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let mut cut = inner.cut.subscribe();
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        if *cut.borrow_and_update() {
            inner.hold(client);
            inner.hold(server);
            return;
        }
        tokio::select! {
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            n = server.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
            _ = cut.changed() => {}
        }
    }
}

impl Proxy {
    /// A proxy on a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            cut: tokio::sync::watch::Sender::new(false),
            pipes: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
        });
        let shared = inner.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *shared.cut.borrow() {
                    shared.hold(client);
                    continue;
                }
                let pipe = tokio::spawn(pipe(shared.clone(), client, upstream));
                let mut pipes = shared.pipes.lock().unwrap_or_else(|p| p.into_inner());
                pipes.retain(|p| !p.is_finished());
                pipes.push(pipe);
            }
        });
        Ok(Self { addr, inner, accept })
    }

    /// The PostgreSQL URL `url` with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str, upstream: SocketAddr) -> String {
        url.replace(&upstream.to_string(), &self.addr.to_string())
    }

    /// Stops moving bytes: open connections go silent (their sockets stay open), new ones are
    /// accepted and never answered.
    pub fn blackhole(&self) {
        self.inner.cut.send_replace(true);
    }

    /// Forwards again; the connections held while cut are closed (their peers see them fail).
    pub fn restore(&self) {
        self.inner.cut.send_replace(false);
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for pipe in self.inner.pipes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            pipe.abort();
        }
    }
}
