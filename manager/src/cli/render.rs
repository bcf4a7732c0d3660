//! Showing answers: the JSON as the API sent it with `--json`, otherwise a table or a few
//! sentences per kind of answer (values shown once are printed here and nowhere else).
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::ClientError;
use super::commands::{Kind, Reply};
use super::table::{opt_time, render as table, time};
use super::{InitFormat, OutputFormat};
use crate::api::dto::*;
use crate::init::InitOutput;
use crate::store::rotations::ShownDelegateState;

/// What `init` prints.
pub(super) fn init(out: &InitOutput, data_dir: &Path, format: InitFormat) -> String {
    match format {
        InitFormat::Json => format!("{}\n", out.to_json()),
        InitFormat::Env => format!(
            "ACCOUNT_ID={}\nACCOUNT_SECRET={}\nTETHER_ADMIN_TOKEN={}\n",
            out.account_id,
            out.default_token.as_str(),
            out.admin_token.as_str()
        ),
        InitFormat::Text => format!(
            "Tether manager initialised in {}.\n\
             These values are shown ONCE. Store them in a secret manager now.\n\n\
             \x20 account id:          {}\n\
             \x20 default token id:    {}\n\
             \x20 default token:       {}\n\
             \x20 admin token:         {}\n\
             \x20 CA certificate:      {}\n\
             \x20 CA SHA-256:          {}\n\
             \x20 manager URL:         {}\n\
             \nBack up {} (database) and master.key together; one without the other is useless.\n",
            data_dir.display(),
            out.account_id,
            out.default_token_id,
            out.default_token.as_str(),
            out.admin_token.as_str(),
            out.ca_cert.display(),
            out.ca_fingerprint_sha256,
            out.manager_url,
            crate::store::DB_FILE
        ),
    }
}

/// What a client command prints.
pub(super) fn reply(reply: &Reply, format: OutputFormat) -> Result<String, ClientError> {
    let v = &reply.json;
    if format == OutputFormat::Json {
        return Ok(pretty(v));
    }
    Ok(match &reply.kind {
        Kind::Tokens => tokens(decode(v)?),
        Kind::Token => token(decode(v)?),
        Kind::TokenCreated => token_created(decode(v)?),
        Kind::TokenRevoked => token_revoked(decode(v)?),
        Kind::RotationStarted => rotation_started(decode(v)?),
        Kind::Rotations => rotations(&decode::<Vec<RotationDto>>(v)?),
        Kind::Rotation => rotation(&decode(v)?),
        Kind::Delegates => delegates(decode(v)?),
        Kind::Pong => pong(decode(v)?),
        Kind::Replicas => replicas(decode(v)?),
        Kind::Accounts => accounts(decode(v)?),
        Kind::Account => accounts(vec![decode(v)?]),
        Kind::AccountCreated => account_created(decode(v)?),
        Kind::AdminTokens => admin_tokens(decode(v)?),
        Kind::AdminToken => admin_tokens(vec![decode(v)?]),
        Kind::AdminTokenCreated => admin_token_created(decode(v)?),
        Kind::Restrictions => restrictions(decode(v)?),
        Kind::Restriction => restrictions(vec![decode(v)?]),
        Kind::Audit => audit(decode(v)?),
        Kind::Done(sentence) => sentence.clone(),
    })
}

fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(e.to_string()))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n"
}

fn tokens(tokens: Vec<TokenDto>) -> String {
    let rows: Vec<Vec<String>> = tokens
        .into_iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name,
                t.state,
                t.live_delegates.to_string(),
                opt_time(t.last_used_at),
                opt_time(t.expires_at),
                if t.allowed_cidrs.is_empty() { "any".into() } else { t.allowed_cidrs.join(",") },
                opt_time(t.next_rotation_at),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "LIVE", "LAST USED", "EXPIRES", "CIDRS", "NEXT ROTATION"], &rows)
}

fn token(t: TokenDto) -> String {
    let mut out = tokens(vec![t.clone()]);
    out.push_str(&format!("created {} by {}", time(t.created_at), t.created_by));
    if let Some(r) = t.rotation_id {
        out.push_str(&format!("; rotating (rotation {r})"));
    }
    if let Some(p) = t.rotation_policy {
        let grace = p.grace_secs.map_or_else(|| "default".to_owned(), |g| format!("{g}s"));
        out.push_str(&format!("; rotated every {}s with a {grace} grace window", p.every_secs));
    }
    out.push('\n');
    out
}

