//! Durations on the command line: plain seconds (`3600`) or a number with one unit suffix
//! (`90s`, `15m`, `1h`, `30d`, `2w`), parsed to whole seconds by [`parse_secs`], the one
//! parser every option that takes seconds uses (clap `value_parser`).

/// The unit suffixes and how many seconds each is.
const UNITS: &[(char, u64)] = &[('s', 1), ('m', 60), ('h', 3_600), ('d', 86_400), ('w', 604_800)];

/// Why a duration was refused; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing given.
    #[error("empty duration; give seconds (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w")]
    Empty,
    /// Not a number with an optional unit.
    #[error("`{0}` is not a duration; give seconds (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w")]
    Invalid(String),
    /// An uppercase `M`, which people mean as months more often than minutes.
    #[error("`M`: use `m` for minutes; months are not a unit, use `30d`")]
    UppercaseM,
    /// Too large for a count of seconds.
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

/// Parses `90`, `90s`, `15m`, `1h`, `30d` or `2w` into seconds (units in either case, except
/// `M`, refused because it reads as months). Refuses signs, fractions, spaces inside, several
/// units and anything that overflows `u64` seconds.
pub fn parse_secs(input: &str) -> Result<u64, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let shown =
        || tether_protocol::text::escape_control(tether_protocol::text::bounded_chars(text, 32)).into_owned();
    let (digits, unit) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => (text.strip_suffix(c).unwrap_or_default(), Some(c)),
        _ => (text, None),
    };
    let multiplier = match unit {
        None => 1,
        Some('M') => return Err(DurationError::UppercaseM),
        Some(u) => match UNITS.iter().find(|(c, _)| *c == u.to_ascii_lowercase()) {
            Some((_, m)) => *m,
            None => return Err(DurationError::Invalid(shown())),
        },
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::Invalid(shown()));
    }
    let n: u64 = digits.parse().map_err(|_| DurationError::Overflow(shown()))?;
    n.checked_mul(multiplier).ok_or_else(|| DurationError::Overflow(shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_seconds_and_every_unit() {
        assert_eq!(parse_secs("3600"), Ok(3600));
        assert_eq!(parse_secs("0"), Ok(0));
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("15m"), Ok(900));
        assert_eq!(parse_secs("1h"), Ok(3600));
        assert_eq!(parse_secs("30d"), Ok(2_592_000));
        assert_eq!(parse_secs("2w"), Ok(1_209_600));
        assert_eq!(parse_secs(" 1H "), Ok(3600), "surrounding space and the unit's case do not matter");
    }

    #[test]
    fn an_uppercase_m_is_refused_as_it_reads_as_months() {
        assert_eq!(parse_secs("1M"), Err(DurationError::UppercaseM));
        assert_eq!(parse_secs(" 6M "), Err(DurationError::UppercaseM));
        let message = DurationError::UppercaseM.to_string();
        assert!(message.contains("use `m` for minutes") && message.contains("`30d`"), "{message}");
        assert_eq!(parse_secs("1m"), Ok(60), "lowercase is minutes");
        assert_eq!((parse_secs("2S"), parse_secs("1D"), parse_secs("1W")), (Ok(2), Ok(86_400), Ok(604_800)));
    }

    #[test]
    fn malformed_input_is_refused_not_guessed() {
        for bad in ["", " ", "h", "1x", "1.5h", "-1", "+1", "1 h", "1hh", "h1", "1h30m", "1e3", "0x10"] {
            assert!(parse_secs(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_secs(""), Err(DurationError::Empty));
    }

    #[test]
    fn multi_byte_input_is_refused_without_a_panic() {
        for bad in ["é", "1é", "é1", "１h", "1ｈ", "30日", "1h\u{301}", "💥", "1\u{0}s"] {
            assert!(matches!(parse_secs(bad), Err(DurationError::Invalid(_))), "{bad:?}");
        }
        let long = "é".repeat(1000);
        let Err(DurationError::Invalid(shown)) = parse_secs(&long) else { panic!("accepted") };
        assert!(shown.chars().count() <= 40, "the message quotes a bounded part: {shown}");
        let Err(e) = parse_secs("1\u{1b}[31m") else { panic!("accepted") };
        assert!(!e.to_string().contains('\u{1b}'), "control characters are escaped: {e}");
    }

    #[test]
    fn overflow_is_refused() {
        assert_eq!(parse_secs("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(parse_secs("18446744073709551616"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse_secs("18446744073709551615s"), Ok(u64::MAX)));
        assert!(matches!(parse_secs("18446744073709551615m"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse_secs("30500000000000000d"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse_secs(&"9".repeat(400)), Err(DurationError::Overflow(_))));
    }
}
