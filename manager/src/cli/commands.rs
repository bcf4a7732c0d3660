//! Running `init` and the client subcommands: call the API, print a table for people or the
//! JSON answer with `--json`.
use std::process::ExitCode;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::client::{ApiClient, ClientError};
use super::table::{opt_time, render, time};
use super::*;
use crate::api::dto::*;
use crate::init::{InitError, InitOptions};

pub(super) fn init(args: InitArgs) -> ExitCode {
    let opts = InitOptions {
        data_dir: args.data_dir,
        account: args.account,
        tls_sans: args.tls_sans,
        manager_url: args.manager_url,
    };
    match crate::init::init(&opts) {
        Ok(out) => {
            if args.json {
                println!("{}", out.to_json());
            } else if args.env {
                println!("ACCOUNT_ID={}", out.account_id);
                println!("ACCOUNT_SECRET={}", out.default_token.as_str());
                println!("TETHER_ADMIN_TOKEN={}", out.admin_token.as_str());
            } else {
                println!("Tether manager initialised in {}.", opts.data_dir.display());
                println!("These values are shown ONCE. Store them in a secret manager now.\n");
                println!("  account id:          {}", out.account_id);
                println!("  default token id:    {}", out.default_token_id);
                println!("  default token:       {}", out.default_token.as_str());
                println!("  admin token:         {}", out.admin_token.as_str());
                println!("  CA certificate:      {}", out.ca_cert.display());
                println!("  CA SHA-256:          {}", out.ca_fingerprint_sha256);
                println!("  manager URL:         {}", out.manager_url);
                println!(
                    "\nBack up {} (database) and master.key together; one without the other is useless.",
                    crate::store::DB_FILE
                );
            }
            ExitCode::SUCCESS
        }
        Err(InitError::Invalid(e)) => {
            eprintln!("tether-manager init: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("tether-manager init: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn client_command(cmd: Command) -> ExitCode {
    let client_args = match &cmd {
        Command::Token { client, .. }
        | Command::Delegate { client, .. }
        | Command::Account { client, .. }
        | Command::AdminToken { client, .. }
        | Command::Restriction { client, .. }
        | Command::Rotation { client, .. }
        | Command::Audit { client, .. } => client.clone(),
        Command::Init(_) | Command::Serve(_) => unreachable!("handled by cli::run"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-manager: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = connect(&client_args)?;
        execute(&client, cmd, client_args.json).await
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(ClientError::Usage(msg)) => {
            eprintln!("tether-manager: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("tether-manager: {e}");
            ExitCode::FAILURE
        }
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

fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(e.to_string()))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n"
}

const NO_BODY: Option<&Value> = None;

async fn execute(c: &ApiClient, cmd: Command, as_json: bool) -> Result<String, ClientError> {
    let out = match cmd {
        Command::Token { cmd, .. } => token(c, cmd, as_json).await?,
        Command::Delegate { cmd, .. } => delegate(c, cmd, as_json).await?,
        Command::Account { cmd, .. } => account(c, cmd, as_json).await?,
        Command::AdminToken { cmd, .. } => admin_token(c, cmd, as_json).await?,
        Command::Restriction { cmd, .. } => restriction(c, cmd, as_json).await?,
        Command::Rotation { cmd, .. } => rotation(c, cmd, as_json).await?,
        Command::Audit { limit, .. } => {
            let v: Value = c.request(Method::GET, &format!("/api/v1/audit?limit={limit}"), NO_BODY).await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let rows: Vec<AuditDto> = decode(&v)?;
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|a| {
                    vec![
                        time(a.at),
                        a.actor,
                        a.action,
                        a.target,
                        a.source_ip.unwrap_or_else(|| "-".into()),
                        a.detail,
                    ]
                })
                .collect();
            render(&["WHEN", "WHO", "WHAT", "TARGET", "FROM", "DETAIL"], &rows)
        }
        Command::Init(_) | Command::Serve(_) => unreachable!("handled by cli::run"),
    };
    Ok(out)
}

fn token_rows(tokens: Vec<TokenDto>) -> String {
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
            ]
        })
        .collect();
    render(&["ID", "NAME", "STATE", "LIVE", "LAST USED", "EXPIRES", "CIDRS"], &rows)
}

async fn token(c: &ApiClient, cmd: TokenCmd, as_json: bool) -> Result<String, ClientError> {
    match cmd {
        TokenCmd::Create { name, account, expires_in, allow_cidrs } => {
            let body = CreateToken { name, expires_in_secs: expires_in, allowed_cidrs: allow_cidrs };
            let v: Value = c
                .request(Method::POST, &format!("/api/v1/accounts/{}/tokens", seg(&account)), Some(&body))
                .await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let created: CreatedToken = decode(&v)?;
            Ok(format!(
                "Created token {} ({}) in account {}.\nValue (shown once; use it as ACCOUNT_SECRET):\n{}\n",
                created.token.name,
                created.token.id,
                created.token.account_id,
                created.value.expose()
            ))
        }
        TokenCmd::List { account } => {
            let v: Value = c
                .request(Method::GET, &format!("/api/v1/accounts/{}/tokens", seg(&account)), NO_BODY)
                .await?;
            if as_json {
                return Ok(pretty(&v));
            }
            Ok(token_rows(decode(&v)?))
        }
        TokenCmd::Show { token, account } => {
            let v: Value = c
                .request(
                    Method::GET,
                    &format!("/api/v1/accounts/{}/tokens/{}", seg(&account), seg(&token)),
                    NO_BODY,
                )
                .await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let t: TokenDto = decode(&v)?;
            let mut out = token_rows(vec![t.clone()]);
            out.push_str(&format!("created {} by {}", time(t.created_at), t.created_by));
            if let Some(r) = t.rotation_id {
                out.push_str(&format!("; rotating (rotation {r})"));
            }
            out.push('\n');
            Ok(out)
        }
        TokenCmd::Revoke { token, account } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}/revoke", seg(&account), seg(&token));
            let v: Value = c.request(Method::POST, &path, NO_BODY).await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let r: RevokeResponse = decode(&v)?;
            Ok(format!(
                "Revoked token {} ({}); {} live session(s) closed.\n",
                r.token.name, r.token.id, r.sessions_closed
            ))
        }
        TokenCmd::Rotate { token, account, grace_secs, expires_in } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}/rotate", seg(&account), seg(&token));
            let body = RotateToken { grace_secs, expires_in_secs: expires_in };
            let v: Value = c.request(Method::POST, &path, Some(&body)).await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let r: RotateResponse = decode(&v)?;
            Ok(format!(
                "Rotation {} started: {} live delegate(s) sent the successor.\nOld token {} stays valid until {} at the latest.\nSuccessor {} (shown once):\n{}\nWatch it: tether-manager rotation show {}\n",
                r.rotation_id,
                r.delegates_notified,
                r.old_token_id,
                time(r.old_token_valid_until),
                r.token_id,
                r.token.expose(),
                r.rotation_id
            ))
        }
        TokenCmd::Delete { token, account } => {
            let path = format!("/api/v1/accounts/{}/tokens/{}", seg(&account), seg(&token));
            let _: Value = c.request(Method::DELETE, &path, NO_BODY).await?;
            if as_json {
                return Ok(pretty(&json!({"deleted": token})));
            }
            Ok(format!("Deleted token {token}.\n"))
        }
    }
}

