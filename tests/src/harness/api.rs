//! The manager's admin REST API as the tests call it: [`api_call`] (any client, any bearer,
//! the status and the JSON body) and, on [`Manager`], calls with the first admin token and a
//! few typed ones (tokens, delegate sessions, ping, revoke, rotate, rotation status).
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tether_protocol::Token;
use uuid::Uuid;

use super::manager::Manager;
use super::poll;

/// A live delegate session as the manager lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DelegateRow {
    /// Session id.
    pub session_id: Uuid,
    /// Token in use.
    pub token_id: Uuid,
    /// Delegate name.
    pub name: String,
    /// Delegate instance.
    pub instance: Uuid,
    /// When the session was authenticated, unix seconds.
    pub connected_at: u64,
    /// The last heartbeat the manager received, unix seconds.
    pub last_heartbeat: u64,
}

/// A started rotation.
#[derive(Debug, Clone, Deserialize)]
pub struct Rotation {
    /// Rotation id.
    pub rotation_id: Uuid,
    /// The successor token's id.
    pub token_id: Uuid,
    /// The successor's value.
    pub token: String,
}

impl Manager {
    /// One API call with the first admin token; the status and the JSON body (`Null` when
    /// empty or not JSON).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        api_call(&self.http(), &self.url(), method, path, Some(&self.init.admin_token), body).await
    }

    /// [`Manager::api`] that must succeed; the body.
    async fn api_ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, v) = self.api(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// Creates a token in `account` with extra fields (`expires_in_secs`, `allowed_cidrs`).
    pub async fn create_token(&self, account: &str, name: &str, extra: Value) -> Result<Token> {
        let mut body = json!({ "name": name });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let v = self.api_ok(Method::POST, &format!("/api/v1/accounts/{account}/tokens"), Some(body)).await?;
        let value = v["value"].as_str().context("created token has no `value`")?;
        Token::parse(value).map_err(|e| anyhow!("created token does not parse: {e}"))
    }

    /// The default token of the first account.
    pub fn default_token(&self) -> Result<Token> {
        Token::parse(&self.init.default_token).map_err(|e| anyhow!("default token: {e}"))
    }

    /// Live delegate sessions.
    pub async fn delegates(&self) -> Result<Vec<DelegateRow>> {
        Ok(serde_json::from_value(self.api_ok(Method::GET, "/api/v1/delegates", None).await?)?)
    }

    /// Waits until a session of `name` on `token_id` is live; returns it.
    pub async fn wait_for_session(&self, name: &str, token_id: Uuid, limit: Duration) -> Result<DelegateRow> {
        poll::until(format!("a session of `{name}` on token {token_id}"), limit, || async {
            Ok(self.delegates().await?.into_iter().find(|d| d.name == name && d.token_id == token_id))
        })
        .await
    }

    /// Pings a session through the REST API; returns the echoed payload.
    pub async fn ping(&self, session_id: Uuid, payload: &str) -> Result<String> {
        let path = format!("/api/v1/delegates/{session_id}/ping");
        let reply = self.api_ok(Method::POST, &path, Some(json!({ "payload": payload }))).await?;
        reply["payload"].as_str().map(str::to_owned).context("ping reply without payload")
    }

    /// Revokes a token of the init account.
    pub async fn revoke(&self, token_id: Uuid) -> Result<()> {
        let path = format!("/api/v1/accounts/{}/tokens/{token_id}/revoke", self.init.account_id);
        self.api_ok(Method::POST, &path, Some(json!({}))).await.map(drop)
    }

    /// Rotates a token of the init account with a grace window.
    pub async fn rotate(&self, token_id: Uuid, grace_secs: u64) -> Result<Rotation> {
        let path = format!("/api/v1/accounts/{}/tokens/{token_id}/rotate", self.init.account_id);
        let body = self.api_ok(Method::POST, &path, Some(json!({ "grace_secs": grace_secs }))).await?;
        Ok(serde_json::from_value(body)?)
    }

    /// A rotation's status document.
    pub async fn rotation(&self, rotation_id: Uuid) -> Result<Value> {
        self.api_ok(Method::GET, &format!("/api/v1/rotations/{rotation_id}"), None).await
    }

    /// Waits until a delegate of the rotation has reported `outcome` (`applied`, `failed`,
    /// `manual`) in its ack; returns the rotation's status document.
    pub async fn wait_for_outcome(&self, rotation_id: Uuid, outcome: &str, limit: Duration) -> Result<Value> {
        poll::until(format!("the rotation to record the {outcome} ack"), limit, || async {
            let doc = self.rotation(rotation_id).await?;
            let reported =
                doc["delegates"].as_array().is_some_and(|ds| ds.iter().any(|d| d["outcome"] == outcome));
            Ok(reported.then_some(doc))
        })
        .await
    }
}

/// One API call: `Authorization: Bearer <token>` when given; the status and the JSON body
/// (`Null` when empty or not JSON).
pub async fn api_call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}
