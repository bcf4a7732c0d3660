//! The client side of the bare baseline server ([`super::baseline`]): the same transport as a
//! delegate session ([`super::transport::connect`]), the handshake's message count without its
//! cryptography, then held like a session until the server closes it or the run ends: with
//! the same work a manager session's client does, a heartbeat timer at the manager's period
//! and the broadcast frame's tag checked and its JSON parsed.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use tether_protocol::keys::MacKey;

use super::baseline::{is_broadcast_frame, BROADCAST_KEY};
use super::session::Ended;
use super::transport::{self, Target, Ws};

/// Size of the hello-sized frame the client sends.
const HELLO: usize = 420;

/// The manager's default `heartbeat_secs`: a held manager session's client keeps a timer at
/// this period, so a held bare connection does too.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Size of the heartbeat-sized frame sent at each tick.
const HEARTBEAT_FRAME: usize = 150;

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
    let key = MacKey::new(&BROADCAST_KEY);
    let started = tokio::time::Instant::now();
    let mut beat = tokio::time::interval_at(started + HEARTBEAT, HEARTBEAT);
    let end = |revoked, close_code, reason: &str| Ended {
        at: Instant::now(),
        revoked,
        close_code,
        rotated: false,
        reason: reason.into(),
    };
    let deadline = started + max_time;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return end(got_frame, None, "time limit"),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = ws.close(None).await;
                    return end(got_frame, None, "stopped");
                }
            }
            _ = beat.tick() => {
                if let Err(e) = ws.send(Message::binary(vec![0x33u8; HEARTBEAT_FRAME])).await {
                    return end(got_frame, None, &format!("send failed: {e}"));
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => got_frame |= is_broadcast_frame(&key, &bytes),
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