fn token_created(created: CreatedToken) -> String {
    format!(
        "Created token {} ({}) in account {}.\nValue (shown once; use it as ACCOUNT_SECRET):\n{}\n",
        created.token.name,
        created.token.id,
        created.token.account_id,
        created.value.expose()
    )
}

fn token_revoked(r: RevokeResponse) -> String {
    format!(
        "Revoked token {} ({}); {} live session(s) closed.\n",
        r.token.name, r.token.id, r.sessions_closed
    )
}

fn rotation_started(r: RotateResponse) -> String {
    format!(
        "Rotation {} started: {} live delegate(s) sent the successor.\nOld token {} stays valid until {} at the latest.\nSuccessor {} (shown once):\n{}\nWatch it: tether-manager rotation show {}\n",
        r.rotation_id,
        r.delegates_notified,
        r.old_token_id,
        time(r.old_token_valid_until),
        r.token_id,
        r.token.expose(),
        r.rotation_id
    )
}

fn rotations(list: &[RotationDto]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.account_id.clone(),
                r.old_token_id.to_string(),
                r.new_token_id.to_string(),
                r.state.to_string(),
                time(r.started_at),
                time(r.deadline),
                r.delegates.len().to_string(),
            ]
        })
        .collect();
    table(&["ID", "ACCOUNT", "OLD TOKEN", "NEW TOKEN", "STATE", "STARTED", "DEADLINE", "DELEGATES"], &rows)
}

fn rotation(r: &RotationDto) -> String {
    rotation_at(r, crate::clock::now_unix())
}

/// `rotation show` at `now` (unix seconds): the rotation, its delegates, and what an operator
/// must do for each delegate that acknowledged `manual`.
fn rotation_at(r: &RotationDto, now: u64) -> String {
    let mut out = rotations(std::slice::from_ref(r));
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .delegates
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.instance.to_string(),
                d.state.to_string(),
                d.outcome.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
                d.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&["DELEGATE", "INSTANCE", "STATE", "OUTCOME", "DETAIL"], &rows));
    out.push_str(&manual_action(r, now));
    out
}

/// The operator's task for delegates that acknowledged `manual` (they stay on the old token),
/// with the deadline and the time left; empty when there is none.
fn manual_action(r: &RotationDto, now: u64) -> String {
    let manual: Vec<&RotationDelegateDto> =
        r.delegates.iter().filter(|d| d.state == ShownDelegateState::Manual && !d.moved).collect();
    if manual.is_empty() {
        return String::new();
    }
    let names: Vec<String> = manual.iter().map(|d| format!("{} ({})", d.name, d.instance)).collect();
    let when = match r.finished_at {
        Some(_) => format!("The old token was cut at {}: they are disconnected.", time(r.deadline)),
        None if now >= r.deadline => {
            format!("The deadline {} has passed: the old token is being cut.", time(r.deadline))
        }
        None => format!("The old token is cut at {} (in {}).", time(r.deadline), time_left(r.deadline - now)),
    };
    format!(
        "\nOPERATOR ACTION REQUIRED: {} delegate(s) acknowledged `manual` and have NOT moved: {}.\n\
         Put the successor {} in ACCOUNT_SECRET (or the file named by ACCOUNT_SECRET_FILE) of each and restart it. {when}\n",
        manual.len(),
        names.join(", "),
        r.new_token_id,
    )
}

/// A duration as `1h 02m 03s` / `2m 05s` / `7s`.
fn time_left(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

fn delegates(list: Vec<DelegateDto>) -> String {
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|d| {
            vec![
                d.session_id.to_string(),
                d.account_id,
                d.name,
                d.token_id.to_string(),
                d.ip,
                d.version,
                time(d.connected_at),
                time(d.last_heartbeat),
            ]
        })
        .collect();
    table(&["SESSION", "ACCOUNT", "NAME", "TOKEN", "IP", "VERSION", "CONNECTED", "LAST HEARTBEAT"], &rows)
}

