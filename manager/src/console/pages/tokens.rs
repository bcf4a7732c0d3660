//! An account's tokens (`/ui/accounts/{account}`) and one token's page: its live delegates and
//! its history; creating (value shown once, with an optional rotation policy), revoking (after a confirmation that names how many
//! live delegates will be cut), rotating and deleting. Through `crate::api::tokens`,
//! `crate::api::delegates` and `crate::api::audit`.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use zeroize::Zeroizing;

use super::{app, body, cidr_list, contains_ci, duration_field, duration_secs, filled, json};
use crate::api::auth::Scope;
use crate::api::dto::{AuditDto, DelegateDto, TokenDto};
use crate::api::error::AppError;
use crate::api::extract::{Body, Path as ApiPath, Query as ApiQuery};
use crate::api::{
    accounts as rest_accounts, audit as rest_audit, delegates as rest_delegates, tokens as rest,
};
use crate::clock::now_unix;
use crate::console::auth::{Action, Signed};
use crate::console::session::Flash;
use crate::console::view::{self, may, may_read_audit, Section};
use crate::console::Console;

/// The token list's filters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// Only names containing this.
    #[serde(default)]
    pub q: Option<String>,
    /// Show revoked tokens too (`1`).
    #[serde(default)]
    pub revoked: Option<String>,
}

/// A token's rotation policy in words, with its next rotation.
fn policy(t: &TokenDto, now: u64) -> Markup {
    match &t.rotation_policy {
        None => html! { span class="muted" { "none" } },
        Some(p) => html! {
            "every " (view::span(p.every_secs))
            @if let Some(g) = p.grace_secs { ", grace " (view::span(g)) }
            @if let Some(next) = t.next_rotation_at { br; span class="muted" { "next " (view::age(next, now)) } }
        },
    }
}

fn token_href(t: &TokenDto) -> String {
    format!("/ui/accounts/{}/tokens/{}", t.account_id, t.id)
}

