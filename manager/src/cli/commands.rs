//! Running `init` and the client subcommands: each subcommand is one API call (or two for
//! none), answered as a [`Reply`] that [`super::render`] turns into a table for people or the
//! JSON answer with `--json`. Nothing here formats output. A failure is printed by [`fail`]:
//! a sentence on stderr, or with `--json` one JSON object there, and its exit code.
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{ApiClient, ClientError};
use super::render;
use super::*;
use crate::api::dto::*;
use crate::init::{InitError, InitOptions};

/// What an answer is, so it can be rendered for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// `[TokenDto]`.
    Tokens,
    /// One `TokenDto`, with its creation and rotation.
    Token,
    /// `CreatedToken`.
    TokenCreated,
    /// `RevokeResponse`.
    TokenRevoked,
    /// `RotateResponse`.
    RotationStarted,
    /// `[RotationDto]`.
    Rotations,
    /// One `RotationDto` with its delegates.
    Rotation,
    /// `[DelegateDto]`.
    Delegates,
    /// `PingResponse`.
    Pong,
    /// `[ReplicaDto]`.
    Replicas,
    /// `[AccountDto]`.
    Accounts,
    /// One `AccountDto`.
    Account,
    /// `CreatedAccount`.
    AccountCreated,
    /// `[AdminTokenDto]`.
    AdminTokens,
    /// One `AdminTokenDto`.
    AdminToken,
    /// `CreatedAdminToken`.
    AdminTokenCreated,
    /// `[RestrictionDto]`.
    Restrictions,
    /// One `RestrictionDto`.
    Restriction,
    /// `[AuditDto]`.
    Audit,
    /// A change with no body to show: this sentence for people.
    Done(String),
}

/// A command's answer: the JSON as the API sent it (or, for changes without a body, a small
/// object naming what changed) and what it is.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    /// Printed as is with `--json`.
    pub json: Value,
    /// How to show it otherwise.
    pub kind: Kind,
}

impl Reply {
    fn new(json: Value, kind: Kind) -> Self {
        Self { json, kind }
    }
}

/// Prints a failure on stderr — with `--json` as one object
/// `{"error": {"code", "message", "status"?, "exit_code"}}` — and returns `exit`.
pub(super) fn fail(json: bool, code: &str, message: &str, status: Option<u16>, exit: u8) -> ExitCode {
    if json {
        let mut error = json!({ "code": code, "message": message, "exit_code": exit });
        if let Some(status) = status {
            error["status"] = status.into();
        }
        eprintln!("{}", json!({ "error": error }));
    } else {
        eprintln!("tether-manager: {message}");
    }
    ExitCode::from(exit)
}

/// [`fail`] for a client error, with its documented exit code.
fn fail_client(json: bool, e: &ClientError) -> ExitCode {
    let message = match e {
        // The API's own words; the status and code are fields of their own in JSON.
        ClientError::Api { message, .. } if json => message.clone(),
        _ => e.to_string(),
    };
    fail(json, e.code(), &message, e.status(), e.exit_code())
}

pub(super) fn init(args: InitArgs) -> ExitCode {
    let format = args.format();
    let json = format == InitFormat::Json;
    let database = match DatabaseArg::check_opt(args.database.as_ref()) {
        Ok(d) => d,
        Err(m) => return fail(json, "usage", &format!("init: {m}"), None, EXIT_USAGE),
    };
    let opts = InitOptions {
        data_dir: args.data_dir,
        account: args.account,
        tls_sans: args.tls_sans,
        manager_url: args.manager_url,
        database,
    };
    match crate::init::init(&opts) {
        Ok(out) => {
            print!("{}", render::init(&out, &opts.data_dir, format));
            ExitCode::SUCCESS
        }
        Err(InitError::Invalid(e)) => fail(json, "usage", &format!("init: {e}"), None, EXIT_USAGE),
        Err(e) => fail(json, "error", &format!("init: {e}"), None, 1),
    }
}

pub(super) fn client_command(cmd: Command) -> ExitCode {
    if let Command::AdminToken { client, cmd: AdminTokenCmd::Create { offline: true, .. } } = &cmd {
        let (client, format) = (client.clone(), client.format());
        let Command::AdminToken { cmd, .. } = cmd else { unreachable!("matched above") };
        return offline_admin_token(&client, cmd, format);
    }
    let client_args = match &cmd {
        Command::Token { client, .. }
        | Command::Delegate { client, .. }
        | Command::Replica { client, .. }
        | Command::Account { client, .. }
        | Command::AdminToken { client, .. }
        | Command::Restriction { client, .. }
        | Command::Rotation { client, .. }
        | Command::Audit { client, .. } => client.clone(),
        Command::Init(_)
        | Command::Serve(_)
        | Command::Migrate { .. }
        | Command::Store { .. }
        | Command::Tls { .. }
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled by cli::run"),
    };
    let json = client_args.format() == OutputFormat::Json;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(json, "error", &format!("cannot start the runtime: {e}"), None, 1),
    };
    let result = runtime.block_on(async {
        let client = connect(&client_args)?;
        let reply = execute(&client, cmd).await?;
        render::reply(&reply, client_args.format())
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail_client(json, &e),
    }
}

