//! Cutting one fuzz input into parts: a leading mode byte, then length-prefixed chunks
//! (`u16` big-endian length, then that many bytes; a short last chunk takes what is left).
//! The seed writer uses [`join_chunks`] so that seeds and drivers agree on the format.

/// The `type` of a JSON payload, read the way the protocol reads it (a typed field; other
/// fields are skipped, not validated — `serde_json::Value` would refuse e.g. a lone surrogate
/// escape in an ignored field that the protocol rightly ignores).
pub fn payload_type(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Kind>(payload).ok().map(|k| k.kind)
}

/// Splits off the mode byte; an empty input has none.
pub fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

/// Iterates over the length-prefixed chunks of `data`, at most `limit` of them.
pub fn chunks(mut data: &[u8], limit: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < limit && data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        data = &rest[take..];
    }
    out
}

/// The inverse of [`chunks`]: a mode byte, then each part with its `u16` length.
pub fn join_chunks(mode: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode];
    for part in parts {
        let len = u16::try_from(part.len()).expect("seed parts are under 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_tolerate_garbage() {
        let joined = join_chunks(3, &[b"ab", b"", b"cde"]);
        let (m, rest) = mode(&joined).unwrap();
        assert_eq!(m, 3);
        assert_eq!(chunks(rest, 10), vec![&b"ab"[..], &b""[..], &b"cde"[..]]);
        assert_eq!(chunks(&[0, 9, 1, 2], 10), vec![&[1u8, 2][..]]);
        assert_eq!(chunks(&[0xff], 10), Vec::<&[u8]>::new());
        assert_eq!(chunks(rest, 1).len(), 1);
    }
}