/// `GET /ui/accounts/{account}`.
pub async fn list(
    State(console): State<Console>,
    signed: Signed,
    Path(account): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let caller = signed.caller.clone();
    let shown = match json(rest_accounts::show(app(&console), caller.clone(), ApiPath(account.clone())).await)
    {
        Ok(a) => a,
        Err(e) => return signed.error(e, "/ui/accounts"),
    };
    let tokens = match json(rest::list(app(&console), caller.clone(), ApiPath(account.clone())).await) {
        Ok(t) => t,
        Err(e) => return signed.error(e, "/ui/accounts"),
    };
    let search = q.q.unwrap_or_default();
    let with_revoked = q.revoked.as_deref() == Some("1");
    let revoked_count = tokens.iter().filter(|t| t.revoked_at.is_some()).count();
    let rows: Vec<&TokenDto> = tokens
        .iter()
        .filter(|t| with_revoked || t.revoked_at.is_none())
        .filter(|t| contains_ci(&t.name, search.trim()))
        .collect();
    let now = now_unix();
    let writer = may(&caller, Scope::TokensWrite);
    let title = format!("Tokens of {}", shown.name);
    let body = html! {
        p class="muted" { "Account " code { (shown.id) } ". Created " (view::when(shown.created_at, now)) " by " (shown.created_by) "." }
        form class="panel" method="get" action={ "/ui/accounts/" (account) } role="search" {
            div class="fields" {
                div { label for="q" { "Search by name" } input type="search" id="q" name="q" value=(search); }
                div { label { input type="checkbox" name="revoked" value="1" checked[with_revoked];
                        " Show revoked (" (revoked_count) ")" } }
                div { button type="submit" class="secondary" { "Filter" } }
            }
        }
        section id="tokens-live" data-refresh="5" aria-live="polite" {
            div class="table-wrap" {
                table {
                    caption class="skip" { "Tokens" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "State" }
                        th scope="col" { "Live delegates" } th scope="col" { "Last used" } th scope="col" { "Created" }
                        th scope="col" { "Expires" } th scope="col" { "Allowed networks" } th scope="col" { "Rotation policy" }
                        th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for t in &rows {
                            tr {
                                td { a href=(token_href(t)) { (t.name) } }
                                td { code { (t.id) } }
                                td { (view::badge(&t.state)) @if let Some(r) = t.rotation_id { " " a href={ "/ui/rotations/" (r) } { "rotation" } } }
                                td class="num" { (t.live_delegates) }
                                td { (view::when_opt(t.last_used_at, now, "never")) }
                                td { (view::when(t.created_at, now)) br; span class="muted" { "by " (t.created_by) } }
                                td { (view::when_opt(t.expires_at, now, "never")) }
                                td { @if t.allowed_cidrs.is_empty() { span class="muted" { "anywhere" } } @else { code { (t.allowed_cidrs.join(", ")) } } }
                                td { (policy(t, now)) }
                                td { (row_actions(t, writer, &signed.csrf)) }
                            }
                        }
                        @if rows.is_empty() { tr { td colspan="10" class="muted" { "No tokens match." } } }
                    }
                }
            }
        }
        @if writer {
            h2 { "New token" }
            form class="panel" method="post" action={ "/ui/accounts/" (account) "/tokens" } {
                (view::csrf_field(&signed.csrf))
                div class="fields" {
                    div { label for="token-name" { "Name" span class="hint" { "letters, digits, . _ -" } }
                        input type="text" id="token-name" name="name" required autocomplete="off"; }
                    (duration_field("expires", "Expires in", "empty: never", "days"))
                    div { label for="cidrs" { "Allowed networks" span class="hint" { "CIDRs, comma separated; empty: anywhere" } }
                        input type="text" id="cidrs" name="cidrs" autocomplete="off" placeholder="10.0.0.0/8"; }
                    (duration_field("rotate", "Rotate every", "empty: no rotation policy", "days"))
                    (duration_field("policy-grace", "Each rotation's grace", "empty: the manager's default", "minutes"))
                    div { button type="submit" { "Create token" } }
                }
                p class="hint" { "The value is shown once, on the next page." }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, &title, Section::Accounts), body))
}

fn row_actions(t: &TokenDto, writer: bool, csrf: &str) -> Markup {
    html! {
        div class="actions" {
            a href=(token_href(t)) { "Open" }
            @if writer && t.revoked_at.is_none() {
                a href={ (token_href(t)) "/revoke" } { "Revoke…" }
            }
            @if writer && t.revoked_at.is_some() {
                form class="inline" method="post" action={ (token_href(t)) "/delete" } {
                    (view::csrf_field(csrf))
                    button type="submit" class="secondary" aria-label={ "Delete " (t.name) } { "Delete" }
                }
            }
        }
    }
}

/// The new-token form.
#[derive(Debug, serde::Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default, rename = "expires-unit")]
    expires_unit: Option<String>,
    #[serde(default)]
    cidrs: Option<String>,
    #[serde(default)]
    rotate: Option<String>,
    #[serde(default, rename = "rotate-unit")]
    rotate_unit: Option<String>,
    #[serde(default, rename = "policy-grace")]
    policy_grace: Option<String>,
    #[serde(default, rename = "policy-grace-unit")]
    policy_grace_unit: Option<String>,
}