/// `admin-token create --offline`: the token is written into the database of `--data-dir`
/// (no API call) and printed once, like an API-created one.
fn offline_admin_token(client: &ClientArgs, cmd: AdminTokenCmd, format: OutputFormat) -> ExitCode {
    let AdminTokenCmd::Create { name, name_flag, scopes, expires_in, allow_cidrs, database, .. } = cmd else {
        unreachable!("only create is offline")
    };
    let json = format == OutputFormat::Json;
    let database = match DatabaseArg::check_opt(database.as_ref()) {
        Ok(d) => d,
        Err(m) => return fail(json, "usage", &m, None, EXIT_USAGE),
    };
    let req = crate::init::OfflineAdminToken {
        name: name.or(name_flag).unwrap_or_default(),
        scopes: if scopes.is_empty() { vec!["admin".into()] } else { scopes },
        expires_in_secs: expires_in,
        allowed_cidrs: allow_cidrs,
        database,
    };
    let (row, value) = match crate::init::offline_admin_token(&client.data_dir, &req) {
        Ok(created) => created,
        Err(
            e @ (crate::init::OfflineError::Invalid(_) | crate::init::OfflineError::NotInitialised { .. }),
        ) => return fail(json, "usage", &e.to_string(), None, EXIT_USAGE),
        Err(e) => return fail(json, "error", &e.to_string(), None, 1),
    };
    let created = CreatedAdminToken {
        admin_token: AdminTokenDto::from_row(row, None),
        value: tether_protocol::SecretString::new(value.to_string()),
    };
    let reply = serde_json::to_value(&created)
        .map_err(|e| ClientError::Decode(e.to_string()))
        .and_then(|json| render::reply(&Reply::new(json, Kind::AdminTokenCreated), format));
    match reply {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail_client(json, &e),
    }
}

fn connect(args: &ClientArgs) -> Result<ApiClient, ClientError> {
    let token = args.admin_token.as_ref().filter(|t| !t.is_empty()).ok_or_else(|| {
        ClientError::Usage("no admin token: pass --admin-token or set TETHER_ADMIN_TOKEN".into())
    })?;
    let ca = args.ca_cert.clone().or_else(|| crate::init::default_ca(&args.data_dir)).ok_or_else(|| {
        ClientError::Usage(format!(
            "no CA certificate: pass --ca-cert or set TETHER_CA_CERT ({}/ca.pem does not exist)",
            args.data_dir.display()
        ))
    })?;
    ApiClient::new(&args.manager, &ca, token.expose())
}

fn seg(s: &str) -> String {
    // Path segments are validated names or ids; escape anything else.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const NO_BODY: Option<&Value> = None;

async fn get(c: &ApiClient, path: &str, kind: Kind) -> Result<Reply, ClientError> {
    Ok(Reply::new(c.request(Method::GET, path, NO_BODY).await?, kind))
}

async fn post(
    c: &ApiClient,
    path: &str,
    body: Option<&impl serde::Serialize>,
    kind: Kind,
) -> Result<Reply, ClientError> {
    Ok(Reply::new(c.request(Method::POST, path, body).await?, kind))
}

/// Deletes `path`; the answer names `what` under `key`, and says `done` to people.
async fn delete(
    c: &ApiClient,
    path: &str,
    key: &str,
    what: &str,
    done: String,
) -> Result<Reply, ClientError> {
    let _: Value = c.request(Method::DELETE, path, NO_BODY).await?;
    Ok(Reply::new(json!({ key: what }), Kind::Done(done)))
}

async fn execute(c: &ApiClient, cmd: Command) -> Result<Reply, ClientError> {
    match cmd {
        Command::Token { cmd, .. } => token(c, cmd).await,
        Command::Delegate { cmd, .. } => delegate(c, cmd).await,
        Command::Replica { cmd: ReplicaCmd::List, .. } => get(c, "/api/v1/replicas", Kind::Replicas).await,
        Command::Account { cmd, .. } => account(c, cmd).await,
        Command::AdminToken { cmd, .. } => admin_token(c, cmd).await,
        Command::Restriction { cmd, .. } => restriction(c, cmd).await,
        Command::Rotation { cmd, .. } => rotation(c, cmd).await,
        Command::Audit { limit, .. } => get(c, &format!("/api/v1/audit?limit={limit}"), Kind::Audit).await,
        Command::Init(_)
        | Command::Serve(_)
        | Command::Migrate { .. }
        | Command::Store { .. }
        | Command::Tls { .. }
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled by cli::run"),
    }
}

async fn token(c: &ApiClient, cmd: TokenCmd) -> Result<Reply, ClientError> {
    match cmd {
        TokenCmd::Create { name, account, expires_in, allow_cidrs, rotate_every, grace } => {
            let rotation_policy =
                rotate_every.map(|every_secs| RotationPolicyDto { every_secs, grace_secs: grace });
            let body = CreateToken {
                name,
                expires_in_secs: expires_in,
                allowed_cidrs: allow_cidrs,
                rotation_policy,
            };
            post(c, &format!("/api/v1/accounts/{}/tokens", seg(&account)), Some(&body), Kind::TokenCreated)
                .await
        }
        TokenCmd::Update { token, account, rotate_every, grace, no_rotation: _ } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}", seg(&account), seg(&token));
            let rotation_policy =
                rotate_every.map(|every_secs| RotationPolicyDto { every_secs, grace_secs: grace });
            let body = UpdateToken { rotation_policy };
            Ok(Reply::new(c.request(Method::PATCH, &path, Some(&body)).await?, Kind::Token))
        }
        TokenCmd::List { account } => {
            get(c, &format!("/api/v1/accounts/{}/tokens", seg(&account)), Kind::Tokens).await
        }
        TokenCmd::Show { token, account } => {
            get(c, &format!("/api/v1/accounts/{}/tokens/{}", seg(&account), seg(&token)), Kind::Token).await
        }
        TokenCmd::Revoke { token, account } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}/revoke", seg(&account), seg(&token));
            post(c, &path, NO_BODY, Kind::TokenRevoked).await
        }
        TokenCmd::Rotate { token, account, grace_secs, expires_in } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}/rotate", seg(&account), seg(&token));
            let body = RotateToken { grace_secs, expires_in_secs: expires_in };
            post(c, &path, Some(&body), Kind::RotationStarted).await
        }
        TokenCmd::Delete { token, account } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}", seg(&account), seg(&token));
            delete(c, &path, "deleted", &token, format!("Deleted token {token}.\n")).await
        }
    }
}

