//! One lightweight delegate session: handshake through `tether-protocol`, then hold it —
//! heartbeats, `echo` answers, and (optionally) following a rotation onto the new token —
//! until the manager closes it, the run ends, or its time is up.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tether_protocol::error::HandshakeError;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::message::{C2s, DelegateInfo, GoodbyeReason, HeartbeatStatus, RotateOutcome, S2c};
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::transport::{self, Target, Ws};

/// Who a session authenticates as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The account.
    pub account_id: String,
    /// The token.
    pub token: Arc<Token>,
    /// The delegate name to announce.
    pub name: String,
}

/// An authenticated session.
#[derive(Debug)]
pub struct Opened {
    ws: Ws,
    session: ClientSession,
    /// The heartbeat interval the manager asked for.
    pub heartbeat: Duration,
}

impl Opened {
    /// Closes the WebSocket (close frame, flush), as a delegate that leaves politely does.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// How a held session ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// When the end was observed.
    pub at: Instant,
    /// A signed `revoked` arrived before the close.
    pub revoked: bool,
    /// The close code, if the manager sent one.
    pub close_code: Option<u16>,
    /// The session moved to a rotated token at least once.
    pub rotated: bool,
    /// Why, in words, for reports.
    pub reason: String,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn next_binary(ws: &mut Ws, within: Duration) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no frame within {within:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match msg {
            Message::Binary(bytes) => return Ok(bytes.to_vec()),
            Message::Close(frame) => bail!("closed by the manager: {frame:?}"),
            _ => continue,
        }
    }
}

/// Connects from `source` and completes the v1 handshake within `within`, as a new delegate
/// instance.
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    who: &Identity,
    within: Duration,
) -> Result<Opened> {
    open_as(target, source, who, Uuid::new_v4(), within).await
}

/// [`open`] as delegate instance `instance`: the same delegate process reconnecting.
pub async fn open_as(
    target: &Target,
    source: Option<IpAddr>,
    who: &Identity,
    instance: Uuid,
    within: Duration,
) -> Result<Opened> {
    tokio::time::timeout(within, open_inner(target, source, who, instance, within))
        .await
        .map_err(|_| anyhow!("handshake took longer than {within:?}"))?
}

async fn open_inner(
    target: &Target,
    source: Option<IpAddr>,
    who: &Identity,
    instance: Uuid,
    within: Duration,
) -> Result<Opened> {
    let mut ws = transport::connect(target, source).await?;
    let delegate = DelegateInfo {
        name: who.name.clone(),
        instance,
        version: env!("CARGO_PKG_VERSION").into(),
        host: "tether-load".into(),
    };
    let challenge = next_binary(&mut ws, within).await.context("waiting for the challenge")?;
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let hs = ClientHandshake::new(who.account_id.clone(), &who.token, delegate);
    let (awaiting, hello) = hs.receive_challenge(&challenge, nonce, unix_now()).map_err(describe)?;
    ws.send(Message::binary(hello)).await?;
    let welcome = next_binary(&mut ws, within).await.context("waiting for the welcome")?;
    let (session, welcome) = awaiting.receive_welcome(&welcome).map_err(describe)?;
    Ok(Opened { ws, session, heartbeat: Duration::from_secs(welcome.heartbeat_secs.max(1)) })
}

fn describe(err: HandshakeError) -> anyhow::Error {
    anyhow!("handshake: {err}")
}

/// What a held session does besides heartbeats and echo.
#[derive(Debug, Clone)]
pub struct HoldOptions {
    /// On `rotate`: prove the new token with a second session, ack `applied`, close the old.
    pub follow_rotation: bool,
    /// Where to connect when following a rotation.
    pub target: Option<Target>,
    /// Source address for the second session.
    pub source: Option<IpAddr>,
    /// Give up after this long in any case.
    pub max_time: Duration,
}

/// Holds `opened` until it ends (returned) or `stop` turns true (then says goodbye).
pub async fn hold(
    mut opened: Opened,
    who: Identity,
    opts: HoldOptions,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let started = tokio::time::Instant::now();
    let mut revoked = false;
    let mut rotated = false;
    let mut who = who;
    let mut beat = tokio::time::interval_at(started + opened.heartbeat, opened.heartbeat);
    let end = |revoked, rotated, close_code, reason: String| Ended {
        at: Instant::now(),
        revoked,
        close_code,
        rotated,
        reason,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(started + opts.max_time) => {
                return end(revoked, rotated, None, "time limit".into());
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let bye = opened.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
                    let _ = opened.ws.send(Message::binary(bye)).await;
                    let _ = opened.ws.close(None).await;
                    return end(revoked, rotated, None, "stopped".into());
                }
            }
            _ = beat.tick() => {
                let hb = opened.session.encode(C2s::Heartbeat {
                    seq: 0,
                    status: HeartbeatStatus { uptime_secs: started.elapsed().as_secs(), apply_mode: None },
                });
                if let Err(e) = opened.ws.send(Message::binary(hb)).await {
                    return end(revoked, rotated, None, format!("send failed: {e}"));
                }
            }
            msg = opened.ws.next() => {
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code));
                        return end(revoked, rotated, code, "closed".into());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return end(revoked, rotated, None, format!("read error: {e}")),
                    None => return end(revoked, rotated, None, "eof".into()),
                };
                match opened.session.decode(&bytes) {
                    Ok(S2c::Revoked { .. }) => revoked = true,
                    Ok(S2c::Task { task_id, payload, .. }) => {
                        let reply = opened.session.encode(C2s::TaskResult { seq: 0, task_id, ok: true, payload });
                        if opened.ws.send(Message::binary(reply)).await.is_err() {
                            return end(revoked, rotated, None, "send failed".into());
                        }
                    }
                    Ok(S2c::Rotate { rotation_id, token_id, sealed_token, .. }) if opts.follow_rotation => {
                        match follow(&mut opened, &who, &opts, rotation_id, token_id, &sealed_token).await {
                            Ok((next, next_who)) => {
                                opened = next;
                                who = next_who;
                                rotated = true;
                                beat = tokio::time::interval_at(tokio::time::Instant::now() + opened.heartbeat, opened.heartbeat);
                            }
                            Err(e) => return end(revoked, rotated, None, format!("rotation failed: {e:#}")),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return end(revoked, rotated, None, format!("protocol error: {e}")),
                }
            }
        }
    }
}

/// Unseals the successor token, proves it with a new session, acks on the old one, closes it.
async fn follow(
    old: &mut Opened,
    who: &Identity,
    opts: &HoldOptions,
    rotation_id: Uuid,
    token_id: Uuid,
    sealed: &str,
) -> Result<(Opened, Identity)> {
    let token = old.session.open_sealed_token(rotation_id, token_id, sealed)?;
    let next_who =
        Identity { account_id: who.account_id.clone(), token: Arc::new(token), name: who.name.clone() };
    let target = opts.target.as_ref().context("follow_rotation needs a target")?;
    let next = open(target, opts.source, &next_who, Duration::from_secs(10)).await?;
    let ack = old.session.encode(C2s::RotateAck {
        seq: 0,
        rotation_id,
        outcome: RotateOutcome::Applied,
        detail: "load generator moved to the new token".into(),
    });
    old.ws.send(Message::binary(ack)).await?;
    let bye = old.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
    let _ = old.ws.send(Message::binary(bye)).await;
    let _ = old.ws.close(None).await;
    Ok((next, next_who))
}
