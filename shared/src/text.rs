//! Bounding and checking untrusted text: the one place that shortens a string (always on a
//! character boundary, so no input can make it panic) and decides which characters may be
//! shown to an operator's terminal.

/// `s` cut to at most `max_bytes` bytes, on a character boundary (never inside a multi-byte
/// character): the longest prefix that fits.
pub fn bounded(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        // `end` > 0 here: index 0 is always a boundary.
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Shortens `s` in place to at most `max_bytes` bytes, on a character boundary.
pub fn bound_in_place(s: &mut String, max_bytes: usize) {
    let keep = bounded(s, max_bytes).len();
    s.truncate(keep); // checked: `keep` is a character boundary (from `bounded`)
}

/// `s` cut to at most `max_chars` characters.
pub fn bounded_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

/// Whether `s` holds a control character (C0, DEL, C1) or a bidirectional override that
/// could rewrite what an operator's terminal shows.
pub fn has_control(s: &str) -> bool {
    s.chars().any(is_unsafe_char)
}

fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A copy of `s` safe to print on a terminal: every control or bidi-override character is
/// written as a `\u{…}` escape; everything else is kept as it is.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    if !has_control(s) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_never_splits_a_character() {
        let s = format!("{}é", "a".repeat(63));
        assert_eq!(s.len(), 65);
        assert_eq!(bounded(&s, 64), "a".repeat(63));
        assert_eq!(bounded(&s, 65), s);
        assert_eq!(bounded("", 0), "");
        assert_eq!(bounded("日本語", 1), "");
        assert_eq!(bounded("日本語", 3), "日");
        assert_eq!(bounded("😀x", 4), "😀");
        let mut owned = format!("{}é", "x".repeat(511));
        bound_in_place(&mut owned, 512);
        assert_eq!(owned, "x".repeat(511));
    }

    #[test]
    fn bounded_on_every_cut_of_mixed_text() {
        let s = "aé日😀\u{301}z";
        for max in 0..=s.len() + 1 {
            let b = bounded(s, max);
            assert!(b.len() <= max);
            assert!(s.starts_with(b));
            let mut owned = s.to_owned();
            bound_in_place(&mut owned, max);
            assert_eq!(owned, b);
        }
        assert_eq!(bounded_chars(s, 3), "aé日");
        assert_eq!(bounded_chars(s, 99), s);
    }

    #[test]
    fn control_characters_are_found_and_escaped() {
        let evil = "\u{1b}]0;title\u{7}\u{1b}[2Jx";
        assert!(has_control(evil));
        let shown = escape_control(evil);
        assert!(!has_control(&shown));
        assert_eq!(shown, "\\u{1b}]0;title\\u{7}\\u{1b}[2Jx");
        assert!(has_control("a\u{202e}b"));
        assert!(has_control("tab\there"));
        assert!(!has_control("délégué-日本"));
        assert_eq!(escape_control("plain"), "plain");
    }
}
