//! The client side of the bare baseline server ([`super::baseline`]): the same transport as a
//! delegate session ([`super::transport::connect`]), the handshake's message count without its
//! cryptography, then held like a session until the server closes it or the run ends.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::session::Ended;
use super::transport::{self, Target, Ws};

/// Size of the hello-sized frame the client sends.
const HELLO: usize = 420;

async fn next_binary(ws: &mut Ws) -> Result<()> {
    match ws.next().await {
        Some(Ok(Message::Binary(_))) => Ok(()),
        other => bail!("unexpected {other:?}"),
    }
}

/// Connects from `source` and exchanges a challenge, a hello and a welcome within `within`.
pub async fn open(target: &Target, source: Option<IpAddr>, within: Duration) -> Result<Ws> {
    tokio::time::timeout(within, async {
        let mut ws = transport::connect(target, source).await?;
        next_binary(&mut ws).await?;
        ws.send(Message::binary(vec![0x11u8; HELLO])).await?;
        next_binary(&mut ws).await?;
        Ok(ws)
    })
    .await
    .map_err(|_| anyhow!("bare exchange took longer than {within:?}"))?
}

/// One whole exchange, then a polite close: one unit of the handshake-rate baseline.
pub async fn once(target: &Target, source: IpAddr) -> Result<()> {
    let mut ws = open(target, Some(source), Duration::from_secs(10)).await?;
    ws.close(None).await?;
    Ok(())
}

/// Holds `ws` until the server closes it (`revoked` is set when its broadcast frame came
/// first), `stop` turns true (then closes politely) or `max_time` passes.
pub async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>, max_time: Duration) -> Ended {
    let mut got_frame = false;
    let end = |revoked, close_code, reason: &str| Ended {
        at: Instant::now(),
        revoked,
        close_code,
        rotated: false,
        reason: reason.into(),
    };
    let deadline = tokio::time::Instant::now() + max_time;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return end(got_frame, None, "time limit"),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = ws.close(None).await;
                    return end(got_frame, None, "stopped");
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(_))) => got_frame = true,
                Some(Ok(Message::Close(frame))) => {
                    return end(got_frame, frame.map(|f| u16::from(f.code)), "closed");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return end(got_frame, None, &format!("read error: {e}")),
                None => return end(got_frame, None, "eof"),
            },
        }
    }
}
