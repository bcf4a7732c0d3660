//! A small HTTPS client of the manager's API (reqwest, rustls with ring, the CA as the only
//! root). Errors carry the API's message, never the admin token, which is held as a
//! [`SecretString`] (redacted in `Debug`). [`ClientError::exit_code`] maps each error to the
//! documented exit code.
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tether_protocol::SecretString;

use crate::api::error::ErrorBody;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Missing or bad client settings (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The manager cannot be reached.
    #[error("cannot reach the manager at {url}: {reason}")]
    Connect {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The manager answered TLS with a certificate the CA in use does not vouch for.
    #[error(
        "the manager at {url} is not trusted: its TLS certificate is not signed by the CA in {ca} ({reason}). \
         Pass --ca-cert (or set TETHER_CA_CERT) with the manager's CA certificate: it is `ca.pem` in the \
         manager's data dir (`tether-manager init` prints its path as ca_cert; by default the CLI reads \
         <--data-dir>/ca.pem)"
    )]
    Untrusted {
        /// URL.
        url: String,
        /// The CA file that was used.
        ca: String,
        /// Why, as the TLS stack said it.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer from the manager: {0}")]
    Decode(String),
}

impl ClientError {
    /// The process exit code for this error (OPERATIONS.md, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        use super::{EXIT_NOT_AUTHORISED, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Connect { .. } | Self::Untrusted { .. } => EXIT_UNAVAILABLE,
            Self::Api { status: 401 | 403, .. } => EXIT_NOT_AUTHORISED,
            Self::Api { status: 429, code, .. } if code == "locked_out" => EXIT_NOT_AUTHORISED,
            Self::Api { status: 429, .. } => 1,
            Self::Api { status: 400..=499, .. } => EXIT_REFUSED,
            Self::Api { .. } | Self::Decode(_) => 1,
        }
    }

    /// A short machine-readable name: the API's error code for an API error.
    pub fn code(&self) -> &str {
        match self {
            Self::Usage(_) => "usage",
            Self::Connect { .. } => "unreachable",
            Self::Untrusted { .. } => "tls_untrusted",
            Self::Api { code, .. } => code,
            Self::Decode(_) => "unexpected_answer",
        }
    }

    /// The HTTP status, for an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    /// The CA file trusted, named when the manager's certificate is not trusted.
    ca: PathBuf,
}

impl ApiClient {
    /// A client of `manager_url` trusting `ca_pem`, authenticating with `admin_token`.
    /// An admin token with characters other than visible ASCII is refused here (a usage
    /// error, before any call), as it could not be sent as a header and could inject one.
    pub fn new(manager_url: &str, ca_pem: &Path, admin_token: &str) -> Result<Self, ClientError> {
        check_admin_token(admin_token)?;
        let tls = crate::tls::client_config(ca_pem)
            .map_err(|e| ClientError::Usage(format!("CA certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Usage(format!("HTTP client: {e}")))?;
        let base = manager_url.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(ClientError::Usage("--manager must be an https:// URL".into()));
        }
        Ok(Self { http, base, token: SecretString::from(admin_token), ca: ca_pem.to_owned() })
    }

    /// Sends a request and decodes the JSON answer as `T` (raw JSON value on `T = Value`).
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(self.token.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            let reason = error_chain(&e);
            match is_untrusted(&reason) {
                true => ClientError::Untrusted {
                    url: self.base.clone(),
                    ca: self.ca.display().to_string(),
                    reason,
                },
                false => ClientError::Connect { url: self.base.clone(), reason },
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => {
                    ClientError::Api { status: status.as_u16(), code: b.error.code, message: b.error.message }
                }
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Whether a connection failed because the peer's certificate was not trusted (rustls says
/// `invalid peer certificate: UnknownIssuer`, `BadSignature`, …).
fn is_untrusted(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    let mut depth = 0;
    while let (Some(s), true) = (src, depth < 8) {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
        depth += 1;
    }
    out
}

/// Refuses an admin token that is empty or has any character other than visible ASCII
/// (`!`..=`~`): a line break would end the header it is sent in. The message names the
/// setting, never the value.
pub fn check_admin_token(admin_token: &str) -> Result<(), ClientError> {
    if admin_token.is_empty() || !admin_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Usage(
            "the admin token (--admin-token or TETHER_ADMIN_TOKEN) must be visible ASCII characters \
             only (no spaces, line breaks or control characters)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn api(status: u16, code: &str) -> ClientError {
        ClientError::Api { status, code: code.into(), message: "m".into() }
    }

    #[test]
    fn every_error_has_its_documented_exit_code() {
        assert_eq!(ClientError::Usage("x".into()).exit_code(), 64);
        for status in [400, 404, 409, 413, 422] {
            assert_eq!(api(status, "bad_request").exit_code(), 65, "{status}");
        }
        assert_eq!(ClientError::Connect { url: "u".into(), reason: "r".into() }.exit_code(), 69);
        let untrusted =
            ClientError::Untrusted { url: "u".into(), ca: "/d/ca.pem".into(), reason: "r".into() };
        assert_eq!(untrusted.exit_code(), 69);
        assert!(untrusted.to_string().contains("--ca-cert") && untrusted.to_string().contains("ca.pem"));
        assert_eq!(api(401, "unauthorized").exit_code(), 77);
        assert_eq!(api(403, "forbidden").exit_code(), 77);
        assert_eq!(api(429, "locked_out").exit_code(), 77);
        assert_eq!(api(429, "busy").exit_code(), 1);
        assert_eq!(api(500, "internal").exit_code(), 1);
        assert_eq!(api(504, "timeout").exit_code(), 1);
        assert_eq!(ClientError::Decode("d".into()).exit_code(), 1);
        assert!(is_untrusted(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_untrusted("error sending request: tcp connect error: Connection refused"));
    }

    #[test]
    fn an_admin_token_with_a_line_break_is_a_usage_error_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::ensure_generated(dir.path(), &[]).unwrap().ca.unwrap();
        for bad in ["tat_x\nInjected: 1", "tat_x\r\nX: 1", "tat x", "tat_\u{7f}", "tat_é", "tat_\0", ""] {
            let err = ApiClient::new("https://127.0.0.1:1", &ca, bad).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{bad:?}");
            let shown = err.to_string();
            assert!(shown.contains("TETHER_ADMIN_TOKEN"), "names the setting: {shown}");
            assert!(!shown.contains("Injected") && !shown.contains("tat_"), "never the value: {shown}");
        }
        assert!(ApiClient::new("https://127.0.0.1:1", &ca, "tat_ok-~!").is_ok());
    }

    const VALUE: &str = "tat_THIS-IS-THE-ADMIN-SECRET-0123456789abcdef";

    #[test]
    fn the_admin_token_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::tls::ensure_generated(dir.path(), &[]).unwrap();
        let ca = files.ca.unwrap();
        let client = ApiClient::new("https://127.0.0.1:1", &ca, VALUE).unwrap();
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains("ADMIN-SECRET"), "{shown}");
        assert_eq!(client.token.expose(), VALUE, "still sent as the bearer");

        let cli =
            crate::cli::Cli::try_parse_from(["tether-manager", "token", "list", "--admin-token", VALUE])
                .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("ADMIN-SECRET"), "{shown}");
        let crate::cli::Command::Token { client, .. } = cli.command else {
            panic!("parsed as a token command")
        };
        assert_eq!(client.admin_token.as_ref().map(SecretString::expose), Some(VALUE));
        let shown = format!("{client:?}");
        assert!(!shown.contains("ADMIN-SECRET"), "ClientArgs: {shown}");
    }
}
