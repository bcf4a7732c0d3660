//! `/ui/admin-tokens` (the `admin` scope only): list, create with scopes, expiry, networks and
//! an account binding (the value shown once), revoke. Through `crate::api::admin_tokens`, so
//! the same no-escalation rules hold ([`crate::api::access::grant`]).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use zeroize::Zeroizing;

use super::{app, body, cidr_list, duration_field, duration_secs, filled, json};
use crate::api::admin_tokens as rest;
use crate::api::auth::{Scope, SCOPES};
use crate::api::extract::{Body, Path as ApiPath};
use crate::clock::now_unix;
use crate::console::auth::{Action, Signed};
use crate::console::session::Flash;
use crate::console::view::{self, Section};
use crate::console::Console;

/// `GET /ui/admin-tokens`.
pub async fn list(State(console): State<Console>, signed: Signed) -> Response {
    let tokens = match json(rest::list(app(&console), signed.caller.clone()).await) {
        Ok(t) => t,
        Err(e) => return signed.error(e, "/ui/"),
    };
    let now = now_unix();
    let bound = signed.caller.account.clone();
    let body = html! {
        div class="table-wrap" {
            table {
                caption class="skip" { "Admin tokens" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Account" } th scope="col" { "State" }
                    th scope="col" { "Last used" } th scope="col" { "Created" } th scope="col" { "Expires" }
                    th scope="col" { "Allowed networks" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) @if t.id == signed.caller.id { " " span class="muted" { "(you)" } } }
                            td { code { (t.scopes.join(" ")) } }
                            td { (t.account_id.as_deref().unwrap_or("all")) }
                            td { @if t.revoked_at.is_some() { (view::badge("revoked")) }
                                 @else if t.expires_at.is_some_and(|e| e <= now) { (view::badge("expired")) }
                                 @else { (view::badge("active")) } }
                            td { (view::when_opt(t.last_used_at, now, "never")) }
                            td { (view::when(t.created_at, now)) br; span class="muted" { "by " (t.created_by) } }
                            td { (view::when_opt(t.expires_at, now, "never")) }
                            td { @if t.allowed_cidrs.is_empty() { span class="muted" { "anywhere" } } @else { code { (t.allowed_cidrs.join(", ")) } } }
                            td {
                                @if t.revoked_at.is_none() {
                                    form class="inline" method="post" action={ "/ui/admin-tokens/" (t.id) "/revoke" } {
                                        (view::csrf_field(&signed.csrf))
                                        button type="submit" class="danger" aria-label={ "Revoke admin token " (t.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New admin token" }
        form class="panel" method="post" action="/ui/admin-tokens" {
            (view::csrf_field(&signed.csrf))
            div class="fields" {
                div { label for="admin-name" { "Name" } input type="text" id="admin-name" name="name" required autocomplete="off"; }
                div {
                    fieldset {
                        legend { "Scopes" }
                        @for scope in SCOPES {
                            label { input type="checkbox" name="scopes" value=(scope) checked[*scope == Scope::TokensRead.as_str()]; (scope) }
                        }
                    }
                }
                (duration_field("expires", "Expires in", "empty: as your own token", "days"))
                div { label for="admin-cidrs" { "Allowed networks" span class="hint" { "CIDRs, comma separated; empty: as your own" } }
                    input type="text" id="admin-cidrs" name="cidrs" autocomplete="off"; }
                div { label for="admin-account" { "Bound to account" span class="hint" { @if bound.is_some() { "yours" } @else { "empty: all accounts" } } }
                    input type="text" id="admin-account" name="account" autocomplete="off" value=(bound.as_deref().unwrap_or_default()) readonly[bound.is_some()]; }
                div { button type="submit" { "Create admin token" } }
            }
            p class="hint" { "A new token never has more power than yours. The value is shown once, on the next page." }
        }
    };
    view::respond(
        StatusCode::OK,
        view::page(signed.shell(&console, "Admin tokens", Section::AdminTokens), body),
    )
}

/// The new-admin-token form (scopes are read from the repeated fields).
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
    account: Option<String>,
}

/// `POST /ui/admin-tokens`.
pub async fn create(State(console): State<Console>, action: Action<CreateForm>) -> Response {
    let Action { signed, form, fields } = action;
    let back = "/ui/admin-tokens";
    let request = duration_secs(form.expires.as_deref(), form.expires_unit.as_deref()).and_then(|expires| {
        body(serde_json::json!({
            "name": form.name.trim(),
            "scopes": fields.all("scopes"),
            "expires_in_secs": expires,
            "allowed_cidrs": cidr_list(form.cidrs.as_deref()),
            "account": filled(form.account.as_deref()),
        }))
    });
    let request = match request {
        Ok(r) => r,
        Err(e) => return signed.fail(&console, e, back),
    };
    let created = match rest::create(app(&console), signed.caller.clone(), Body(request)).await {
        Ok((_, axum::Json(c))) => c,
        Err(e) => return signed.fail(&console, e, back),
    };
    let flash = Flash::new(
        format!("Admin token {} created", created.admin_token.name),
        None,
        created.admin_token.name.clone(),
        back.to_owned(),
        Zeroizing::new(created.value.expose().to_owned()),
        now_unix(),
    );
    super::secret::redirect_to(&console, &signed, flash)
}

/// `POST /ui/admin-tokens/{admin_token}/revoke`.
pub async fn revoke(
    State(console): State<Console>,
    Path(admin_token): Path<String>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    let signed = action.signed;
    match json(rest::revoke(app(&console), signed.caller.clone(), ApiPath(admin_token)).await) {
        Ok(row) => {
            // Its browser sessions end now (each request checks the token again anyway).
            console.sessions.end_all_of(row.id);
            signed.notify(&console, false, format!("Admin token `{}` revoked.", row.name));
            Redirect::to("/ui/admin-tokens").into_response()
        }
        Err(e) => signed.fail(&console, e, "/ui/admin-tokens"),
    }
}
