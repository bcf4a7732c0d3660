//! The admin CLI's `--json` output as the Compose tests and the load generator read it: exactly
//! the field names the manager emits (`delegate list --json` is the REST list of `DelegateDto`, `token show
//! --json` one `TokenDto`, `token create --json` carries the value in `value`, `token rotate
//! --json` the successor in `token`). No alternate names are accepted: a renamed field fails
//! here, in `tests/tests/cli_contract.rs`, against the real binary.
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// A delegate session as the manager lists it (`delegate list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LiveDelegate {
    /// `DELEGATE_NAME`.
    pub name: String,
    /// Id of the token the session authenticated with.
    pub token_id: String,
    /// The session id from the welcome: a new one after every reconnect.
    pub session_id: String,
}

/// The sessions in `delegate list --json`.
pub fn delegate_list(listed: &Value) -> Result<Vec<LiveDelegate>> {
    Vec::deserialize(listed).context("`delegate list --json` is not a list of {name, token_id, session_id}")
}

/// The state in `token show --json` (active, rotating, revoked, expired).
pub fn token_state(shown: &Value) -> Result<String> {
    shown["state"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("`token show --json` has no `state`"))
}

fn token_value(printed: &Value, field: &str, what: &str) -> Result<String> {
    match printed[field].as_str() {
        Some(value) if value.starts_with("tdt_") => Ok(value.to_owned()),
        Some(_) => bail!("`{what}`'s `{field}` is not a delegate token"),
        None => bail!("`{what}` has no `{field}`"),
    }
}

/// The token value `token create --json` shows once.
pub fn created_token_value(created: &Value) -> Result<String> {
    token_value(created, "value", "token create --json")
}

/// The successor token `token rotate --json` shows once.
pub fn rotated_token_value(rotated: &Value) -> Result<String> {
    token_value(rotated, "token", "token rotate --json")
}

/// The public id of a token string (`tdt_…`).
pub fn token_id(token: &str) -> Result<String> {
    Ok(tether_protocol::Token::parse(token).map_err(|e| anyhow!("not a token: {e}"))?.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alternate_field_names_are_refused() {
        let listed = json!([{ "delegate_name": "d", "token_id": "t", "session": "s" }]);
        assert!(delegate_list(&listed).is_err());
        assert!(delegate_list(&json!({ "delegates": [] })).is_err(), "the list is the value itself");
        assert!(token_state(&json!({ "status": "active" })).is_err());
        assert!(token_state(&json!({ "token": { "state": "active" } })).is_err());
        assert!(created_token_value(&json!({ "token": { "value": "tdt_x" } })).is_err());
    }
}
