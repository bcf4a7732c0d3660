//! Request and response bodies of the REST API: their own types, converted explicitly from
//! storage rows and registry entries (rows never become a wire contract by accident). The CLI
//! parses responses with the same types. Every field that carries a token's value is a
//! [`SecretString`]: serialised as the value, never shown by `Debug`.
use serde::{Deserialize, Serialize};
use tether_protocol::SecretString;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::registry::SessionInfo;
use crate::store::access::RestrictionRow;
use crate::store::accounts::Account;
use crate::store::admin::AdminTokenRow;
use crate::store::audit::AuditEntry;
use crate::store::rotations::{AckOutcome, RotationDelegate, RotationRow, RotationState, ShownDelegateState};
use crate::store::tokens::TokenRow;

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountDto {
    /// Account id (`ACCOUNT_ID`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
}

impl From<Account> for AccountDto {
    fn from(a: Account) -> Self {
        Self { id: a.id, name: a.name, created_at: a.created_at, created_by: a.created_by }
    }
}

/// Create an account (its default token is created with it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateAccount {
    /// Account id: 1–64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// Display name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
}

/// A created account with its default token's value (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccount {
    /// The account.
    pub account: AccountDto,
    /// Its default token.
    pub default_token: CreatedToken,
}

/// A delegate token, without its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    /// Public token id.
    pub id: Uuid,
    /// Account.
    pub account_id: String,
    /// Name, unique per account.
    pub name: String,
    /// active, rotating, revoked or expired.
    pub state: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Expiry, unix seconds.
    pub expires_at: Option<u64>,
    /// Allowed source CIDRs (empty: any).
    pub allowed_cidrs: Vec<String>,
    /// When revoked.
    pub revoked_at: Option<u64>,
    /// Last successful handshake (each manager records it at most once a minute per token).
    pub last_used_at: Option<u64>,
    /// Live delegates using it.
    pub live_delegates: usize,
    /// The rotation replacing it, while one runs.
    pub rotation_id: Option<Uuid>,
    /// Its rotation policy, if any.
    pub rotation_policy: Option<RotationPolicyDto>,
    /// When its policy rotates it next (unix seconds), if it has one and is not revoked.
    pub next_rotation_at: Option<u64>,
}

impl TokenDto {
    /// From a row, the state at `now` and the live session count.
    pub fn from_row(t: TokenRow, now: u64, live: usize) -> Self {
        Self {
            state: t.state(now).as_str().to_owned(),
            id: t.id,
            account_id: t.account_id,
            name: t.name,
            created_at: t.created_at,
            created_by: t.created_by,
            expires_at: t.expires_at,
            allowed_cidrs: t.allowed_cidrs.iter().map(|c| c.to_string()).collect(),
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            live_delegates: live,
            rotation_id: t.rotation_id,
            next_rotation_at: t.policy.map(|p| p.due_at(t.created_at)).filter(|_| t.revoked_at.is_none()),
            rotation_policy: t
                .policy
                .map(|p| RotationPolicyDto { every_secs: p.every, grace_secs: Some(p.grace) }),
        }
    }
}

/// A token's rotation policy: the manager rotates the token itself `every_secs` after it was
/// created, with a grace window of `grace_secs`; the successor inherits the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicyDto {
    /// Seconds from a token's creation to its rotation.
    #[serde(deserialize_with = "super::extract::integer")]
    pub every_secs: u64,
    /// Each rotation's grace window (absent: the manager's `rotation_grace_secs`); shorter than
    /// `every_secs`.
    #[serde(default, deserialize_with = "super::extract::opt_integer")]
    pub grace_secs: Option<u64>,
}

/// Change a token: its rotation policy (`null` clears it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateToken {
    /// The new rotation policy, or `null` for none.
    #[serde(deserialize_with = "super::extract::object_or_null")]
    #[schema(required = true)]
    pub rotation_policy: Option<RotationPolicyDto>,
}

/// Create a delegate token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// Name, unique in the account.
    pub name: String,
    /// Expire this many seconds from now.
    #[serde(default, deserialize_with = "super::extract::opt_integer")]
    pub expires_in_secs: Option<u64>,
    /// Allowed source CIDRs (IPv4 or IPv6); empty or absent allows any.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Rotate this token automatically (absent: never).
    #[serde(default, deserialize_with = "super::extract::object_or_null")]
    pub rotation_policy: Option<RotationPolicyDto>,
}