/// `POST /ui/accounts/{account}/tokens`.
pub async fn create(
    State(console): State<Console>,
    Path(account): Path<String>,
    action: Action<CreateForm>,
) -> Response {
    let Action { signed, form, .. } = action;
    let back = format!("/ui/accounts/{account}");
    let request = (|| {
        let expires = duration_secs(form.expires.as_deref(), form.expires_unit.as_deref())?;
        let every = duration_secs(form.rotate.as_deref(), form.rotate_unit.as_deref())?;
        let grace = duration_secs(form.policy_grace.as_deref(), form.policy_grace_unit.as_deref())?;
        let policy = every.map(|every| serde_json::json!({ "every_secs": every, "grace_secs": grace }));
        body(serde_json::json!({
            "name": form.name.trim(),
            "expires_in_secs": expires,
            "allowed_cidrs": cidr_list(form.cidrs.as_deref()),
            "rotation_policy": policy,
        }))
    })();
    let request = match request {
        Ok(r) => r,
        Err(e) => return signed.fail(&console, e, &back),
    };
    let created =
        match rest::create(app(&console), signed.caller.clone(), ApiPath(account.clone()), Body(request))
            .await
        {
            Ok((_, axum::Json(c))) => c,
            Err(e) => return signed.fail(&console, e, &back),
        };
    let flash = Flash::new(
        format!("Token {} created", created.token.name),
        Some(account.clone()),
        created.token.name.clone(),
        token_href(&created.token),
        Zeroizing::new(created.value.expose().to_owned()),
        now_unix(),
    );
    super::secret::redirect_to(&console, &signed, flash)
}

async fn token(console: &Console, signed: &Signed, account: &str, token: &str) -> Result<TokenDto, AppError> {
    json(
        rest::show(app(console), signed.caller.clone(), ApiPath((account.to_owned(), token.to_owned())))
            .await,
    )
}

async fn delegates_of(
    console: &Console,
    signed: &Signed,
    t: &TokenDto,
) -> Result<Vec<DelegateDto>, AppError> {
    let query = body(serde_json::json!({ "account": t.account_id }))?;
    let all = json(rest_delegates::list(app(console), signed.caller.clone(), ApiQuery(query)).await)?;
    Ok(all.into_iter().filter(|d| d.token_id == t.id).collect())
}

/// How many audit entries the token page reads looking for the token's history.
const HISTORY_SCAN: usize = 5_000;

/// The audit entries on `target`, newest first, from the newest [`HISTORY_SCAN`] entries.
async fn history(console: &Console, signed: &Signed, target: &str) -> Result<Vec<AuditDto>, AppError> {
    let mut found = Vec::new();
    let mut before: Option<i64> = None;
    let mut scanned = 0;
    while scanned < HISTORY_SCAN {
        let query = body(serde_json::json!({ "limit": 1000, "before": before }))?;
        let page = json(rest_audit::list(app(console), signed.caller.clone(), ApiQuery(query)).await)?;
        scanned += page.len();
        let last = page.last().map(|e| e.id);
        found.extend(page.into_iter().filter(|e| e.target == target));
        match last {
            Some(id) if scanned % 1000 == 0 => before = Some(id),
            _ => break,
        }
    }
    Ok(found)
}

