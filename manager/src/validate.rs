//! Validation of hostile input shared by the API and the CLI: names, CIDR lists, sizes.
use ipnet::IpNet;

/// Longest name (account id, token name, admin token name) accepted.
pub const MAX_NAME_LEN: usize = 64;
/// What [`name`] accepts, as a regular expression (ECMA-262, for the OpenAPI document).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// Longest CIDR entry, in bytes (before it is parsed).
pub const MAX_CIDR_LEN: usize = 64;
/// Most CIDRs one token may carry.
pub const MAX_CIDRS: usize = 32;

/// Why an input was refused. The message names the field and never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidInput {
    /// Which field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl InvalidInput {
    /// A new error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn name(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(InvalidInput::new(field, format!("must be 1 to {MAX_NAME_LEN} characters")));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(InvalidInput::new(
            field,
            "may contain only letters, digits, `.`, `_` and `-`, and must start with a letter or digit",
        ));
    }
    Ok(())
}

/// Parses a list of CIDRs (IPv4 or IPv6; a bare address means a single host).
pub fn cidrs(field: &'static str, values: &[String]) -> Result<Vec<IpNet>, InvalidInput> {
    if values.len() > MAX_CIDRS {
        return Err(InvalidInput::new(field, format!("at most {MAX_CIDRS} entries")));
    }
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            if v.len() > MAX_CIDR_LEN {
                return Err(InvalidInput::new(field, "entry too long"));
            }
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    InvalidInput::new(field, "entries must be CIDRs like 10.0.0.0/8 or 2001:db8::/32")
                })
        })
        .collect()
}

/// A duration in seconds within `min..=max`.
pub fn secs(field: &'static str, value: u64, min: u64, max: u64) -> Result<u64, InvalidInput> {
    if value < min || value > max {
        return Err(InvalidInput::new(field, format!("must be between {min} and {max} seconds")));
    }
    Ok(value)
}

/// Whether `ip` is allowed by `allowed` (an empty list allows every address).
pub fn ip_allowed(allowed: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    allowed.is_empty() || allowed.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("n", "default").is_ok());
        assert!(name("n", "a.b_c-9").is_ok());
        assert!(name("n", "").is_err());
        assert!(name("n", "-x").is_err());
        assert!(name("n", "a b").is_err());
        assert!(name("n", "a/b").is_err());
        assert!(name("n", &"a".repeat(65)).is_err());
        assert!(name("n", "é").is_err());
        // The documented pattern says the same: its repeat bound is the length bound less one.
        assert!(NAME_PATTERN.ends_with(&format!("{{0,{}}}$", MAX_NAME_LEN - 1)));
    }

    #[test]
    fn cidr_lists() {
        let ok = cidrs("c", &["10.1.2.3/8".into(), "::1".into()]).unwrap();
        assert_eq!(ok[0].to_string(), "10.0.0.0/8");
        assert_eq!(ok[1].to_string(), "::1/128");
        assert!(cidrs("c", &["10.0.0.0/33".into()]).is_err());
        assert!(cidrs("c", &["nope".into()]).is_err());
        assert!(ip_allowed(&ok, "10.9.9.9".parse().unwrap()));
        assert!(ip_allowed(&ok, "::ffff:10.9.9.9".parse().unwrap()));
        assert!(!ip_allowed(&ok, "11.0.0.1".parse().unwrap()));
        assert!(ip_allowed(&[], "11.0.0.1".parse().unwrap()));
    }
}
