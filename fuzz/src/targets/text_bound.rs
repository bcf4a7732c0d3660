//! The text helpers every bounded string goes through (`tether_protocol::text`), on arbitrary
//! UTF-8: every cut lands on a character boundary, is a prefix, and fits; escaping leaves no
//! control character.
//!
//! Input: a `u16` limit (big-endian), then text (invalid UTF-8 is replaced, as a lossy
//! reader would).
use tether_protocol::text;

use crate::Reached;

/// Checks the helpers on one input.
pub fn run(data: &[u8]) -> Reached {
    let Some((limit, rest)) = data.split_first_chunk::<2>() else { return Reached::Refused };
    let limit = usize::from(u16::from_be_bytes(*limit));
    let s = String::from_utf8_lossy(rest);
    let cut = text::bounded(&s, limit);
    assert!(cut.len() <= limit && s.starts_with(cut));
    assert!(cut.len() + 4 > limit || cut.len() == s.len(), "cut more than one character short");
    let mut owned = s.clone().into_owned();
    text::bound_in_place(&mut owned, limit);
    assert_eq!(owned, cut);
    let chars = text::bounded_chars(&s, limit);
    assert!(chars.chars().count() <= limit && s.starts_with(chars));
    let shown = text::escape_control(&s);
    assert!(!text::has_control(&shown));
    if text::has_control(&s) {
        Reached::Accepted
    } else {
        Reached::Parsed
    }
}

/// Every straddling and control string at each limit.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in crate::boundary::straddling().into_iter().chain(crate::boundary::control()) {
        for &limit in crate::boundary::LIMITS {
            let limit = u16::try_from(limit).unwrap_or(u16::MAX);
            out.push([&limit.to_be_bytes()[..], s.as_bytes()].concat());
        }
    }
    out
}
