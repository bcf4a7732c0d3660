//! The `--database` / `TETHER_DATABASE_URL` setting of a PostgreSQL store: a
//! `postgres://user:password@host:port/dbname?options` URL parsed into a tokio-postgres
//! configuration plus the TLS settings Tether handles itself. The URL is never echoed: it may
//! hold the password, and every error message here is built from fixed text (and scrubbed of
//! the password, should a library ever quote it).
//!
//! TLS (`sslmode`), as supported:
//! - `disable`: plain TCP;
//! - `prefer` (the default, as in libpq): TLS when the server offers it, plain TCP otherwise;
//! - `require` and `verify-full`: TLS or no connection.
//!
//! Whenever TLS is used the server certificate is verified, chain and host name, against the
//! CA certificates of `sslrootcert=<PEM file>` or else the Mozilla roots (webpki-roots): this is
//! `verify-full` in every TLS mode, stricter than libpq's `prefer`/`require`, which encrypt
//! without verifying. `verify-ca` and `allow` are refused, as are client certificates
//! (`sslcert`, `sslkey`) and Unix-domain sockets (a host must be named).
//!
//! Every session sets `synchronous_commit=on` (after any `options` of the URL), so that an
//! operation that returned has committed durably whatever the server's default.
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::{Host, SslMode};

use super::super::StoreError;

/// How long connecting to one host may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed store URL.
pub(crate) struct PgUrl {
    /// The tokio-postgres configuration (TLS mode included).
    pub(crate) config: tokio_postgres::Config,
    /// The PEM file of CA certificates to verify the server with (`sslrootcert`).
    pub(crate) root_cert: Option<PathBuf>,
    /// The password in its spellings (as written, percent-decoded), to scrub from messages.
    secrets: Vec<String>,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres's Config prints the password redacted; the secrets are left out.
        f.debug_struct("PgUrl").field("config", &self.config).field("root_cert", &self.root_cert).finish()
    }
}

/// A configuration error naming the setting, never quoting the URL.
fn invalid(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(format!(
        "invalid --database / TETHER_DATABASE_URL (the URL is not shown: it may hold a password): {reason}"
    ))
}

impl PgUrl {
    /// Parses `url`.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let secrets = password_spellings(url);
        let scrub = |e: StoreError| redact_error(e, &secrets);
        Self::parse_inner(url, &secrets).map_err(scrub).map(|(config, root_cert)| Self {
            config,
            root_cert,
            secrets: secrets.clone(),
        })
    }

    fn parse_inner(
        url: &str,
        secrets: &[String],
    ) -> Result<(tokio_postgres::Config, Option<PathBuf>), StoreError> {
        let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) else {
            return Err(invalid("a PostgreSQL URL starts with postgres:// or postgresql://"));
        };
        let scheme = if url.starts_with("postgres://") { "postgres://" } else { "postgresql://" };
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (format!("{scheme}{b}"), Some(q)),
            None => (url.to_owned(), None),
        };
        // Tether's own options come out of the query; the rest goes to tokio-postgres. TLS is
        // required unless the URL says otherwise: libpq's default, `prefer`, lets anyone on
        // the path answer "no TLS" and take the session (and with it, the power to write an
        // admin token row).
        let mut ssl_mode = SslMode::Require;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| invalid(format!("option `{}` is not UTF-8", bounded_key(key))))?;
            match key {
                "sslmode" => {
                    ssl_mode = match &*value {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" | "verify-full" => SslMode::Require,
                        "verify-ca" | "allow" => {
                            return Err(invalid(format!(
                                "sslmode={value} is not supported (disable, prefer, require, verify-full; \
                                 every TLS connection verifies the certificate and the host name)"
                            )))
                        }
                        _ => return Err(invalid("sslmode is one of disable, prefer, require, verify-full")),
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                    return Err(invalid(format!("option `{key}` is not supported (no client certificates)")))
                }
                _ => kept.push(param),
            }
        }
        let rebuilt = match kept.is_empty() {
            true => before_query,
            false => format!("{before_query}?{}", kept.join("&")),
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            // tokio-postgres's parse errors name an option or a position, never a value; the
            // text is scrubbed of the password all the same.
            invalid(redact(&super::error::describe(&e), secrets))
        })?;
        if config.get_hosts().is_empty() {
            return Err(invalid("the URL names no host"));
        }
        if config.get_hosts().iter().any(|h| !matches!(h, Host::Tcp(_))) {
            return Err(invalid("Unix-domain sockets are not supported; name a host"));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(invalid("the URL names no user"));
        }
        config.ssl_mode(ssl_mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tether-manager");
        }
        // A store operation that returns Ok has committed durably: every session of the
        // manager waits for the WAL flush, whatever the server's default (`off` there would
        // lose the last commits in a crash). An `options` in the URL is kept and comes first.
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
            _ => "-c synchronous_commit=on".to_owned(),
        };
        config.options(&options);
        Ok((config, root_cert))
    }

    /// `text` with the password replaced, in every spelling of it the URL had.
    #[cfg(test)]
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// `e` with the password replaced in its message.
    pub(crate) fn redact_error(&self, e: StoreError) -> StoreError {
        redact_error(e, &self.secrets)
    }
}

