//! Request and response bodies of the REST API: their own types, converted explicitly from
//! storage rows and registry entries (rows never become a wire contract by accident). The CLI
//! parses responses with the same types.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::registry::SessionInfo;
use crate::store::accounts::Account;
use crate::store::admin::AdminTokenRow;
use crate::store::audit::AuditEntry;
use crate::store::rotations::{RotationDelegate, RotationRow};
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
    /// Last successful handshake.
    pub last_used_at: Option<u64>,
    /// Live delegates using it.
    pub live_delegates: usize,
    /// The rotation replacing it, while one runs.
    pub rotation_id: Option<Uuid>,
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
        }
    }
}

/// Create a delegate token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// Name, unique in the account.
    pub name: String,
    /// Expire this many seconds from now.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Allowed source CIDRs (IPv4 or IPv6); empty or absent allows any.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// A created token with its value: shown exactly once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    pub token: TokenDto,
    /// The token string (`tdt_…`), for `ACCOUNT_SECRET`.
    pub value: String,
}

/// Rotate a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RotateToken {
    /// Grace window in seconds (default from the configuration).
    #[serde(default)]
    pub grace_secs: Option<u64>,
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
    pub token: String,
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
    pub state: String,
    /// Per delegate.
    pub delegates: Vec<RotationDelegateDto>,
}

impl RotationDto {
    /// From rows.
    pub fn from_rows(r: RotationRow, delegates: Vec<RotationDelegate>) -> Self {
        Self {
            id: r.id,
            account_id: r.account_id,
            old_token_id: r.old_token_id,
            new_token_id: r.new_token_id,
            started_at: r.started_at,
            started_by: r.started_by,
            deadline: r.deadline,
            finished_at: r.finished_at,
            state: r.outcome.unwrap_or_else(|| "running".into()),
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
    /// pending, acked or reconnected.
    pub state: String,
    /// applied, failed or manual, once acked.
    pub outcome: Option<String>,
    /// The ack's detail.
    pub detail: Option<String>,
    /// Unix seconds.
    pub updated_at: u64,
}

impl From<RotationDelegate> for RotationDelegateDto {
    fn from(d: RotationDelegate) -> Self {
        Self {
            instance: d.instance,
            name: d.name,
            session_id: d.session_id,
            state: d.state,
            outcome: d.outcome,
            detail: d.detail,
            updated_at: d.updated_at,
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
    /// Last use.
    pub last_used_at: Option<u64>,
}

impl From<AdminTokenRow> for AdminTokenDto {
    fn from(t: AdminTokenRow) -> Self {
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
        }
    }
}

/// Create an admin token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateAdminToken {
    /// Unique name.
    pub name: String,
    /// Scopes: tokens:read, tokens:write, delegates:read, delegates:write, admin.
    pub scopes: Vec<String>,
    /// Expire this many seconds from now.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Allowed source CIDRs.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// A created admin token with its value, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAdminToken {
    /// The token.
    pub admin_token: AdminTokenDto,
    /// Its value (`tat_…`).
    pub value: String,
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
