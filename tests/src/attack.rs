//! A raw protocol client for attack tests against the real `tether-manager` binary, and the
//! manager process those tests run (init, serve with captured TRACE-capable logs, `kill -9`,
//! restart on the same data dir and port).
//!
//! Every frame the honest paths send is built by `tether-protocol`; the attacks then take
//! those bytes apart on purpose (flip a bit, replay, reorder, reflect, oversize, re-sign a
//! doctored payload with the right key) — that is the point of this module. Connections go to
//! loopback only, from a chosen 127.0.0.x source address. Every wait has a deadline.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_protocol::error::HandshakeError;
use tether_protocol::frame::{self, HEADER_LEN, HELLO_LABEL};
use tether_protocol::handshake::client::{AwaitingWelcome, ClientHandshake};
use tether_protocol::keys::MacKey;
use tether_protocol::message::{Challenge, DelegateInfo};
use tether_protocol::session::ClientSession;
use tether_protocol::{RejectCode, SessionKeys, Token};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::load::transport::{self, Target, Ws};

/// How long any single read from the manager may take before the test fails.
pub const READ_WITHIN: Duration = Duration::from_secs(10);

/// The loopback source address `127.0.0.n`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
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

/// Polls `check` every 25 ms until it yields `Some`, or fails after `within`.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("{what}: not reached within {within:?} (last error: {last_err:?})"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The manager process
// ---------------------------------------------------------------------------------------------

/// What `tether-manager init --json` printed.
#[derive(Debug, Clone)]
pub struct Init {
    /// The first account.
    pub account_id: String,
    /// Its default token (the secret value).
    pub default_token: String,
    /// The first admin token (scope admin).
    pub admin_token: String,
    /// The CA certificate PEM path.
    pub ca_cert: PathBuf,
}

/// A real `tether-manager serve` on a loopback port, with its stderr captured to a file.
#[derive(Debug)]
pub struct Manager {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What init printed.
    pub init: Init,
    starts: u32,
}

impl Manager {
    /// `init --json` into a fresh data dir, then `serve` on a free 127.0.0.1 port with `env`
    /// (e.g. `TETHER_HANDSHAKE_FAIL_LIMIT`, `RUST_LOG`); waits (bounded) for `/readyz`.
    pub async fn start(env: &[(&str, &str)]) -> Result<Self> {
        let bin = crate::harness::process::sibling_binary("tether-manager")?;
        let dir = tempfile::tempdir()?;
        let out = Command::new(&bin)
            .args(["init", "--json", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .context("running tether-manager init")?;
        if !out.status.success() {
            bail!("tether-manager init failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(dir.path().join("init.json"), &out.stdout)?;
        let v: Value = serde_json::from_slice(&out.stdout).context("parsing init --json")?;
        let field =
            |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("init --json lacks `{k}`"));
        let init = Init {
            account_id: field("account_id")?,
            default_token: field("default_token")?,
            admin_token: field("admin_token")?,
            ca_cert: PathBuf::from(field("ca_cert")?),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::new(loopback(1), port);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut manager = Self { bin, dir, child: None, env, addr, init, starts: 0 };
        manager.serve().await?;
        Ok(manager)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("tether.db")
    }

    /// The raw `init --json` output (it holds secrets: for the secret scan's list only).
    pub fn init_json(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("init.json"))?)
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("manager-{start}.log"))
    }

    /// Starts `serve` (again) on the same data dir and port; waits for `/readyz`.
    pub async fn serve(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("already running");
        }
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen", &self.addr.to_string()])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().context("starting tether-manager serve")?);
        let client = self.http()?;
        let url = format!("{}/readyz", self.url());
        poll("manager /readyz", Duration::from_secs(30), || {
            let (client, url) = (client.clone(), url.clone());
            async move { Ok(client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await
        .map_err(|e| anyhow!("{e}; log:\n{}", self.logs()))
    }

    /// `kill -9`: no chance to flush or drain.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?; // SIGKILL on Unix
            child.wait()?;
        }
        Ok(())
    }

    /// Everything the manager wrote to stdout and stderr, over all its starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .filter_map(|n| std::fs::read_to_string(self.log_path(n)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        Ok((*self.target()?.tls).clone())
    }

    /// An HTTPS client trusting the manager's CA.
    pub fn http(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder().use_preconfigured_tls(self.tls_config()?).build()?)
    }

