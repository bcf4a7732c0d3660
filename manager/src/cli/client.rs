//! A small HTTPS client of the manager's API (reqwest, rustls with ring, the CA as the only
//! root). Errors carry the API's message, never the admin token, which is held as a
//! [`SecretString`] (redacted in `Debug`).
use std::path::Path;

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

/// The API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl ApiClient {
    /// A client of `manager_url` trusting `ca_pem`, authenticating with `admin_token`.
    pub fn new(manager_url: &str, ca_pem: &Path, admin_token: &str) -> Result<Self, ClientError> {
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
        Ok(Self { http, base, token: SecretString::from(admin_token) })
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
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Connect { url: self.base.clone(), reason: error_chain(&e) })?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