/// A created token with its value: shown exactly once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    pub token: TokenDto,
    /// The token string (`tdt_…`), for `ACCOUNT_SECRET`.
    #[schema(value_type = String)]
    pub value: SecretString,
}

/// Rotate a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RotateToken {
    /// Grace window in seconds (default from the configuration).
    #[serde(default, deserialize_with = "super::extract::opt_integer")]
    pub grace_secs: Option<u64>,
    /// The successor's lifetime in seconds from now. Default: the old token's lifetime
    /// (expiry minus creation) from now, or no expiry when the old token had none.
    #[serde(default, deserialize_with = "super::extract::opt_integer")]
    pub expires_in_secs: Option<u64>,
}

/// A started rotation: the successor's value is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotateResponse {
    /// Watch it at `/api/v1/rotations/{rotation_id}`.
    pub rotation_id: Uuid,
    /// The old token.
    pub old_token_id: Uuid,
    /// The successor's id.
    pub token_id: Uuid,
    /// The successor's value.
    #[schema(value_type = String)]
    pub token: SecretString,
    /// The old token is revoked by then at the latest (unix seconds).
    pub old_token_valid_until: u64,
    /// Live delegates sent `rotate`.
    pub delegates_notified: usize,
}

/// A revoked token and the sessions closed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevokeResponse {
    /// The token, now revoked.
    pub token: TokenDto,
    /// Live sessions sent `revoked` and closed.
    pub sessions_closed: usize,
}

/// A rotation and each delegate's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationDto {
    /// Rotation id.
    pub id: Uuid,
    /// Account.
    pub account_id: String,
    /// Old token.
    pub old_token_id: Uuid,
    /// Successor.
    pub new_token_id: Uuid,
    /// Unix seconds.
    pub started_at: u64,
    /// Who started it.
    pub started_by: String,
    /// End of the grace window.
    pub deadline: u64,
    /// When finished.
    pub finished_at: Option<u64>,
    /// running, completed or grace_expired.
    #[schema(value_type = String)]
    pub state: RotationState,
    /// Per delegate.
    pub delegates: Vec<RotationDelegateDto>,
}

impl RotationDto {
    /// From rows.
    pub fn from_rows(r: RotationRow, delegates: Vec<RotationDelegate>) -> Self {
        let state = r.state();
        Self {
            id: r.id,
            account_id: r.account_id,
            old_token_id: r.old_token_id,
            new_token_id: r.new_token_id,
            started_at: r.started_at,
            started_by: r.started_by,
            deadline: r.deadline,
            finished_at: r.finished_at,
            state,
            delegates: delegates.into_iter().map(Into::into).collect(),
        }
    }
}

/// One delegate's progress in a rotation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationDelegateDto {
    /// Delegate instance.
    pub instance: Uuid,
    /// Delegate name.
    pub name: String,
    /// Session that was sent `rotate`.
    pub session_id: Uuid,
    /// pending, acked, reconnected, or manual: it acknowledged `manual` and stays on the old
    /// token (cut at the deadline) until an operator puts the successor in place.
    #[schema(value_type = String)]
    pub state: ShownDelegateState,
    /// Whether it has moved onto the successor (acknowledged `applied` and seen on it).
    #[serde(default)]
    pub moved: bool,
    /// applied, failed or manual, once acked.
    #[schema(value_type = Option<String>)]
    pub outcome: Option<AckOutcome>,
    /// The ack's detail.
    pub detail: Option<String>,
    /// Unix seconds.
    pub updated_at: u64,
}

impl From<RotationDelegate> for RotationDelegateDto {
    fn from(d: RotationDelegate) -> Self {
        Self {
            state: d.shown_state(),
            moved: crate::rotation::has_moved(&d),
            instance: d.instance,
            name: d.name,
            session_id: d.session_id,
            outcome: d.outcome,
            detail: d.detail,
            updated_at: d.updated_at,
        }
    }
}