/// An option name as quoted in an error: at most 32 bytes.
fn bounded_key(key: &str) -> &str {
    tether_protocol::text::bounded(key, 32)
}

/// The password of `url` as written and percent-decoded, from the user info and from a
/// `password=` option, found without parsing the rest (so a URL that fails to parse is still
/// scrubbed).
fn password_spellings(url: &str) -> Vec<String> {
    let mut raw = Vec::new();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split_once('/').map_or(before_query, |(a, _)| a);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            raw.push(password.to_owned());
        }
    }
    for param in query.split('&') {
        if let Some(("password", value)) = param.split_once('=') {
            raw.push(value.to_owned());
        }
    }
    let mut out = Vec::new();
    for r in raw {
        let decoded = percent_decode_str(&r).decode_utf8_lossy().into_owned();
        for s in [r, decoded] {
            if !s.is_empty() && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    // Longest first, so a password that contains another spelling is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

fn redact_error(e: StoreError, secrets: &[String]) -> StoreError {
    match e {
        StoreError::Postgres(m) => StoreError::Postgres(redact(&m, secrets)),
        StoreError::Conflict(m) => StoreError::Conflict(redact(&m, secrets)),
        StoreError::NotFound(m) => StoreError::NotFound(redact(&m, secrets)),
        StoreError::Io(m) => StoreError::Io(redact(&m, secrets)),
        StoreError::Corrupt(m) => StoreError::Corrupt(redact(&m, secrets)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "Zebra-Quokka-7731";

    fn err(url: &str) -> String {
        let e = PgUrl::parse(url).unwrap_err();
        let text = format!("{e} / {e:?}");
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        assert!(!text.contains("Zebra"), "part of the password leaked: {text}");
        text
    }

    #[test]
    fn a_plain_url_parses_with_defaults() {
        let u = PgUrl::parse(&format!("postgres://tether:{PASSWORD}@127.0.0.1:5433/tether")).unwrap();
        assert_eq!(u.config.get_user(), Some("tether"));
        assert_eq!(u.config.get_password(), Some(PASSWORD.as_bytes()));
        assert_eq!(u.config.get_dbname(), Some("tether"));
        assert_eq!(u.config.get_ports(), &[5433]);
        assert_eq!(
            u.config.get_ssl_mode(),
            SslMode::Require,
            "TLS is required unless the URL says otherwise"
        );
        assert_eq!(u.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(u.config.get_options(), Some("-c synchronous_commit=on"));
        assert!(u.root_cert.is_none());
        assert!(!format!("{u:?}").contains(PASSWORD), "Debug shows no password");
    }

    #[test]
    fn tls_options_are_taken_out_and_the_rest_kept() {
        let u = PgUrl::parse(&format!(
            "postgresql://u:{PASSWORD}@db.example:5432/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3"
        ))
        .unwrap();
        assert_eq!(u.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(u.root_cert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(u.config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        let u = PgUrl::parse(&format!("postgres://u:{PASSWORD}@h/d?sslmode=disable")).unwrap();
        assert_eq!(u.config.get_ssl_mode(), SslMode::Disable);
        let u = PgUrl::parse(&format!("postgres://u:{PASSWORD}@h/d?sslmode=require")).unwrap();
        assert_eq!(u.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_percent_encoded_password_is_decoded_and_scrubbed_in_both_spellings() {
        let u = PgUrl::parse("postgres://u:Zebra%40Quokka-7731@h/d").unwrap();
        assert_eq!(u.config.get_password(), Some("Zebra@Quokka-7731".as_bytes()));
        assert_eq!(u.redact("x Zebra@Quokka-7731 y Zebra%40Quokka-7731"), "x <redacted> y <redacted>");
    }

    #[test]
    fn bad_urls_name_the_setting_and_never_the_password() {
        for url in [
            format!("mysql://u:{PASSWORD}@h/d"),
            format!("postgres://u:{PASSWORD}@h/d?sslmode=verify-ca"),
            format!("postgres://u:{PASSWORD}@h/d?sslmode=bogus"),
            format!("postgres://u:{PASSWORD}@h/d?sslcert=/x"),
            format!("postgres://u:{PASSWORD}@h/d?nonsense={PASSWORD}"),
            format!("postgres://u:{PASSWORD}@h:notaport/d"),
            format!("postgres://u:{PASSWORD}@/d"),
            format!("postgres://:{PASSWORD}@h/d"),
            format!("postgres://u@h/d?password={PASSWORD}&bogus=1"),
            format!("postgres://u:{PASSWORD}@h/d?sslmode=%FF"),
            format!("postgres://u:{PASSWORD}@h/d?host=/var/run/postgresql"),
        ] {
            let text = err(&url);
            assert!(text.contains("--database / TETHER_DATABASE_URL"), "{text}");
        }
    }
}