async fn delegate(c: &ApiClient, cmd: DelegateCmd, as_json: bool) -> Result<String, ClientError> {
    match cmd {
        DelegateCmd::List { account } => {
            let path = match account {
                Some(a) => format!("/api/v1/delegates?account={}", seg(&a)),
                None => "/api/v1/delegates".into(),
            };
            let v: Value = c.request(Method::GET, &path, NO_BODY).await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let list: Vec<DelegateDto> = decode(&v)?;
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
            Ok(render(
                &["SESSION", "ACCOUNT", "NAME", "TOKEN", "IP", "VERSION", "CONNECTED", "LAST HEARTBEAT"],
                &rows,
            ))
        }
        DelegateCmd::Disconnect { session_id } => {
            let _: Value = c
                .request(Method::DELETE, &format!("/api/v1/delegates/{}", seg(&session_id)), NO_BODY)
                .await?;
            if as_json {
                return Ok(pretty(&json!({"disconnected": session_id})));
            }
            Ok(format!("Disconnected session {session_id}.\n"))
        }
        DelegateCmd::Ping { session_id, payload } => {
            let path = format!("/api/v1/delegates/{}/ping", seg(&session_id));
            let v: Value = c.request(Method::POST, &path, Some(&PingRequest { payload })).await?;
            if as_json {
                return Ok(pretty(&v));
            }
            let p: PingResponse = decode(&v)?;
            Ok(format!(
                "reply from {}: {} in {:.2} ms\n",
                p.session_id,
                if p.ok { "ok" } else { "failed" },
                p.rtt_ms
            ))
        }
    }
}

async fn account(c: &ApiClient, cmd: AccountCmd, as_json: bool) -> Result<String, ClientError> {
    let v: Value = match &cmd {
        AccountCmd::List => c.request(Method::GET, "/api/v1/accounts", NO_BODY).await?,
        AccountCmd::Create { id, name } => {
            let body = CreateAccount { id: id.clone(), name: name.clone() };
            c.request(Method::POST, "/api/v1/accounts", Some(&body)).await?
        }
        AccountCmd::Show { id } => {
            c.request(Method::GET, &format!("/api/v1/accounts/{}", seg(id)), NO_BODY).await?
        }
    };
    if as_json {
        return Ok(pretty(&v));
    }
    let rows = |list: Vec<AccountDto>| {
        let rows: Vec<Vec<String>> =
            list.into_iter().map(|a| vec![a.id, a.name, time(a.created_at), a.created_by]).collect();
        render(&["ID", "NAME", "CREATED", "BY"], &rows)
    };
    Ok(match cmd {
        AccountCmd::List => rows(decode(&v)?),
        AccountCmd::Show { .. } => rows(vec![decode(&v)?]),
        AccountCmd::Create { .. } => {
            let created: CreatedAccount = decode(&v)?;
            format!(
                "Created account {}.\nDefault token {} (shown once; use it as ACCOUNT_SECRET):\n{}\n",
                created.account.id,
                created.default_token.token.id,
                created.default_token.value.expose()
            )
        }
    })
}

