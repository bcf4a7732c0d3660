//! The access model of admin tokens beyond scopes: endpoint restriction rules (`METHOD
//! /api/v1/path/pattern`, validated strictly and matched against every request of a restricted
//! token) and the no-escalation rules that bound what a new admin token may be given by the
//! token that creates it.
use ipnet::IpNet;
use uuid::Uuid;

use crate::validate::InvalidInput;

/// Most rules one restriction may hold.
pub const MAX_RULES: usize = 64;
/// Longest rule text (`METHOD /path`), in bytes.
pub const MAX_RULE_LEN: usize = 256;
/// Longest literal path segment of a pattern.
const MAX_SEGMENT_LEN: usize = 128;
/// Longest `{name}` inside a wildcard segment.
const MAX_PARAM_LEN: usize = 32;
/// Every pattern starts with this.
pub const PATH_PREFIX: &str = "/api/v1/";

/// The method a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMethod {
    /// `*`: any method.
    Any,
    /// `GET` (and `HEAD`, which axum answers with the GET handler).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl RuleMethod {
    /// Every accepted spelling, for messages.
    pub const NAMES: &'static str = "GET, POST, PUT, PATCH, DELETE or *";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "*" => Self::Any,
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// Its canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "*",
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    fn allows(self, method: &axum::http::Method) -> bool {
        use axum::http::Method as M;
        match self {
            Self::Any => true,
            Self::Get => method == M::GET || method == M::HEAD,
            Self::Post => method == M::POST,
            Self::Put => method == M::PUT,
            Self::Patch => method == M::PATCH,
            Self::Delete => method == M::DELETE,
        }
    }

    fn allows_route(self, route_method: &str) -> bool {
        self == Self::Any || self.as_str().eq_ignore_ascii_case(route_method)
    }
}

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `*` or `{name}`: any one non-empty segment.
    Any,
    /// Exactly this (compared with the request's percent-decoded segment).
    Literal(String),
}

/// One allowed request pattern, e.g. `GET /api/v1/accounts/*/tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    method: RuleMethod,
    segments: Vec<Segment>,
}

fn invalid(entry: usize, reason: impl std::fmt::Display) -> InvalidInput {
    InvalidInput::new("allow", format!("entry {entry}: {reason}"))
}

