//! A raw protocol client for attack tests against the real `tether-manager` binary (which
//! [`crate::harness::Manager`] runs).
//!
//! Every frame the honest paths send is built by `tether-protocol`; the attacks then take
//! those bytes apart on purpose (flip a bit, replay, reorder, reflect, oversize, re-sign a
//! doctored payload with the right key) — that is the point of this module. Connections go to
//! loopback only, from a chosen 127.0.0.x source address. Every wait has a deadline.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use serde_json::Value;
use tether_protocol::error::HandshakeError;
use tether_protocol::frame::{self, HEADER_LEN, HELLO_LABEL};
use tether_protocol::handshake::client::{AwaitingWelcome, ClientHandshake};
use tether_protocol::keys::MacKey;
use tether_protocol::message::{Challenge, DelegateInfo};
use tether_protocol::session::ClientSession;
use tether_protocol::{RejectCode, SessionKeys, Token};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::harness::clock::unix_now;
use crate::load::transport::{self, Target, Ws};

/// How long any single read from the manager may take before the test fails.
pub const READ_WITHIN: Duration = Duration::from_secs(10);

/// The loopback source address `127.0.0.n`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// 32 fresh random bytes.
pub fn nonce32() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// A delegate description for hellos.
pub fn delegate(name: &str) -> DelegateInfo {
    DelegateInfo {
        name: name.into(),
        instance: Uuid::new_v4(),
        version: "attack".into(),
        host: "attacker".into(),
    }
}

/// What the manager sent next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message (a v1 frame).
    Frame(Vec<u8>),
    /// The connection closed, with the close code if one was sent.
    Closed(Option<u16>),
}

/// A raw WebSocket connection to the delegate endpoint.
#[derive(Debug)]
pub struct Raw {
    ws: Ws,
}

impl Raw {
    /// TLS + WebSocket from `source` (or the default loopback address).
    pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Self> {
        Ok(Self { ws: transport::connect(target, source).await? })
    }

    /// The next frame or the close, skipping pings; fails after `READ_WITHIN`.
    pub async fn recv(&mut self) -> Result<Incoming> {
        self.recv_within(READ_WITHIN).await
    }

    /// Like [`Raw::recv`] with an explicit deadline.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Incoming> {
        let deadline = tokio::time::Instant::now() + within;
        for _ in 0..64 {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("nothing from the manager within {within:?}"))?;
            match next {
                None => return Ok(Incoming::Closed(None)),
                Some(Err(_)) => return Ok(Incoming::Closed(None)),
                Some(Ok(Message::Binary(b))) => return Ok(Incoming::Frame(b.to_vec())),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Incoming::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
            }
        }
        bail!("too many control frames")
    }

    /// Reads (bounded) until the close; returns its code. Frames before it are returned too.
    pub async fn until_close(&mut self) -> Result<(Vec<Vec<u8>>, Option<u16>)> {
        let mut frames = Vec::new();
        for _ in 0..64 {
            match self.recv().await? {
                Incoming::Frame(f) => frames.push(f),
                Incoming::Closed(code) => return Ok((frames, code)),
            }
        }
        bail!("the manager kept sending frames and never closed")
    }

    /// The challenge (the first frame).
    pub async fn challenge(&mut self) -> Result<Vec<u8>> {
        match self.recv().await? {
            Incoming::Frame(f) => Ok(f),
            Incoming::Closed(code) => bail!("closed before the challenge (code {code:?})"),
        }
    }

    /// Sends one binary message. A send error is ignored (the manager may already have closed).
    pub async fn send(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(Message::binary(bytes)).await;
    }

    /// Sends one text message (the protocol allows binary only).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::text(text.to_owned())).await;
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// The server nonce a challenge frame carries.
pub fn challenge_nonce(challenge: &[u8]) -> Result<[u8; 32]> {
    let raw = frame::split(challenge, frame::MAX_MAX_FRAME).map_err(|e| anyhow!("challenge: {e}"))?;
    let c: Challenge = serde_json::from_slice(raw.payload).context("challenge payload")?;
    Ok(c.server_nonce)
}

/// The `max_frame` a challenge announces.
pub fn challenge_max_frame(challenge: &[u8]) -> Result<usize> {
    let raw = frame::split(challenge, frame::MAX_MAX_FRAME).map_err(|e| anyhow!("challenge: {e}"))?;
    let c: Challenge = serde_json::from_slice(raw.payload).context("challenge payload")?;
    Ok(c.max_frame as usize)
}

/// The hello an honest client would send for `challenge`, with the state to read the welcome.
pub fn hello_for(
    challenge: &[u8],
    account: &str,
    token: &Token,
    client_nonce: [u8; 32],
) -> Result<(AwaitingWelcome, Vec<u8>)> {
    ClientHandshake::new(account, token, delegate("attack"))
        .receive_challenge(challenge, client_nonce, unix_now())
        .map_err(|e| anyhow!("challenge refused: {e}"))
}

/// Re-signs a doctored hello payload with the token's key (valid MAC, chosen content).
pub fn signed_hello(token: &Token, payload: &Value) -> Vec<u8> {
    let bytes = serde_json::to_vec(payload).expect("JSON serializes");
    frame::signed(&MacKey::new(token.key().expose_bytes()), HELLO_LABEL, &bytes)
}

/// The JSON payload of a frame.
pub fn payload_json(frame_bytes: &[u8]) -> Result<Value> {
    let raw = frame::split(frame_bytes, frame::MAX_MAX_FRAME).map_err(|e| anyhow!("frame: {e}"))?;
    Ok(serde_json::from_slice(raw.payload)?)
}