/// `GET /ui/accounts/{account}/tokens/{token}`.
pub async fn show(
    State(console): State<Console>,
    signed: Signed,
    Path((account, token_ref)): Path<(String, String)>,
) -> Response {
    let back = format!("/ui/accounts/{account}");
    let t = match token(&console, &signed, &account, &token_ref).await {
        Ok(t) => t,
        Err(e) => return signed.error(e, &back),
    };
    let caller = &signed.caller;
    let delegates = match may(caller, Scope::DelegatesRead) {
        true => match delegates_of(&console, &signed, &t).await {
            Ok(d) => Some(d),
            Err(e) => return signed.error(e, &back),
        },
        false => None,
    };
    let target = format!("token:{}/{}", t.account_id, t.id);
    let entries = match may_read_audit(caller) {
        true => match history(&console, &signed, &target).await {
            Ok(h) => Some(h),
            Err(e) => return signed.error(e, &back),
        },
        false => None,
    };
    let now = now_unix();
    let writer = may(caller, Scope::TokensWrite);
    let href = token_href(&t);
    let title = format!("Token {}", t.name);
    let body = html! {
        p { a href=(back) { "← Tokens of " (t.account_id) } }
        section id="token-live" data-refresh="3" aria-live="polite" {
            dl class="facts" {
                dt { "Id" } dd { code { (t.id) } }
                dt { "State" } dd id="token-state" { (view::badge(&t.state)) }
                dt { "Live delegates" } dd id="token-live-count" { (t.live_delegates) }
                dt { "Last used" } dd { (view::when_opt(t.last_used_at, now, "never")) }
                dt { "Created" } dd { (view::when(t.created_at, now)) " by " (t.created_by) }
                dt { "Expires" } dd { (view::when_opt(t.expires_at, now, "never")) }
                @if let Some(r) = t.revoked_at { dt { "Revoked" } dd { (view::when(r, now)) } }
                dt { "Allowed networks" } dd { @if t.allowed_cidrs.is_empty() { "anywhere" } @else { code { (t.allowed_cidrs.join(", ")) } } }
                dt { "Rotation policy" } dd id="token-policy" { (policy(&t, now)) }
                @if let Some(r) = t.rotation_id { dt { "Rotation" } dd { a href={ "/ui/rotations/" (r) } { "in progress" } } }
            }
            @if let Some(delegates) = &delegates {
                h2 { "Delegates connected with this token" }
                div class="table-wrap" {
                    table id="token-delegates" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Instance" } th scope="col" { "Address" }
                            th scope="col" { "Version" } th scope="col" { "Connected since" } th scope="col" { "Last heartbeat" } } }
                        tbody {
                            @for d in delegates {
                                tr {
                                    td { (d.name) br; span class="muted" { (d.host) } }
                                    td { code { (d.instance) } }
                                    td { code { (d.ip) } }
                                    td { (d.version) }
                                    td { (view::when(d.connected_at, now)) }
                                    td { (view::when(d.last_heartbeat, now)) }
                                }
                            }
                            @if delegates.is_empty() { tr { td colspan="6" class="muted" { "No live delegate." } } }
                        }
                    }
                }
            }
        }
        @if writer && t.revoked_at.is_none() {
            h2 { "Actions" }
            div class="actions" {
                form class="panel" method="post" action={ (href) "/rotate" } {
                    (view::csrf_field(&signed.csrf))
                    div class="fields" {
                        (duration_field("grace", "Grace window", "how long the old token stays valid; empty: the manager's default", "minutes"))
                        div { button type="submit" { "Rotate" } }
                    }
                }
                p { a class="button danger" href={ (href) "/revoke" } { "Revoke…" } }
            }
        }
        @if writer && t.revoked_at.is_some() {
            form class="panel" method="post" action={ (href) "/delete" } {
                (view::csrf_field(&signed.csrf))
                p { "This token is revoked. Deleting it removes it from the list; its history stays in the audit log." }
                button type="submit" class="danger" { "Delete token" }
            }
        }
        h2 { "History" }
        @match &entries {
            None => {
                p class="muted" { "The audit log needs an admin token with the admin scope that is bound to no account." }
            }
            Some(entries) => {
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "From" } th scope="col" { "Detail" } } }
                        tbody {
                            @for e in entries {
                                tr { td { (view::when(e.at, now)) } td { (e.actor) } td { code { (e.action) } }
                                     td { (e.source_ip.as_deref().unwrap_or("-")) } td { (e.detail) } }
                            }
                            @if entries.is_empty() { tr { td colspan="5" class="muted" { "No entries among the newest " (HISTORY_SCAN) " audit entries (the Audit page searches them all)." } } }
                        }
                    }
                }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, &title, Section::Accounts), body))
}

