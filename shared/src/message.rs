//! The closed message set of v1 as typed enums. Handshake messages ([`Challenge`], [`Hello`],
//! [`Welcome`], [`Reject`]) and session messages ([`C2s`] client to server, [`S2c`] server to
//! client). Every session message carries `seq` as its first field after `type`; the session
//! assigns it when encoding.
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::b64;
use crate::error::RejectCode;

/// First frame, server to client, unsigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "challenge")]
pub struct Challenge {
    /// Protocol version spoken by the server (1).
    pub v: u64,
    /// 32 random bytes, echoed in the hello.
    #[serde(with = "b64::nonce32")]
    pub server_nonce: [u8; 32],
    /// Server time, unix seconds.
    pub time: u64,
    /// Largest frame either side may send, in bytes.
    pub max_frame: u64,
}

/// Who the delegate is; carried in the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegateInfo {
    /// Operator-chosen name (`DELEGATE_NAME`).
    pub name: String,
    /// A UUID per process start, to tell replicas of one name apart.
    pub instance: Uuid,
    /// The delegate's software version.
    pub version: String,
    /// Host name the delegate runs on.
    pub host: String,
}

/// Second frame, client to server, tagged with `HMAC(K_token, "tether/v1/hello\n" || payload)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "hello")]
pub struct Hello {
    /// Protocol version spoken by the client (1).
    pub v: u64,
    /// The account the token belongs to.
    pub account_id: String,
    /// The public id of the token.
    pub token_id: Uuid,
    /// The challenge's nonce, echoed.
    #[serde(with = "b64::nonce32")]
    pub server_nonce: [u8; 32],
    /// 32 random bytes from the client.
    #[serde(with = "b64::nonce32")]
    pub client_nonce: [u8; 32],
    /// Client time, unix seconds.
    pub time: u64,
    /// Who is connecting.
    pub delegate: DelegateInfo,
}

/// Server to client, tagged with `K_s2c`, seq 0: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "welcome")]
pub struct Welcome {
    /// Always 0: the welcome is the first s2c frame of the session.
    pub seq: u64,
    /// The session's id, as shown in the manager's delegate list.
    pub session_id: Uuid,
    /// How often the client must send a heartbeat.
    pub heartbeat_secs: u64,
    /// When the token expires, unix seconds, if it does.
    pub token_expires_at: Option<u64>,
}

/// Server to client, then close: the handshake failed. Signed with `K_s2c` only when the
/// hello's tag verified (revoked, expired, ip_not_allowed); otherwise unsigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "reject")]
pub struct Reject {
    /// Why.
    pub code: RejectCode,
    /// A human-readable explanation; never contains secrets.
    pub message: String,
}

/// The status a delegate reports in each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatStatus {
    /// Seconds since the delegate process started.
    pub uptime_secs: u64,
    /// How the delegate would apply a rotation: `docker`, `file` or `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_mode: Option<String>,
}

/// How a delegate applied a rotated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotateOutcome {
    /// The new token is in use (docker or file mode).
    Applied,
    /// Applying failed; the delegate stays on the old token.
    Failed,
    /// The delegate cannot apply it itself; an operator must.
    Manual,
}

/// The kinds of task v1 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Reply with the same payload: connectivity checks and benchmarks.
    Echo,
}

/// Why a peer says goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// The peer is shutting down.
    Shutdown,
    /// The peer restarts and will be back soon.
    Restart,
    /// The delegate is being replaced by its successor container.
    Replaced,
    /// An operator disconnected this session.
    Disconnected,
}

/// Why a live session's token stopped being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedReason {
    /// An operator revoked the token, or a rotation finished.
    Revoked,
    /// The token reached its expiry.
    Expired,
}

/// Client-to-server session messages, tagged with `K_c2s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum C2s {
    /// Liveness and status, every `heartbeat_secs`.
    Heartbeat {
        /// Assigned by the session.
        seq: u64,
        /// The delegate's status.
        status: HeartbeatStatus,
    },
    /// The outcome of a `rotate`.
    RotateAck {
        /// Assigned by the session.
        seq: u64,
        /// The rotation this answers.
        rotation_id: Uuid,
        /// What happened.
        outcome: RotateOutcome,
        /// Human-readable detail (never the token).
        detail: String,
    },
    /// The reply to a `task`.
    TaskResult {
        /// Assigned by the session.
        seq: u64,
        /// The task this answers.
        task_id: Uuid,
        /// Whether the task succeeded.
        ok: bool,
        /// The result (for `echo`, the payload received).
        payload: String,
    },
    /// The delegate is going away; the manager may forget the session at once.
    Goodbye {
        /// Assigned by the session.
        seq: u64,
        /// Why.
        reason: GoodbyeReason,
    },
}