fn replicas(list: Vec<ReplicaDto>) -> String {
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|r| {
            let state = match (r.alive, r.accepting) {
                (false, _) => "silent",
                (true, true) => "accepting",
                (true, false) => "not accepting",
            };
            vec![
                format!("{}{}", r.id, if r.this { " *" } else { "" }),
                r.host,
                r.version,
                state.to_owned(),
                r.sessions.to_string(),
                time(r.started_at),
                time(r.last_seen),
            ]
        })
        .collect();
    table(&["REPLICA", "HOST", "VERSION", "STATE", "SESSIONS", "STARTED", "LAST SEEN"], &rows)
}

fn pong(p: PingResponse) -> String {
    format!("reply from {}: {} in {:.2} ms\n", p.session_id, if p.ok { "ok" } else { "failed" }, p.rtt_ms)
}

fn accounts(list: Vec<AccountDto>) -> String {
    let rows: Vec<Vec<String>> =
        list.into_iter().map(|a| vec![a.id, a.name, time(a.created_at), a.created_by]).collect();
    table(&["ID", "NAME", "CREATED", "BY"], &rows)
}

fn account_created(created: CreatedAccount) -> String {
    format!(
        "Created account {}.\nDefault token {} (shown once; use it as ACCOUNT_SECRET):\n{}\n",
        created.account.id,
        created.default_token.token.id,
        created.default_token.value.expose()
    )
}

/// An admin token's state at `now`: `revoked`, `expired` or `active`.
fn admin_token_state(t: &AdminTokenDto, now: u64) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

fn admin_tokens(list: Vec<AdminTokenDto>) -> String {
    let now = crate::clock::now_unix();
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|t| {
            let state = admin_token_state(&t, now);
            vec![
                t.id.to_string(),
                t.name,
                state.into(),
                t.scopes.join(","),
                t.account_id.unwrap_or_else(|| "*".into()),
                t.restriction.unwrap_or_else(|| "-".into()),
                opt_time(t.expires_at),
                opt_time(t.last_used_at),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "SCOPES", "ACCOUNT", "RESTRICTION", "EXPIRES", "LAST USED"], &rows)
}

fn admin_token_created(created: CreatedAdminToken) -> String {
    format!(
        "Created admin token {} ({}).\nValue (shown once; use it as TETHER_ADMIN_TOKEN):\n{}\n",
        created.admin_token.name,
        created.admin_token.id,
        created.value.expose()
    )
}

fn restrictions(list: Vec<RestrictionDto>) -> String {
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .flat_map(|r| {
            let (id, name, by) = (r.id.to_string(), r.name, r.created_by);
            r.allow.into_iter().enumerate().map(move |(i, rule)| {
                if i == 0 {
                    vec![id.clone(), name.clone(), rule, by.clone()]
                } else {
                    vec![String::new(), String::new(), rule, String::new()]
                }
            })
        })
        .collect();
    table(&["ID", "NAME", "ALLOWS", "BY"], &rows)
}