/// `GET /ui/accounts/{account}/tokens/{token}/revoke`: the confirmation step.
pub async fn confirm_revoke(
    State(console): State<Console>,
    signed: Signed,
    Path((account, token_ref)): Path<(String, String)>,
) -> Response {
    let back = format!("/ui/accounts/{account}");
    if let Err(e) = signed.caller.require(Scope::TokensWrite) {
        return signed.error(e, &back);
    }
    let t = match token(&console, &signed, &account, &token_ref).await {
        Ok(t) => t,
        Err(e) => return signed.error(e, &back),
    };
    let href = token_href(&t);
    let cut = match t.live_delegates {
        1 => "1 live delegate".to_owned(),
        n => format!("{n} live delegates"),
    };
    let title = format!("Revoke token {}?", t.name);
    let body = html! {
        p class="notice error" id="revoke-warning" {
            "Revoking " strong { (t.name) } " cuts " strong { (cut) } " at once: each is told the token is revoked and stops. "
            "This cannot be undone."
        }
        form method="post" action={ (href) "/revoke" } class="actions" {
            (view::csrf_field(&signed.csrf))
            button type="submit" class="danger" { "Revoke " (t.name) }
            a class="button secondary" href=(href) { "Cancel" }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, &title, Section::Accounts), body))
}

/// `POST /ui/accounts/{account}/tokens/{token}/revoke`.
pub async fn revoke(
    State(console): State<Console>,
    Path((account, token_ref)): Path<(String, String)>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    let signed = action.signed;
    let back = format!("/ui/accounts/{account}");
    let path = ApiPath((account.clone(), token_ref.clone()));
    match json(rest::revoke(app(&console), signed.caller.clone(), path).await) {
        Ok(r) => {
            signed.notify(
                &console,
                false,
                format!("Token `{}` revoked; live delegates cut: {}.", r.token.name, r.sessions_closed),
            );
            Redirect::to(&view::location(&token_href(&r.token))).into_response()
        }
        Err(e) => signed.fail(&console, e, &back),
    }
}

/// The rotate form.
#[derive(Debug, serde::Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    grace: Option<String>,
    #[serde(default, rename = "grace-unit")]
    grace_unit: Option<String>,
}

/// `POST /ui/accounts/{account}/tokens/{token}/rotate`: to the rotation's page.
pub async fn rotate(
    State(console): State<Console>,
    Path((account, token_ref)): Path<(String, String)>,
    action: Action<RotateForm>,
) -> Response {
    let Action { signed, form, .. } = action;
    let back = format!("/ui/accounts/{account}/tokens/{token_ref}");
    let request = duration_secs(form.grace.as_deref(), form.grace_unit.as_deref())
        .and_then(|grace| body(serde_json::json!({ "grace_secs": grace })));
    let request = match request {
        Ok(r) => r,
        Err(e) => return signed.fail(&console, e, &back),
    };
    let path = ApiPath((account.clone(), token_ref.clone()));
    let started = match rest::rotate(app(&console), signed.caller.clone(), path, Body(request)).await {
        Ok((_, axum::Json(r))) => r,
        Err(e) => return signed.fail(&console, e, &back),
    };
    signed.notify(
        &console,
        false,
        format!("Rotation started; delegates notified: {}.", started.delegates_notified),
    );
    let flash = Flash::new(
        "Successor token".to_owned(),
        Some(account.clone()),
        filled(Some(token_ref.as_str())).unwrap_or("token").to_owned(),
        format!("/ui/rotations/{}", started.rotation_id),
        Zeroizing::new(started.token.expose().to_owned()),
        now_unix(),
    );
    let flash = console.sessions.put_flash(&signed.session, flash, now_unix());
    let to = match flash {
        Some(f) => format!("/ui/rotations/{}?successor={}", started.rotation_id, f.as_str()),
        None => format!("/ui/rotations/{}", started.rotation_id),
    };
    Redirect::to(&to).into_response()
}

/// `POST /ui/accounts/{account}/tokens/{token}/delete`.
pub async fn delete(
    State(console): State<Console>,
    Path((account, token_ref)): Path<(String, String)>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    let signed = action.signed;
    let back = format!("/ui/accounts/{account}");
    let path = ApiPath((account.clone(), token_ref.clone()));
    match rest::delete(app(&console), signed.caller.clone(), path).await {
        Ok(_) => {
            signed.notify(&console, false, "Token deleted.");
            Redirect::to(&view::location(&format!("{back}?revoked=1"))).into_response()
        }
        Err(e) => signed.fail(&console, e, &back),
    }
}