/// Server-to-client session messages, tagged with `K_s2c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum S2c {
    /// The token rotates: here is its successor, sealed under `K_seal`.
    Rotate {
        /// Assigned by the session.
        seq: u64,
        /// The rotation's id (also the AEAD associated data).
        rotation_id: Uuid,
        /// The successor token's id.
        token_id: Uuid,
        /// `B64(nonce[12] || ChaCha20-Poly1305(K_seal, nonce, token, aad = rotation_id))`.
        sealed_token: String,
        /// Until when the current token stays valid, unix seconds.
        old_token_valid_until: u64,
    },
    /// The session's token was revoked (or expired); the server closes with 4003 (or 4004).
    Revoked {
        /// Assigned by the session.
        seq: u64,
        /// Which token.
        token_id: Uuid,
        /// Revoked or expired.
        reason: RevokedReason,
        /// What happened and what to do.
        message: String,
    },
    /// A small request the delegate answers with `task_result`.
    Task {
        /// Assigned by the session.
        seq: u64,
        /// Echoed in the result.
        task_id: Uuid,
        /// What to do.
        kind: TaskKind,
        /// Input.
        payload: String,
    },
    /// The manager is going away; reconnect soon, with jitter.
    Goodbye {
        /// Assigned by the session.
        seq: u64,
        /// Why.
        reason: GoodbyeReason,
    },
}

/// Message types the handshake knows.
pub(crate) const HANDSHAKE_TYPES: &[&str] = &["challenge", "hello", "welcome", "reject"];
/// Message types a client sends in a session.
pub(crate) const C2S_TYPES: &[&str] = &["heartbeat", "rotate_ack", "task_result", "goodbye"];
/// Message types a server sends in a session.
pub(crate) const S2C_TYPES: &[&str] = &["rotate", "revoked", "task", "goodbye"];

/// A session message with a sequence number.
pub trait Sequenced: Serialize + serde::de::DeserializeOwned {
    /// Message types of this direction.
    const TYPES: &'static [&'static str];
    /// Message types of the opposite direction.
    const OTHER_TYPES: &'static [&'static str];
    /// The sequence number.
    fn seq(&self) -> u64;
    /// Replaces the sequence number.
    fn set_seq(&mut self, seq: u64);
}

impl Sequenced for C2s {
    const TYPES: &'static [&'static str] = C2S_TYPES;
    const OTHER_TYPES: &'static [&'static str] = S2C_TYPES;
    fn seq(&self) -> u64 {
        match self {
            Self::Heartbeat { seq, .. }
            | Self::RotateAck { seq, .. }
            | Self::TaskResult { seq, .. }
            | Self::Goodbye { seq, .. } => *seq,
        }
    }
    fn set_seq(&mut self, new: u64) {
        match self {
            Self::Heartbeat { seq, .. }
            | Self::RotateAck { seq, .. }
            | Self::TaskResult { seq, .. }
            | Self::Goodbye { seq, .. } => *seq = new,
        }
    }
}

impl Sequenced for S2c {
    const TYPES: &'static [&'static str] = S2C_TYPES;
    const OTHER_TYPES: &'static [&'static str] = C2S_TYPES;
    fn seq(&self) -> u64 {
        match self {
            Self::Rotate { seq, .. }
            | Self::Revoked { seq, .. }
            | Self::Task { seq, .. }
            | Self::Goodbye { seq, .. } => *seq,
        }
    }
    fn set_seq(&mut self, new: u64) {
        match self {
            Self::Rotate { seq, .. }
            | Self::Revoked { seq, .. }
            | Self::Task { seq, .. }
            | Self::Goodbye { seq, .. } => *seq = new,
        }
    }
}

/// Reads only the `type` field, to tell an unknown type from a malformed known one.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

/// Longest `type` (in bytes) carried into an error: the rest of an unknown type is noise.
const MAX_TYPE_SHOWN: usize = 64;

/// Longest parser message (in bytes) carried into a [`crate::ProtocolError::Malformed`]: serde
/// quotes peer text in its messages (an unknown enum variant in full, a string of the wrong
/// type), and these errors reach log lines and reject frames.
const MAX_DETAIL_SHOWN: usize = 256;

/// Peer text as it may appear in an error: bounded on a character boundary, with every control
/// or bidi-override character escaped, so an error can neither forge a log line nor steer the
/// terminal of whoever reads it.
fn shown(text: &str, max_bytes: usize) -> String {
    crate::text::escape_control(crate::text::bounded(text, max_bytes)).into_owned()
}

/// The `type` of a JSON payload, if it has one, bounded on a character boundary and with
/// control characters escaped (no known type holds one, so the comparisons are unchanged).
pub(crate) fn peek_type(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<TypeOnly>(payload).ok().map(|t| shown(&t.kind, MAX_TYPE_SHOWN))
}

/// A malformed-payload error from serde's message about it.
fn malformed(err: &serde_json::Error) -> crate::ProtocolError {
    crate::ProtocolError::Malformed(shown(&err.to_string(), MAX_DETAIL_SHOWN))
}