fn audit(list: Vec<AuditDto>) -> String {
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|a| {
            vec![time(a.at), a.actor, a.action, a.target, a.source_ip.unwrap_or_else(|| "-".into()), a.detail]
        })
        .collect();
    table(&["WHEN", "WHO", "WHAT", "TARGET", "FROM", "DETAIL"], &rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn rotation_json() -> Value {
        json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "account_id": "acme",
            "old_token_id": "00000000-0000-0000-0000-000000000002",
            "new_token_id": "00000000-0000-0000-0000-000000000003",
            "started_at": 0, "started_by": "admin", "deadline": 60, "finished_at": null,
            "state": "grace_expired",
            "delegates": [{
                "instance": "00000000-0000-0000-0000-000000000004", "name": "d1",
                "session_id": "00000000-0000-0000-0000-000000000005",
                "state": "acked", "outcome": "manual", "detail": "by hand", "updated_at": 1
            }]
        })
    }

    #[test]
    fn json_is_printed_as_received_and_tables_show_the_words() {
        let reply = Reply { json: rotation_json(), kind: Kind::Rotation };
        let shown = super::reply(&reply, OutputFormat::Json).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), rotation_json());
        let shown = super::reply(&reply, OutputFormat::Table).unwrap();
        assert!(shown.contains("grace_expired"), "{shown}");
        assert!(shown.lines().any(|l| l.starts_with("d1") && l.contains("manual")), "{shown}");
    }

    #[test]
    fn rotation_show_tells_the_operator_to_act_on_a_manual_delegate_with_the_time_left() {
        // Issue 17, finding 10: a delegate that acknowledged `manual` was shown as
        // `reconnected`, with nothing saying it stays on the old token and is cut.
        let mut json = rotation_json();
        json["state"] = "running".into();
        json["deadline"] = 1_000.into();
        json["delegates"][0]["state"] = "manual".into();
        json["delegates"][0]["moved"] = false.into();
        let r: RotationDto = serde_json::from_value(json).unwrap();
        let shown = rotation_at(&r, 1_000 - 125);
        assert!(shown.contains("OPERATOR ACTION REQUIRED"), "{shown}");
        assert!(shown.contains("NOT moved: d1 (00000000-0000-0000-0000-000000000004)"), "{shown}");
        assert!(shown.contains("00000000-0000-0000-0000-000000000003"), "names the successor: {shown}");
        assert!(shown.contains(&format!("cut at {} (in 2m 05s)", time(1_000))), "{shown}");
        assert!(!shown.contains("reconnected"), "{shown}");
        assert!(rotation_at(&r, 1_000).contains("has passed"), "at the deadline");

        let mut finished = r.clone();
        finished.finished_at = Some(1_001);
        assert!(rotation_at(&finished, 2_000).contains("was cut at"));

        // A delegate that moved (or any other state) needs nothing from the operator.
        let mut moved = r.clone();
        moved.delegates[0].state = ShownDelegateState::Reconnected;
        moved.delegates[0].moved = true;
        assert!(!rotation_at(&moved, 0).contains("OPERATOR"), "moved delegate");
        assert_eq!(time_left(3_723), "1h 02m 03s");
        assert_eq!(time_left(7), "7s");
    }

    #[test]
    fn an_expired_admin_token_is_listed_as_expired() {
        let now = crate::clock::now_unix();
        let token = |name: &str, expires_at: Option<u64>, revoked_at: Option<u64>| {
            json!({
                "id": Uuid::new_v4(), "name": name, "scopes": ["admin"], "created_at": 0,
                "created_by": "init", "expires_at": expires_at, "allowed_cidrs": [],
                "revoked_at": revoked_at, "last_used_at": null
            })
        };
        let list = json!([
            token("gone", Some(now - 10), None),
            token("live", Some(now + 3600), None),
            token("forever", None, None),
            token("cut", Some(now - 10), Some(now - 20)),
        ]);
        let shown =
            super::reply(&Reply { json: list, kind: Kind::AdminTokens }, OutputFormat::Table).unwrap();
        let state = |name: &str| {
            let line = shown.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap();
            line.split_whitespace().nth(2).unwrap().to_owned()
        };
        assert_eq!(state("gone"), "expired", "{shown}");
        assert_eq!(state("live"), "active", "{shown}");
        assert_eq!(state("forever"), "active", "{shown}");
        assert_eq!(state("cut"), "revoked", "{shown}");
    }

    #[test]
    fn changes_without_a_body_say_what_changed() {
        let reply = Reply { json: json!({"deleted": "t1"}), kind: Kind::Done("Deleted token t1.\n".into()) };
        assert_eq!(super::reply(&reply, OutputFormat::Table).unwrap(), "Deleted token t1.\n");
        assert_eq!(super::reply(&reply, OutputFormat::Json).unwrap(), "{\n  \"deleted\": \"t1\"\n}\n");
    }

    #[test]
    fn an_answer_of_the_wrong_shape_is_a_decode_error_for_tables_only() {
        let reply = Reply { json: json!({"unexpected": true}), kind: Kind::Tokens };
        assert!(matches!(super::reply(&reply, OutputFormat::Table), Err(ClientError::Decode(_))));
        assert!(super::reply(&reply, OutputFormat::Json).is_ok());
    }
}
