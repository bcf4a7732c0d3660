//! Text at the edges that byte-index code gets wrong: strings whose multi-byte characters
//! straddle the limits the programs bound text to (64-byte `type`s, 512-byte ack details,
//! 128-character names), and control characters. Seeds of every target that reads text
//! include these, because coverage alone never steers the fuzzer there: the standard library
//! (where `String::truncate` panics) is not instrumented, so a longer string gains no coverage.

/// The limits, in bytes, that some code bounds text to.
pub const LIMITS: &[usize] = &[64, 128, 512];

/// For each limit, strings whose character around that byte is 2, 3 or 4 bytes wide, with
/// every alignment that puts the limit inside it.
pub fn straddling() -> Vec<String> {
    let mut out = Vec::new();
    for &limit in LIMITS {
        for wide in ["é", "日", "😀"] {
            for back in 1..wide.len() {
                out.push(format!("{}{wide}", "a".repeat(limit - back)));
            }
        }
    }
    out.push("é".repeat(40));
    out.push("😀".repeat(130));
    out
}

/// Strings that would steer a terminal.
pub fn control() -> Vec<String> {
    ["\u{1b}]0;title\u{7}\u{1b}[2J", "a\nb", "bidi\u{202e}txt", "nul\u{0}", "c1\u{9b}31m"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// The frame that aborted the manager: unsigned, `type` of 63 `a` and an `é` (byte 64 inside).
pub fn crash_frame() -> Vec<u8> {
    let payload = format!("{{\"type\":\"{}é\"}}", "a".repeat(63));
    tether_protocol::frame::unsigned(payload.as_bytes())
}
