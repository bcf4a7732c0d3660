//! Framing: `version (1 byte = 0x01) || tag (32 bytes) || payload (JSON)`, as one binary
//! WebSocket message. Unsigned frames carry 32 zero bytes as tag.
use crate::error::ProtocolError;
use crate::keys::{MacKey, KEY_LEN};
use crate::PROTOCOL_VERSION;

/// Bytes before the payload: version and tag.
pub const HEADER_LEN: usize = 1 + KEY_LEN;
/// The default maximum frame size announced in the challenge.
pub const DEFAULT_MAX_FRAME: usize = 65_536;
/// The smallest `max_frame` a client accepts in a challenge.
pub const MIN_MAX_FRAME: usize = 1_024;
/// The largest `max_frame` a client accepts in a challenge.
pub const MAX_MAX_FRAME: usize = 16 * 1024 * 1024;
/// The tag of an unsigned frame.
pub const ZERO_TAG: [u8; KEY_LEN] = [0; KEY_LEN];

/// Label prepended to the hello payload under `K_token`.
pub const HELLO_LABEL: &[u8] = b"tether/v1/hello\n";

/// A frame split into its parts; borrows the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The 32-byte tag.
    pub tag: &'a [u8; KEY_LEN],
    /// The JSON payload, exactly as sent.
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    /// Whether the tag is all zeros (an unsigned frame).
    pub fn is_unsigned(&self) -> bool {
        self.tag == &ZERO_TAG
    }
}

/// Splits a frame, checking size, header length and version. Does not verify the tag.
pub fn split(bytes: &[u8], max_frame: usize) -> Result<RawFrame<'_>, ProtocolError> {
    if bytes.len() > max_frame {
        return Err(ProtocolError::Oversize { len: bytes.len(), max: max_frame });
    }
    let (Some((&version, rest)), true) = (bytes.split_first(), bytes.len() >= HEADER_LEN) else {
        return Err(ProtocolError::Truncated { len: bytes.len() });
    };
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::BadVersion { got: version });
    }
    let (tag, payload) =
        rest.split_first_chunk::<KEY_LEN>().ok_or(ProtocolError::Truncated { len: bytes.len() })?;
    Ok(RawFrame { tag, payload })
}

/// Joins version, tag and payload into one frame.
pub fn join(tag: &[u8; KEY_LEN], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(tag);
    out.extend_from_slice(payload);
    out
}

/// An unsigned frame (zero tag).
pub fn unsigned(payload: &[u8]) -> Vec<u8> {
    join(&ZERO_TAG, payload)
}

/// A frame tagged with `HMAC(key, label || payload)`.
pub fn signed(key: &MacKey, label: &[u8], payload: &[u8]) -> Vec<u8> {
    join(&key.tag(label, payload), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_errors_are_distinct() {
        assert_eq!(split(&[1; 10], 100), Err(ProtocolError::Truncated { len: 10 }));
        assert_eq!(split(&[2; 40], 100), Err(ProtocolError::BadVersion { got: 2 }));
        assert_eq!(split(&[1; 101], 100), Err(ProtocolError::Oversize { len: 101, max: 100 }));
        let f = unsigned(b"{}");
        let raw = split(&f, 100).unwrap();
        assert!(raw.is_unsigned());
        assert_eq!(raw.payload, b"{}");
    }

    #[test]
    fn signed_frame_verifies() {
        let key = MacKey::new(&[9; 32]);
        let f = signed(&key, b"l", b"{\"a\":1}");
        let raw = split(&f, 1000).unwrap();
        assert!(key.verify(b"l", raw.payload, raw.tag));
        assert!(!key.verify(b"m", raw.payload, raw.tag));
    }
}