async fn delegate(c: &ApiClient, cmd: DelegateCmd) -> Result<Reply, ClientError> {
    match cmd {
        DelegateCmd::List { account } => {
            let path = match account {
                Some(a) => format!("/api/v1/delegates?account={}", seg(&a)),
                None => "/api/v1/delegates".into(),
            };
            get(c, &path, Kind::Delegates).await
        }
        DelegateCmd::Disconnect { session_id } => {
            let path = format!("/api/v1/delegates/{}", seg(&session_id));
            delete(c, &path, "disconnected", &session_id, format!("Disconnected session {session_id}.\n"))
                .await
        }
        DelegateCmd::Ping { session_id, payload } => {
            let path = format!("/api/v1/delegates/{}/ping", seg(&session_id));
            post(c, &path, Some(&PingRequest { payload }), Kind::Pong).await
        }
    }
}

async fn account(c: &ApiClient, cmd: AccountCmd) -> Result<Reply, ClientError> {
    match cmd {
        AccountCmd::List => get(c, "/api/v1/accounts", Kind::Accounts).await,
        AccountCmd::Create { id, name } => {
            post(c, "/api/v1/accounts", Some(&CreateAccount { id, name }), Kind::AccountCreated).await
        }
        AccountCmd::Show { id } => get(c, &format!("/api/v1/accounts/{}", seg(&id)), Kind::Account).await,
    }
}

async fn admin_token(c: &ApiClient, cmd: AdminTokenCmd) -> Result<Reply, ClientError> {
    match cmd {
        AdminTokenCmd::List => get(c, "/api/v1/admin-tokens", Kind::AdminTokens).await,
        AdminTokenCmd::Create {
            name,
            name_flag,
            scopes,
            expires_in,
            allow_cidrs,
            account,
            restriction,
            offline: _,
            database: _,
        } => {
            let body = CreateAdminToken {
                name: name.or(name_flag).unwrap_or_default(),
                scopes,
                expires_in_secs: expires_in,
                allowed_cidrs: allow_cidrs,
                account,
                restriction,
            };
            post(c, "/api/v1/admin-tokens", Some(&body), Kind::AdminTokenCreated).await
        }
        AdminTokenCmd::Revoke { id } => {
            post(c, &format!("/api/v1/admin-tokens/{}/revoke", seg(&id)), NO_BODY, Kind::AdminToken).await
        }
    }
}

async fn restriction(c: &ApiClient, cmd: RestrictionCmd) -> Result<Reply, ClientError> {
    match cmd {
        RestrictionCmd::List => get(c, "/api/v1/restrictions", Kind::Restrictions).await,
        RestrictionCmd::Create { name, allow } => {
            post(c, "/api/v1/restrictions", Some(&CreateRestriction { name, allow }), Kind::Restriction).await
        }
        RestrictionCmd::Delete { name } => {
            let path = format!("/api/v1/restrictions/{}", seg(&name));
            delete(c, &path, "deleted", &name, format!("Deleted restriction {name}.\n")).await
        }
    }
}

async fn rotation(c: &ApiClient, cmd: RotationCmd) -> Result<Reply, ClientError> {
    match cmd {
        RotationCmd::List => get(c, "/api/v1/rotations", Kind::Rotations).await,
        RotationCmd::Show { id } => get(c, &format!("/api/v1/rotations/{}", seg(&id)), Kind::Rotation).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("acme-1.x_~"), "acme-1.x_~");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("é"), "%C3%A9");
    }
}