/// A manager of the replica set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaDto {
    /// Its id (new at every start).
    pub id: Uuid,
    /// Whether it is the manager that answered.
    pub this: bool,
    /// Its version.
    pub version: String,
    /// Its host name.
    pub host: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds of its last report (every 2 s while it runs).
    pub last_seen: u64,
    /// Live delegate sessions at its last report.
    pub sessions: u64,
    /// Whether it accepts delegate sessions (false while it fails closed or drains).
    pub accepting: bool,
    /// Whether its last report is recent enough (10 s) for it to count as running.
    pub alive: bool,
}

impl ReplicaDto {
    /// The DTO of `r`, as seen from replica `me`.
    pub fn from_row(r: crate::store::cluster::ReplicaRow, me: Uuid) -> Self {
        Self {
            id: r.id,
            this: r.id == me,
            version: r.version,
            host: r.host,
            started_at: r.started_at,
            last_seen: r.last_seen,
            sessions: r.sessions,
            accepting: r.accepting,
            alive: r.alive,
        }
    }
}

/// A live delegate session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DelegateDto {
    /// Session id.
    pub session_id: Uuid,
    /// Account.
    pub account_id: String,
    /// Token in use.
    pub token_id: Uuid,
    /// Delegate name.
    pub name: String,
    /// Delegate instance.
    pub instance: Uuid,
    /// Host name.
    pub host: String,
    /// Software version.
    pub version: String,
    /// Source address.
    pub ip: String,
    /// Unix seconds.
    pub connected_at: u64,
    /// Unix seconds.
    pub last_heartbeat: u64,
}

impl From<SessionInfo> for DelegateDto {
    fn from(s: SessionInfo) -> Self {
        Self {
            session_id: s.session_id,
            account_id: s.account_id,
            token_id: s.token_id,
            name: s.name,
            instance: s.instance,
            host: s.host,
            version: s.version,
            ip: s.ip.to_string(),
            connected_at: s.connected_at,
            last_heartbeat: s.last_heartbeat,
        }
    }
}

/// Ping a delegate (an `echo` task).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PingRequest {
    /// Echo payload (at most 1024 bytes; default `ping`).
    #[serde(default)]
    pub payload: Option<String>,
}

/// The delegate's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PingResponse {
    /// Session pinged.
    pub session_id: Uuid,
    /// Round trip in milliseconds.
    pub rtt_ms: f64,
    /// Whether the delegate reported success.
    pub ok: bool,
    /// What came back.
    pub payload: String,
}

/// An admin token, without its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminTokenDto {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// Allowed source CIDRs.
    pub allowed_cidrs: Vec<String>,
    /// When revoked.
    pub revoked_at: Option<u64>,
    /// Last successful authentication.
    pub last_used_at: Option<u64>,
    /// The one account it may act on; absent: every account.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The name of the endpoint restriction it is limited by; absent: none.
    #[serde(default)]
    pub restriction: Option<String>,
}

impl AdminTokenDto {
    /// From a row and the name of its restriction.
    pub fn from_row(t: AdminTokenRow, restriction: Option<String>) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            created_at: t.created_at,
            created_by: t.created_by,
            expires_at: t.expires_at,
            allowed_cidrs: t.allowed_cidrs.iter().map(|c| c.to_string()).collect(),
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            account_id: t.account_id,
            restriction,
        }
    }
}

/// Create an admin token. It never gets more power than the token that creates it: every
/// field left out is inherited from the creator (account binding, restriction, expiry, allowed
/// CIDRs), and a wider value than the creator's own is refused (403).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateAdminToken {
    /// Unique name.
    pub name: String,
    /// Scopes: tokens:read, tokens:write, delegates:read, delegates:write, admin.
    pub scopes: Vec<String>,
    /// Expire this many seconds from now.
    #[serde(default, deserialize_with = "super::extract::opt_integer")]
    pub expires_in_secs: Option<u64>,
    /// Allowed source CIDRs.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Bind it to this account: it may then act on this account only.
    #[serde(default)]
    pub account: Option<String>,
    /// Limit it to the requests this endpoint restriction (id or name) allows.
    #[serde(default)]
    pub restriction: Option<String>,
}

