//! Secret scanning: every form in which a token could leak into a log, an error or a file
//! (the token string, its secret-bearing body, the secret and `K_token` in hex, base64 and
//! base64url), and a search that reports where a form was found without printing it.
use tether_protocol::Token;

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let at = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let n = (u32::from(at(0)) << 16) | (u32::from(at(1)) << 8) | u32::from(at(2));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
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
    let mut needles = vec![full.clone()];
    // `tdt_` + 22 characters of id, then the secret's characters.
    needles.extend(full.get(4 + 22..4 + 60).map(str::to_owned));
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

/// Where each needle occurs in `haystack` (label, needle index); empty when clean. Needles
/// shorter than 16 characters are skipped (they would match by chance).
pub fn find_needles(label: &str, haystack: &str, needles: &[String]) -> Vec<String> {
    needles
        .iter()
        .enumerate()
        .filter(|(_, n)| n.len() >= 16 && haystack.contains(n.as_str()))
        .map(|(i, _)| format!("{label}: secret form #{i}"))
        .collect()
}

/// `text` with every token string in it (`tdt_…`, `tat_…`: the prefix and the run of
/// letters, digits, `_` and `-` after it) and every needle of 16 characters or more replaced by
/// `[redacted]`: for printing a tool's output that may quote tokens it was given or created.
pub fn redact(text: &str, needles: &[String]) -> String {
    let mut out = text.to_owned();
    for needle in needles.iter().filter(|n| n.len() >= 16) {
        out = out.replace(needle.as_str(), "[redacted]");
    }
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("tdt_").into_iter().chain(rest.find("tat_")).min() {
        // `at` starts an ASCII prefix found by `find`: both cuts are on character boundaries.
        let (before, prefix) = (rest.get(..at).unwrap_or_default(), rest.get(at..at + 4).unwrap_or_default());
        let after = rest.get(at + 4..).unwrap_or_default();
        redacted.push_str(before);
        redacted.push_str(prefix);
        redacted.push_str("[redacted]");
        let end =
            after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(after.len());
        rest = after.get(end..).unwrap_or_default();
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn redact_hides_token_strings_and_needles() {
        let text = "a tat_abcDEF123-_xyz b \"tdt_Q9\" c SECRETSECRETSECRET1 d tat_";
        let out = redact(text, &["SECRETSECRETSECRET1".to_owned()]);
        assert_eq!(out, "a tat_[redacted] b \"tdt_[redacted]\" c [redacted] d tat_[redacted]");
    }

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
        assert_eq!(needles.len(), 10, "the string, its body and 4 encodings of 2 byte strings");
        assert!(!find_needles("x", &format!("log {} end", t.expose().as_str()), &needles).is_empty());
        assert!(!find_needles("x", &hex::encode(t.key().expose_bytes()), &needles).is_empty());
        assert!(find_needles("x", &format!("token {t} created"), &needles).is_empty());
    }
}