    /// An HTTPS client whose connections come from `source` (a 127.0.0.x address).
    pub fn http_from(&self, source: IpAddr) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.tls_config()?)
            .local_address(source)
            .build()?)
    }

    /// The delegate endpoint, trusting the manager's CA, verifying the name `localhost`.
    pub fn target(&self) -> Result<Target> {
        Target::new(self.addr, "localhost", &self.init.ca_cert)
    }

    /// One API call with the first admin token; returns the status and the JSON body
    /// (`Null` when empty or not JSON).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        api_call(&self.http()?, &self.url(), method, path, Some(&self.init.admin_token), body).await
    }

    /// Creates a token in `account` with extra fields (`expires_in_secs`, `allowed_cidrs`).
    pub async fn create_token(&self, account: &str, name: &str, extra: Value) -> Result<Token> {
        let mut body = json!({ "name": name });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, v) =
            self.api(Method::POST, &format!("/api/v1/accounts/{account}/tokens"), Some(body)).await?;
        if status != StatusCode::CREATED {
            bail!("creating token {name}: {status} {v}");
        }
        let value = v["value"].as_str().ok_or_else(|| anyhow!("created token has no `value`"))?;
        Token::parse(value).map_err(|e| anyhow!("created token does not parse: {e}"))
    }

    /// The default token of the first account.
    pub fn default_token(&self) -> Result<Token> {
        Token::parse(&self.init.default_token).map_err(|e| anyhow!("default token: {e}"))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// One API call: `Authorization: Bearer <token>` when given.
pub async fn api_call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut req = client.request(method, format!("{base}{path}")).timeout(READ_WITHIN);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Secret scanning
// ---------------------------------------------------------------------------------------------

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form in which a delegate token's secret material could leak: the token string, the
/// secret-bearing middle of its body, and the secret and `K_token` in hex, base64 and base64url.
pub fn token_needles(token: &Token) -> Vec<String> {
    let full = token.expose().to_string();
    let secret = token.secret().expose_bytes();
    let key = token.key();
    let key = key.expose_bytes();
    let mut needles = vec![full.clone(), full[4 + 22..4 + 60].to_owned()];
    for bytes in [&secret[..], &key[..]] {
        needles.push(hex::encode(bytes));
        needles.push(hex::encode_upper(bytes));
        needles.push(base64(bytes, STD, false));
        needles.push(base64(bytes, URL, false));
    }
    needles
}

/// The forms in which an admin token could leak: the value and its part after the prefix.
pub fn admin_needles(value: &str) -> Vec<String> {
    vec![value.to_owned(), value.trim_start_matches("tat_").to_owned()]
}

/// Where each needle occurs in `haystack` (label, needle index); empty when clean.
pub fn find_needles(label: &str, haystack: &str, needles: &[String]) -> Vec<String> {
    needles
        .iter()
        .enumerate()
        .filter(|(_, n)| n.len() >= 16 && haystack.contains(n.as_str()))
        .map(|(i, _)| format!("{label}: secret form #{i}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b"foobar", STD, true), "Zm9vYmFy");
        assert_eq!(base64(b"fooba", STD, true), "Zm9vYmE=");
        assert_eq!(base64(b"foob", STD, false), "Zm9vYg");
        assert_eq!(base64(&[0xfb, 0xff], URL, false), "-_8");
    }

    #[test]
    fn needles_find_a_token_and_not_its_redacted_form() {
        let t = Token::from_parts(Uuid::from_u128(1), [7; 32]);
        let needles = token_needles(&t);
        assert!(!find_needles("x", &format!("log {} end", t.expose().as_str()), &needles).is_empty());
        assert!(!find_needles("x", &hex::encode(t.key().expose_bytes()), &needles).is_empty());
        assert!(find_needles("x", &format!("token {t} created"), &needles).is_empty());
    }
}