async fn admin_token(c: &ApiClient, cmd: AdminTokenCmd, as_json: bool) -> Result<String, ClientError> {
    let v: Value = match &cmd {
        AdminTokenCmd::List => c.request(Method::GET, "/api/v1/admin-tokens", NO_BODY).await?,
        AdminTokenCmd::Create { name, scopes, expires_in, allow_cidrs, account, restriction } => {
            let body = CreateAdminToken {
                name: name.clone(),
                scopes: scopes.clone(),
                expires_in_secs: *expires_in,
                allowed_cidrs: allow_cidrs.clone(),
                account: account.clone(),
                restriction: restriction.clone(),
            };
            c.request(Method::POST, "/api/v1/admin-tokens", Some(&body)).await?
        }
        AdminTokenCmd::Revoke { id } => {
            c.request(Method::POST, &format!("/api/v1/admin-tokens/{}/revoke", seg(id)), NO_BODY).await?
        }
    };
    if as_json {
        return Ok(pretty(&v));
    }
    let rows = |list: Vec<AdminTokenDto>| {
        let rows: Vec<Vec<String>> = list
            .into_iter()
            .map(|t| {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
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
        render(&["ID", "NAME", "STATE", "SCOPES", "ACCOUNT", "RESTRICTION", "EXPIRES", "LAST USED"], &rows)
    };
    Ok(match cmd {
        AdminTokenCmd::List => rows(decode(&v)?),
        AdminTokenCmd::Revoke { .. } => rows(vec![decode(&v)?]),
        AdminTokenCmd::Create { .. } => {
            let created: CreatedAdminToken = decode(&v)?;
            format!(
                "Created admin token {} ({}).\nValue (shown once; use it as TETHER_ADMIN_TOKEN):\n{}\n",
                created.admin_token.name,
                created.admin_token.id,
                created.value.expose()
            )
        }
    })
}

async fn restriction(c: &ApiClient, cmd: RestrictionCmd, as_json: bool) -> Result<String, ClientError> {
    let v: Value = match &cmd {
        RestrictionCmd::List => c.request(Method::GET, "/api/v1/restrictions", NO_BODY).await?,
        RestrictionCmd::Create { name, allow } => {
            let body = CreateRestriction { name: name.clone(), allow: allow.clone() };
            c.request(Method::POST, "/api/v1/restrictions", Some(&body)).await?
        }
        RestrictionCmd::Delete { name } => {
            let _: Value =
                c.request(Method::DELETE, &format!("/api/v1/restrictions/{}", seg(name)), NO_BODY).await?;
            if as_json {
                return Ok(pretty(&json!({"deleted": name})));
            }
            return Ok(format!("Deleted restriction {name}.\n"));
        }
    };
    if as_json {
        return Ok(pretty(&v));
    }
    let list: Vec<RestrictionDto> = match cmd {
        RestrictionCmd::List => decode(&v)?,
        _ => vec![decode(&v)?],
    };
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
    Ok(render(&["ID", "NAME", "ALLOWS", "BY"], &rows))
}

async fn rotation(c: &ApiClient, cmd: RotationCmd, as_json: bool) -> Result<String, ClientError> {
    let (v, single): (Value, bool) = match &cmd {
        RotationCmd::List => (c.request(Method::GET, "/api/v1/rotations", NO_BODY).await?, false),
        RotationCmd::Show { id } => {
            (c.request(Method::GET, &format!("/api/v1/rotations/{}", seg(id)), NO_BODY).await?, true)
        }
    };
    if as_json {
        return Ok(pretty(&v));
    }
    let list: Vec<RotationDto> = if single { vec![decode(&v)?] } else { decode(&v)? };
    let mut out = render(
        &["ID", "ACCOUNT", "OLD TOKEN", "NEW TOKEN", "STATE", "STARTED", "DEADLINE", "DELEGATES"],
        &list
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
            .collect::<Vec<_>>(),
    );
    if let (true, Some(r)) = (single, list.first()) {
        out.push('\n');
        out.push_str(&render(
            &["DELEGATE", "INSTANCE", "STATE", "OUTCOME", "DETAIL"],
            &r.delegates
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
                .collect::<Vec<_>>(),
        ));
    }
    Ok(out)
}