/// `bytes` with bit `bit` flipped.
pub fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Index of the first tag bit and of the first payload bit of a frame.
pub const TAG_BITS: std::ops::Range<usize> = 8..HEADER_LEN * 8;

/// How a handshake attempt ended.
#[derive(Debug)]
pub enum Answer {
    /// The manager accepted: a verified welcome.
    Welcome(Box<Established>),
    /// A reject frame, then the close.
    Rejected {
        /// The reject code.
        code: RejectCode,
        /// Whether it verified under `K_s2c`.
        signed: bool,
        /// The close code that followed.
        close: Option<u16>,
    },
    /// Closed without a reject frame.
    Closed(Option<u16>),
}

impl Answer {
    /// `(reject code, signed, close code)` of a reject; panics with a clear message otherwise.
    pub fn rejection(&self) -> (RejectCode, bool, Option<u16>) {
        match self {
            Answer::Rejected { code, signed, close } => (*code, *signed, *close),
            other => panic!("expected a reject, got {}", other.describe()),
        }
    }

    /// The close code, whatever came before it (`None` for a welcome).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Answer::Rejected { close, .. } | Answer::Closed(close) => *close,
            Answer::Welcome(_) => None,
        }
    }

    /// Whether the manager accepted.
    pub fn is_welcome(&self) -> bool {
        matches!(self, Answer::Welcome(_))
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        match self {
            Answer::Welcome(_) => "welcome".into(),
            Answer::Rejected { code, signed, close } => {
                format!("reject {code} (signed: {signed}) close {close:?}")
            }
            Answer::Closed(code) => format!("closed {code:?}"),
        }
    }
}

/// An authenticated session held by the raw client, with its keys (to forge frames that
/// carry a valid tag but a wrong seq, direction or type).
#[derive(Debug)]
pub struct Established {
    /// The connection.
    pub raw: Raw,
    /// The protocol session (honest frames).
    pub session: ClientSession,
    /// The session keys.
    pub keys: SessionKeys,
    /// The welcome frame as received (s2c seq 0): reflect it to test direction checks.
    pub welcome: Vec<u8>,
}

impl Established {
    /// A c2s frame with a valid `K_c2s` tag over any payload.
    pub fn forge_c2s(&self, payload: &Value) -> Vec<u8> {
        frame::signed(&MacKey::new(self.keys.c2s()), b"", &serde_json::to_vec(payload).expect("JSON"))
    }

    /// Reads (bounded) until the close; the close code.
    pub async fn closed_with(&mut self) -> Result<Option<u16>> {
        Ok(self.raw.until_close().await?.1)
    }
}

/// Reads the manager's answer to a hello already sent.
pub async fn read_answer(mut raw: Raw, awaiting: AwaitingWelcome, keys: SessionKeys) -> Result<Answer> {
    let first = match raw.recv().await? {
        Incoming::Closed(code) => return Ok(Answer::Closed(code)),
        Incoming::Frame(f) => f,
    };
    match awaiting.receive_welcome(&first) {
        Ok((session, _)) => Ok(Answer::Welcome(Box::new(Established { raw, session, keys, welcome: first }))),
        Err(HandshakeError::Rejected(r)) => {
            let (_, close) = raw.until_close().await?;
            Ok(Answer::Rejected { code: r.code, signed: r.signed, close })
        }
        Err(e) => bail!("the manager's answer breaks the protocol: {e}"),
    }
}

/// A complete handshake attempt from `source` as `account` with `token`.
pub async fn handshake(
    target: &Target,
    source: Option<IpAddr>,
    account: &str,
    token: &Token,
) -> Result<Answer> {
    let mut raw = Raw::connect(target, source).await?;
    let challenge = raw.challenge().await?;
    let client_nonce = nonce32();
    let (awaiting, hello) = match ClientHandshake::new(account, token, delegate("attack")).receive_challenge(
        &challenge,
        client_nonce,
        unix_now(),
    ) {
        Ok(ok) => ok,
        Err(HandshakeError::Rejected(r)) => {
            let (_, close) = raw.until_close().await?;
            return Ok(Answer::Rejected { code: r.code, signed: r.signed, close });
        }
        Err(e) => bail!("bad challenge: {e}"),
    };
    let keys = token.key().session_keys(&challenge_nonce(&challenge)?, &client_nonce);
    raw.send(hello).await;
    read_answer(raw, awaiting, keys).await
}

/// Sends arbitrary hello bytes after the challenge and reads the answer, which must not be a
/// welcome (no session keys are known for arbitrary bytes): the reject and close code.
pub async fn send_hello_bytes(
    raw: &mut Raw,
    hello: Vec<u8>,
) -> Result<(Option<(RejectCode, bool)>, Option<u16>)> {
    raw.send(hello).await;
    let (frames, close) = raw.until_close().await?;
    let reject = match frames.first() {
        None => None,
        Some(f) => {
            let v = payload_json(f)?;
            if v["type"] != "reject" {
                bail!("expected a reject, got {v}");
            }
            let code: RejectCode = serde_json::from_value(v["code"].clone())?;
            let raw_frame = frame::split(f, frame::MAX_MAX_FRAME).map_err(|e| anyhow!("{e}"))?;
            Some((code, !raw_frame.is_unsigned()))
        }
    };
    Ok((reject, close))
}