/// A created admin token with its value, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAdminToken {
    /// The token.
    pub admin_token: AdminTokenDto,
    /// Its value (`tat_…`).
    #[schema(value_type = String)]
    pub value: SecretString,
}

/// An endpoint restriction: the requests an admin token limited by it may make.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestrictionDto {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Allowed requests, each `METHOD /api/v1/…` (`*` matches any one path segment).
    pub allow: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
}

impl From<RestrictionRow> for RestrictionDto {
    fn from(r: RestrictionRow) -> Self {
        Self { id: r.id, name: r.name, allow: r.rules, created_at: r.created_at, created_by: r.created_by }
    }
}

/// Create an endpoint restriction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateRestriction {
    /// Unique name.
    pub name: String,
    /// 1 to 64 allowed requests, each `METHOD /api/v1/path`: the method one of GET, POST, PUT,
    /// PATCH, DELETE or `*`; a path segment `*` or `{name}` matches any one segment, e.g.
    /// `GET /api/v1/accounts/{account}/tokens`.
    pub allow: Vec<String>,
}

/// An audit entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditDto {
    /// Sequence.
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub source_ip: Option<String>,
    /// Detail.
    pub detail: String,
}

impl From<AuditEntry> for AuditDto {
    fn from(a: AuditEntry) -> Self {
        Self {
            id: a.id,
            at: a.at,
            actor: a.actor,
            action: a.action,
            target: a.target,
            source_ip: a.source_ip,
            detail: a.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "THIS-IS-THE-SECRET-VALUE";

    fn token_dto() -> TokenDto {
        TokenDto {
            id: Uuid::nil(),
            account_id: "acme".into(),
            name: "default".into(),
            state: "active".into(),
            created_at: 1,
            created_by: "init".into(),
            expires_at: None,
            allowed_cidrs: vec![],
            revoked_at: None,
            last_used_at: None,
            live_delegates: 0,
            rotation_id: None,
            rotation_policy: None,
            next_rotation_at: None,
        }
    }

    fn admin_dto() -> AdminTokenDto {
        AdminTokenDto {
            id: Uuid::nil(),
            name: "ops".into(),
            scopes: vec!["admin".into()],
            created_at: 1,
            created_by: "init".into(),
            expires_at: None,
            allowed_cidrs: vec![],
            revoked_at: None,
            last_used_at: None,
            account_id: Some("acme".into()),
            restriction: None,
        }
    }

    #[test]
    fn token_values_never_show_in_debug_and_are_serialised_for_the_one_answer() {
        let delegate_value = format!("tdt_{MARK}");
        let admin_value = format!("tat_{MARK}");
        let created = CreatedToken { token: token_dto(), value: delegate_value.as_str().into() };
        let account = CreatedAccount {
            account: AccountDto {
                id: "acme".into(),
                name: "Acme".into(),
                created_at: 1,
                created_by: "x".into(),
            },
            default_token: created.clone(),
        };
        let rotated = RotateResponse {
            rotation_id: Uuid::nil(),
            old_token_id: Uuid::nil(),
            token_id: Uuid::nil(),
            token: delegate_value.as_str().into(),
            old_token_valid_until: 2,
            delegates_notified: 0,
        };
        let admin = CreatedAdminToken { admin_token: admin_dto(), value: admin_value.as_str().into() };
        for (what, text) in [
            ("CreatedToken", format!("{created:?}")),
            ("CreatedAccount", format!("{account:#?}")),
            ("RotateResponse", format!("{rotated:?}")),
            ("CreatedAdminToken", format!("{admin:?}")),
        ] {
            assert!(!text.contains(MARK), "{what} shows its secret in Debug: {text}");
            assert!(text.contains("redacted"), "{what}: {text}");
        }
        let json = serde_json::to_string(&account).unwrap();
        assert!(json.contains(&delegate_value), "the API still answers the value once: {json}");
        let back: CreatedAdminToken = serde_json::from_str(&serde_json::to_string(&admin).unwrap()).unwrap();
        assert_eq!(back.value, SecretString::from(admin_value.as_str()));
        let back: RotateResponse = serde_json::from_str(&serde_json::to_string(&rotated).unwrap()).unwrap();
        assert_eq!(back.token, SecretString::from(delegate_value.as_str()));
    }
}