impl Rule {
    /// Parses `METHOD /api/v1/…` strictly: the method is one of [`RuleMethod::NAMES`]; the
    /// path starts with `/api/v1/`, has no empty, `.` or `..` segments, no query, no control
    /// characters, at most [`MAX_RULE_LEN`] bytes in all; each segment is a literal of
    /// `A-Z a-z 0-9 . _ ~ -`, or `*` / `{name}` for any one segment; and the pattern matches at
    /// least one route of this API. `entry` (1-based) names it in the error.
    pub fn parse(text: &str, entry: usize) -> Result<Self, InvalidInput> {
        if text.len() > MAX_RULE_LEN {
            return Err(invalid(entry, format_args!("at most {MAX_RULE_LEN} bytes")));
        }
        if text.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(invalid(entry, "only printable ASCII is allowed"));
        }
        let mut parts = text.split(' ').filter(|p| !p.is_empty());
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid(
                entry,
                "expected `METHOD /api/v1/path`, e.g. `GET /api/v1/accounts/*/tokens`",
            ));
        };
        let method = RuleMethod::parse(method)
            .ok_or_else(|| invalid(entry, format_args!("the method must be {}", RuleMethod::NAMES)))?;
        if !path.starts_with(PATH_PREFIX) {
            return Err(invalid(entry, format_args!("the path must start with `{PATH_PREFIX}`")));
        }
        let mut segments = Vec::new();
        for seg in path.split('/').skip(1) {
            segments.push(Self::segment(seg).map_err(|why| invalid(entry, why))?);
        }
        let rule = Self { method, segments };
        if !super::ROUTES.iter().any(|(m, p)| rule.matches_route(m, p)) {
            return Err(invalid(entry, "matches no route of this API (see /api/v1/openapi.json)"));
        }
        Ok(rule)
    }

    fn segment(seg: &str) -> Result<Segment, &'static str> {
        if seg.is_empty() {
            return Err("empty path segment (`//` or a trailing `/`)");
        }
        if seg == "*" {
            return Ok(Segment::Any);
        }
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty()
                || name.len() > MAX_PARAM_LEN
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err("a `{name}` segment takes 1 to 32 letters, digits or `_`");
            }
            return Ok(Segment::Any);
        }
        if seg == "." || seg == ".." {
            return Err("`.` and `..` segments are not allowed");
        }
        if seg.len() > MAX_SEGMENT_LEN {
            return Err("a path segment may have at most 128 characters");
        }
        if !seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')) {
            return Err(
                "a literal segment may hold only letters, digits, `.`, `_`, `~` and `-` (use `*` for any)",
            );
        }
        Ok(Segment::Literal(seg.to_owned()))
    }

    /// The canonical text (`{name}` written as `*`).
    pub fn canonical(&self) -> String {
        let mut out = String::from(self.method.as_str());
        out.push(' ');
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Any => out.push('*'),
                Segment::Literal(l) => out.push_str(l),
            }
        }
        out
    }

    /// Whether this rule allows `method` on the raw request `path` (without the query). Each
    /// request segment is percent-decoded before it is compared with a literal; a segment that
    /// does not decode matches nothing.
    pub fn allows(&self, method: &axum::http::Method, path: &str) -> bool {
        if !self.method.allows(method) {
            return false;
        }
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut want = self.segments.iter();
        for got in rest.split('/') {
            let Some(seg) = want.next() else { return false };
            if got.is_empty() {
                return false;
            }
            let ok = match seg {
                Segment::Any => true,
                Segment::Literal(l) => percent_decode(got).is_some_and(|d| d == *l),
            };
            if !ok {
                return false;
            }
        }
        want.next().is_none()
    }

    /// Whether some request on the route (`method`, `template`) could match this rule.
    fn matches_route(&self, route_method: &str, template: &str) -> bool {
        if !self.method.allows_route(route_method) {
            return false;
        }
        let Some(rest) = template.strip_prefix('/') else { return false };
        let mut want = self.segments.iter();
        for t in rest.split('/') {
            let ok = match want.next() {
                None => return false,
                Some(Segment::Any) => true,
                Some(Segment::Literal(l)) => t.starts_with('{') || t == l,
            };
            if !ok {
                return false;
            }
        }
        want.next().is_none()
    }
}