/// Parses `payload` as `T`, mapping failures to precise errors: unknown type, a message that
/// belongs elsewhere (`expected`), or malformed.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    own_types: &[&str],
    expected: &'static str,
) -> Result<T, crate::ProtocolError> {
    use crate::ProtocolError;
    serde_json::from_slice(payload).map_err(|err| match peek_type(payload) {
        Some(kind) if own_types.contains(&kind.as_str()) => malformed(&err),
        Some(kind) if is_known(&kind) => ProtocolError::Unexpected { expected, got: kind },
        Some(kind) => ProtocolError::UnknownType(kind),
        None => malformed(&err),
    })
}

/// Parses a handshake message, a tagged *struct* ([`Challenge`], [`Hello`], [`Welcome`],
/// [`Reject`]). serde checks the `type` of an internally tagged enum but ignores the `type` of
/// an internally tagged struct, so it is checked here: a payload of another or an unknown type
/// that happens to carry the right fields is never taken for this message.
pub(crate) fn parse_struct<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    own_type: &'static str,
) -> Result<T, crate::ProtocolError> {
    use crate::ProtocolError;
    let msg = parse(payload, &[own_type], own_type)?;
    match peek_type(payload) {
        Some(kind) if kind == own_type => Ok(msg),
        Some(kind) if is_known(&kind) => Err(ProtocolError::Unexpected { expected: own_type, got: kind }),
        Some(kind) => Err(ProtocolError::UnknownType(kind)),
        None => Err(ProtocolError::Malformed("missing `type`".into())),
    }
}

fn is_known(kind: &str) -> bool {
    [HANDSHAKE_TYPES, C2S_TYPES, S2C_TYPES].iter().any(|set| set.contains(&kind))
}

/// Serializes a message to its payload bytes.
pub(crate) fn to_payload<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("message types always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProtocolError;

    #[test]
    fn handshake_structs_refuse_another_or_an_unknown_type() {
        let hello = Hello {
            v: 1,
            account_id: "a".into(),
            token_id: Uuid::from_u128(1),
            server_nonce: [1; 32],
            client_nonce: [2; 32],
            time: 3,
            delegate: DelegateInfo {
                name: "n".into(),
                instance: Uuid::from_u128(2),
                version: "v".into(),
                host: "h".into(),
            },
        };
        let good = to_payload(&hello);
        assert_eq!(parse_struct::<Hello>(&good, "hello").unwrap(), hello);
        let text = String::from_utf8(good).unwrap();
        // serde alone accepts these (it ignores a tagged struct's tag): parse_struct does not.
        let unknown = text.replace("\"type\":\"hello\"", "\"type\":\"hullo\"");
        assert!(serde_json::from_slice::<Hello>(unknown.as_bytes()).is_ok(), "serde's behaviour changed");
        assert_eq!(
            parse_struct::<Hello>(unknown.as_bytes(), "hello"),
            Err(ProtocolError::UnknownType("hullo".into()))
        );
        let other = text.replace("\"type\":\"hello\"", "\"type\":\"welcome\"");
        assert_eq!(
            parse_struct::<Hello>(other.as_bytes(), "hello"),
            Err(ProtocolError::Unexpected { expected: "hello", got: "welcome".into() })
        );
        let untyped = text.replace("\"type\":\"hello\",", "");
        assert!(matches!(
            parse_struct::<Hello>(untyped.as_bytes(), "hello"),
            Err(ProtocolError::Malformed(_))
        ));
        let reject = br#"{"type":"welcome","code":"revoked","message":"m"}"#;
        assert!(parse_struct::<Reject>(reject, "reject").is_err());
    }

    #[test]
    fn peer_text_in_a_parse_error_is_bounded_and_escaped() {
        // serde quotes an unknown variant in full: before the fix the error (logged by the
        // manager at INFO for any authenticated delegate) carried a forged log line, a terminal
        // control sequence and 30,000 bytes of padding.
        let evil =
            format!("\u{1b}]0;pwned\u{7}\nFORGED 2026 INFO admin token revoked\n{}", "p".repeat(30_000));
        let ack = serde_json::json!({"type": "rotate_ack", "seq": 0, "rotation_id": Uuid::from_u128(1),
            "outcome": evil, "detail": ""});
        let err = parse::<C2s>(ack.to_string().as_bytes(), C2s::TYPES, "a session message").unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed(_)), "{err:?}");
        let shown = err.to_string();
        assert!(!crate::text::has_control(&shown), "{shown:?}");
        assert!(shown.len() < 1_024, "{} bytes", shown.len());
        for kind in ["\nFORGED line", "\u{1b}]0;x\u{7}", "a\u{202e}b"] {
            let payload = serde_json::json!({ "type": kind, "seq": 0 }).to_string();
            let err = parse::<C2s>(payload.as_bytes(), C2s::TYPES, "a session message").unwrap_err();
            assert!(matches!(err, ProtocolError::UnknownType(_)), "{err:?}");
            assert!(!crate::text::has_control(&err.to_string()), "{err}");
            let err = parse_struct::<Hello>(payload.as_bytes(), "hello").unwrap_err();
            assert!(!crate::text::has_control(&err.to_string()), "{err}");
        }
    }
}
