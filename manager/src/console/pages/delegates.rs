//! `/ui/delegates`: the live delegates the caller may see, filtered by account, name and token,
//! refreshing live; disconnect and ping (the round trip shown). Through `crate::api::delegates`
//! (and `crate::api::tokens` for the tokens' names).
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use uuid::Uuid;

use super::{app, body, contains_ci, filled, json};
use crate::api::auth::Scope;
use crate::api::extract::{Body, Path as ApiPath, Query as ApiQuery};
use crate::api::{delegates as rest, tokens as rest_tokens};
use crate::clock::now_unix;
use crate::console::auth::{Action, Signed};
use crate::console::view::{self, may, Section};
use crate::console::Console;

/// The filters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// Only this account's.
    #[serde(default)]
    pub account: Option<String>,
    /// Only names (or hosts) containing this.
    #[serde(default)]
    pub name: Option<String>,
    /// Only on tokens whose name or id contains this.
    #[serde(default)]
    pub token: Option<String>,
}

/// `GET /ui/delegates`.
pub async fn list(State(console): State<Console>, signed: Signed, Query(q): Query<ListQuery>) -> Response {
    let caller = signed.caller.clone();
    let account = filled(q.account.as_deref()).map(str::to_owned);
    let query = match body(serde_json::json!({ "account": account })) {
        Ok(query) => query,
        Err(e) => return signed.error(e, "/ui/delegates"),
    };
    let all = match json(rest::list(app(&console), caller.clone(), ApiQuery(query)).await) {
        Ok(d) => d,
        Err(e) => return signed.error(e, "/ui/delegates"),
    };
    // Token names, where the caller may read the tokens of the delegates' accounts.
    let mut token_names: HashMap<Uuid, String> = HashMap::new();
    if may(&caller, Scope::TokensRead) {
        let mut accounts: Vec<&str> = all.iter().map(|d| d.account_id.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        for a in accounts.into_iter().take(50) {
            if let Ok(tokens) =
                json(rest_tokens::list(app(&console), caller.clone(), ApiPath(a.to_owned())).await)
            {
                token_names.extend(tokens.into_iter().map(|t| (t.id, t.name)));
            }
        }
    }
    let name = q.name.unwrap_or_default();
    let token = q.token.unwrap_or_default();
    let rows: Vec<_> = all
        .iter()
        .filter(|d| {
            contains_ci(&d.name, name.trim())
                || (!name.trim().is_empty() && contains_ci(&d.host, name.trim()))
        })
        .filter(|d| {
            contains_ci(&d.token_id.to_string(), token.trim())
                || token_names.get(&d.token_id).is_some_and(|n| contains_ci(n, token.trim()))
        })
        .collect();
    let now = now_unix();
    let writer = may(&caller, Scope::DelegatesWrite);
    let body = html! {
        form class="panel" method="get" action="/ui/delegates" role="search" {
            div class="fields" {
                div { label for="f-account" { "Account" } input type="text" id="f-account" name="account" value=(account.as_deref().unwrap_or_default()); }
                div { label for="f-name" { "Name or host" } input type="search" id="f-name" name="name" value=(name); }
                div { label for="f-token" { "Token (name or id)" } input type="search" id="f-token" name="token" value=(token); }
                div { button type="submit" class="secondary" { "Filter" } }
            }
        }
        section id="delegates-live" data-refresh="3" aria-live="polite" {
            p class="muted" { (rows.len()) " of " (all.len()) " live delegates." }
            div class="table-wrap" {
                table {
                    caption class="skip" { "Live delegates" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Account" } th scope="col" { "Token" }
                        th scope="col" { "Instance" } th scope="col" { "Address" } th scope="col" { "Version" }
                        th scope="col" { "Connected since" } th scope="col" { "Last heartbeat" }
                        @if writer { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for d in &rows {
                            tr {
                                td { (d.name) br; span class="muted" { (d.host) } }
                                td { code { (d.account_id) } }
                                td { a href={ "/ui/accounts/" (d.account_id) "/tokens/" (d.token_id) } {
                                    (token_names.get(&d.token_id).cloned().unwrap_or_else(|| d.token_id.to_string())) } }
                                td { code { (d.instance) } }
                                td { code { (d.ip) } }
                                td { (d.version) }
                                td { (view::when(d.connected_at, now)) }
                                td { (view::when(d.last_heartbeat, now)) }
                                @if writer {
                                    td { div class="actions" {
                                        form class="inline" method="post" action={ "/ui/delegates/" (d.session_id) "/ping" } {
                                            (view::csrf_field(&signed.csrf))
                                            button type="submit" class="secondary" aria-label={ "Ping " (d.name) } { "Ping" }
                                        }
                                        form class="inline" method="post" action={ "/ui/delegates/" (d.session_id) "/disconnect" } {
                                            (view::csrf_field(&signed.csrf))
                                            button type="submit" class="danger" aria-label={ "Disconnect " (d.name) } { "Disconnect" }
                                        }
                                    } }
                                }
                            }
                        }
                        @if rows.is_empty() { tr { td colspan="9" class="muted" { "No live delegate matches." } } }
                    }
                }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, "Delegates", Section::Delegates), body))
}

/// `POST /ui/delegates/{session_id}/disconnect`.
pub async fn disconnect(
    State(console): State<Console>,
    Path(session_id): Path<String>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    let signed = action.signed;
    match rest::disconnect(app(&console), signed.caller.clone(), ApiPath(session_id)).await {
        Ok(_) => {
            signed.notify(
                &console,
                false,
                "Delegate disconnected (it will reconnect unless its token is revoked).",
            );
            Redirect::to("/ui/delegates").into_response()
        }
        Err(e) => signed.fail(&console, e, "/ui/delegates"),
    }
}

/// `POST /ui/delegates/{session_id}/ping`: the round trip as a notice.
pub async fn ping(
    State(console): State<Console>,
    Path(session_id): Path<String>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    let signed = action.signed;
    let request = match body(serde_json::json!({ "payload": "console" })) {
        Ok(r) => r,
        Err(e) => return signed.fail(&console, e, "/ui/delegates"),
    };
    match json(rest::ping(app(&console), signed.caller.clone(), ApiPath(session_id), Body(request)).await) {
        Ok(reply) => {
            let outcome = if reply.ok { "answered" } else { "answered with an error" };
            signed.notify(&console, !reply.ok, format!("Ping {outcome}: round trip {:.1} ms.", reply.rtt_ms));
            Redirect::to("/ui/delegates").into_response()
        }
        Err(e) => signed.fail(&console, e, "/ui/delegates"),
    }
}