/// Parses the rules of a new restriction: 1 to [`MAX_RULES`] entries, each by [`Rule::parse`];
/// duplicates (by canonical text) are dropped.
pub fn parse_rules(texts: &[String]) -> Result<Vec<Rule>, InvalidInput> {
    if texts.is_empty() || texts.len() > MAX_RULES {
        return Err(InvalidInput::new("allow", format!("give 1 to {MAX_RULES} rules")));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let rule = Rule::parse(text.trim(), i + 1)?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX`-decodes one path segment; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(seg: &str) -> Option<String> {
    let mut out = Vec::with_capacity(seg.len());
    let mut bytes = seg.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_digit)?;
            let lo = bytes.next().and_then(hex_digit)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What an admin token may do, as far as creating another admin token is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Power {
    /// Scopes (`admin` implies all).
    pub scopes: Vec<String>,
    /// The account it is bound to; `None`: all accounts.
    pub account: Option<String>,
    /// Its restriction; `None`: none.
    pub restriction: Option<Uuid>,
    /// Its expiry; `None`: never.
    pub expires_at: Option<u64>,
    /// Where it may be used from; empty: anywhere.
    pub allowed_cidrs: Vec<IpNet>,
}

impl Power {
    fn holds(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == "admin" || s == scope)
    }
}

/// Why a requested admin token would have more power than its creator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escalation {
    /// A scope the creator lacks.
    #[error("this admin token lacks the `{0}` scope, so it cannot grant it")]
    Scope(String),
    /// Another account, or all accounts, from a bound creator.
    #[error("this admin token is bound to account `{0}`: it may create admin tokens bound to `{0}` only")]
    Account(String),
    /// Another or no restriction from a restricted creator.
    #[error("this admin token is limited by a restriction: it may create admin tokens with that same restriction only")]
    Restriction,
    /// A later (or no) expiry than the creator's.
    #[error("this admin token expires at unix time {0}: it cannot create one that expires later")]
    Expiry(u64),
    /// Source networks outside the creator's.
    #[error("this admin token may be used from {0} only: every allowed CIDR of the new token must lie within those")]
    Cidrs(String),
}

/// The power of a new admin token that `creator` asks for with `requested`. Whatever
/// `requested` leaves unset (`None`, or no CIDRs) is inherited from the creator, so the default
/// is never more than the creator's own power. The rules:
/// - every scope must be held by the creator (`admin` implies all);
/// - a bound creator may bind only to its own account;
/// - a restricted creator may give only its own restriction (an unrestricted one any, or none);
/// - the expiry may be no later than the creator's;
/// - every allowed CIDR must lie within one of the creator's (when it has any).
pub fn grant(creator: &Power, requested: Power) -> Result<Power, Escalation> {
    if let Some(s) = requested.scopes.iter().find(|s| !creator.holds(s)) {
        return Err(Escalation::Scope(s.clone()));
    }
    let account = match (&creator.account, requested.account) {
        (None, wanted) => wanted,
        (Some(own), None) => Some(own.clone()),
        (Some(own), Some(wanted)) if *own == wanted => Some(wanted),
        (Some(own), Some(_)) => return Err(Escalation::Account(own.clone())),
    };
    let restriction = match (creator.restriction, requested.restriction) {
        (None, wanted) => wanted,
        (Some(own), None) => Some(own),
        (Some(own), Some(wanted)) if own == wanted => Some(own),
        (Some(_), Some(_)) => return Err(Escalation::Restriction),
    };
    let expires_at = match (creator.expires_at, requested.expires_at) {
        (None, wanted) => wanted,
        (Some(own), None) => Some(own),
        (Some(own), Some(wanted)) if wanted <= own => Some(wanted),
        (Some(own), Some(_)) => return Err(Escalation::Expiry(own)),
    };
    let allowed_cidrs = if creator.allowed_cidrs.is_empty() {
        requested.allowed_cidrs
    } else if requested.allowed_cidrs.is_empty() {
        creator.allowed_cidrs.clone()
    } else if requested.allowed_cidrs.iter().all(|n| creator.allowed_cidrs.iter().any(|c| c.contains(n))) {
        requested.allowed_cidrs
    } else {
        let own: Vec<String> = creator.allowed_cidrs.iter().map(ToString::to_string).collect();
        return Err(Escalation::Cidrs(own.join(", ")));
    };
    Ok(Power { scopes: requested.scopes, account, restriction, expires_at, allowed_cidrs })
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn rule(s: &str) -> Rule {
        Rule::parse(s, 1).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(rule("GET /api/v1/accounts/{id}/tokens").canonical(), "GET /api/v1/accounts/*/tokens");
        assert_eq!(rule("  DELETE   /api/v1/delegates/*  ").canonical(), "DELETE /api/v1/delegates/*");
        assert_eq!(
            rule("* /api/v1/accounts/acme/tokens/*/rotate").canonical(),
            "* /api/v1/accounts/acme/tokens/*/rotate"
        );
        for bad in [
            "",
            "GET",
            "GET /api/v1/accounts extra",
            "get /api/v1/accounts",
            "TRACE /api/v1/accounts",
            "CONNECT /api/v1/accounts",
            "GET api/v1/accounts",
            "GET /api/v2/accounts",
            "GET /healthz",
            "GET /api/v1/",
            "GET /api/v1//accounts",
            "GET /api/v1/accounts/",
            "GET /api/v1/accounts/../admin-tokens",
            "GET /api/v1/accounts/./x",
            "GET /api/v1/accounts?x=1",
            "GET /api/v1/accounts/%41",
            "GET /api/v1/accounts/a\u{1b}b",
            "GET\t/api/v1/accounts",
            "GET /api/v1/accounts/é",
            "GET /api/v1/accounts/{}",
            "GET /api/v1/accounts/{a-b}",
            "GET /api/v1/nothing-here",
            "POST /api/v1/accounts/*/tokens/*/nope",
            "DELETE /api/v1/accounts",
            "PUT /api/v1/accounts",
        ] {
            assert!(Rule::parse(bad, 1).is_err(), "accepted {bad:?}");
        }
        let long = format!("GET /api/v1/accounts/{}", "a".repeat(MAX_RULE_LEN));
        assert!(Rule::parse(&long, 1).is_err());
        let err = Rule::parse("GET /api/v1/nothing", 3).unwrap_err().to_string();
        assert!(err.contains("`allow`") && err.contains("entry 3"), "{err}");
    }

    #[test]
    fn rule_lists_are_bounded_and_deduplicated() {
        assert!(parse_rules(&[]).is_err());
        let many = vec!["GET /api/v1/accounts".to_string(); MAX_RULES + 1];
        assert!(parse_rules(&many).is_err());
        let rules =
            parse_rules(&["GET /api/v1/accounts/*".into(), "GET /api/v1/accounts/{a}".into()]).unwrap();
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn rules_match_method_and_every_segment() {
        let r = rule("GET /api/v1/accounts/*/tokens");
        assert!(r.allows(&Method::GET, "/api/v1/accounts/acme/tokens"));
        assert!(r.allows(&Method::HEAD, "/api/v1/accounts/acme/tokens"));
        assert!(!r.allows(&Method::POST, "/api/v1/accounts/acme/tokens"));
        assert!(!r.allows(&Method::GET, "/api/v1/accounts/acme/tokens/x"));
        assert!(!r.allows(&Method::GET, "/api/v1/accounts/acme"));
        assert!(!r.allows(&Method::GET, "/api/v1/accounts//tokens"));
        assert!(!r.allows(&Method::GET, "/api/v1/accounts/acme/tokens/"));
        assert!(!r.allows(&Method::GET, "api/v1/accounts/acme/tokens"));
        assert!(!r.allows(&Method::GET, "/api/v1/ACCOUNTS/acme/tokens"));
        let lit = rule("POST /api/v1/accounts/acme/tokens/default/revoke");
        assert!(lit.allows(&Method::POST, "/api/v1/accounts/acme/tokens/default/revoke"));
        assert!(lit.allows(&Method::POST, "/api/v1/accounts/%61cme/tokens/default/revoke"), "decoded first");
        assert!(!lit.allows(&Method::POST, "/api/v1/accounts/acme2/tokens/default/revoke"));
        assert!(!lit.allows(&Method::POST, "/api/v1/accounts/%zz/tokens/default/revoke"));
        assert!(!lit.allows(&Method::POST, "/api/v1/accounts/%ff/tokens/default/revoke"));
        assert!(!lit.allows(&Method::POST, "/api/v1/accounts/ac%2Fme/tokens/default/revoke"));
        let any = rule("* /api/v1/delegates/*");
        assert!(any.allows(&Method::DELETE, "/api/v1/delegates/x"));
        assert!(any.allows(&Method::GET, "/api/v1/delegates/x"));
    }

    fn power(scopes: &[&str]) -> Power {
        Power { scopes: scopes.iter().map(|s| s.to_string()).collect(), ..Power::default() }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn scopes_must_be_held_and_admin_implies_all() {
        let reader = power(&["tokens:read", "delegates:read"]);
        assert!(grant(&reader, power(&["tokens:read"])).is_ok());
        assert_eq!(grant(&reader, power(&["tokens:write"])), Err(Escalation::Scope("tokens:write".into())));
        assert_eq!(grant(&reader, power(&["admin"])), Err(Escalation::Scope("admin".into())));
        let admin = power(&["admin"]);
        assert!(grant(&admin, power(&["admin", "tokens:write", "delegates:write"])).is_ok());
    }

    #[test]
    fn a_bound_creator_binds_to_its_own_account_only() {
        let bound = Power { account: Some("a".into()), ..power(&["admin"]) };
        assert_eq!(grant(&bound, power(&["admin"])).unwrap().account.as_deref(), Some("a"), "inherited");
        let same = Power { account: Some("a".into()), ..power(&["admin"]) };
        assert_eq!(grant(&bound, same).unwrap().account.as_deref(), Some("a"));
        let other = Power { account: Some("b".into()), ..power(&["admin"]) };
        assert_eq!(grant(&bound, other.clone()), Err(Escalation::Account("a".into())));
        assert_eq!(grant(&power(&["admin"]), other).unwrap().account.as_deref(), Some("b"));
        assert_eq!(grant(&power(&["admin"]), power(&["admin"])).unwrap().account, None);
    }

    #[test]
    fn a_restricted_creator_gives_its_own_restriction_only() {
        let (r, q) = (Uuid::new_v4(), Uuid::new_v4());
        let restricted = Power { restriction: Some(r), ..power(&["admin"]) };
        assert_eq!(grant(&restricted, power(&["admin"])).unwrap().restriction, Some(r), "inherited");
        let same = Power { restriction: Some(r), ..power(&["admin"]) };
        assert_eq!(grant(&restricted, same).unwrap().restriction, Some(r));
        let other = Power { restriction: Some(q), ..power(&["admin"]) };
        assert_eq!(grant(&restricted, other.clone()), Err(Escalation::Restriction));
        assert_eq!(
            grant(&power(&["admin"]), other).unwrap().restriction,
            Some(q),
            "any, from an unrestricted one"
        );
    }

    #[test]
    fn the_expiry_is_no_later_than_the_creators() {
        let brief = Power { expires_at: Some(1_000), ..power(&["admin"]) };
        assert_eq!(grant(&brief, power(&["admin"])).unwrap().expires_at, Some(1_000), "inherited");
        let sooner = Power { expires_at: Some(999), ..power(&["admin"]) };
        assert_eq!(grant(&brief, sooner).unwrap().expires_at, Some(999));
        let equal = Power { expires_at: Some(1_000), ..power(&["admin"]) };
        assert!(grant(&brief, equal).is_ok());
        let later = Power { expires_at: Some(1_001), ..power(&["admin"]) };
        assert_eq!(grant(&brief, later.clone()), Err(Escalation::Expiry(1_000)));
        assert_eq!(grant(&power(&["admin"]), later).unwrap().expires_at, Some(1_001));
    }

    #[test]
    fn allowed_cidrs_lie_within_the_creators() {
        let pinned = Power { allowed_cidrs: nets(&["10.0.0.0/8", "2001:db8::/32"]), ..power(&["admin"]) };
        assert_eq!(
            grant(&pinned, power(&["admin"])).unwrap().allowed_cidrs,
            pinned.allowed_cidrs,
            "inherited"
        );
        let inside = Power { allowed_cidrs: nets(&["10.1.0.0/16", "2001:db8:1::/48"]), ..power(&["admin"]) };
        assert!(grant(&pinned, inside).is_ok());
        for outside in [&["11.0.0.0/8"][..], &["10.0.0.0/7"], &["10.1.0.0/16", "192.168.0.0/16"], &["::/0"]] {
            let wider = Power { allowed_cidrs: nets(outside), ..power(&["admin"]) };
            assert!(matches!(grant(&pinned, wider), Err(Escalation::Cidrs(_))), "{outside:?}");
        }
        let anywhere = Power { allowed_cidrs: nets(&["0.0.0.0/0"]), ..power(&["admin"]) };
        assert!(grant(&power(&["admin"]), anywhere).is_ok());
    }
}
