//! `/ui/accounts`: the accounts the caller may see (with their live delegates), and creating
//! one (its default token's value shown once). Through `crate::api::accounts`.
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use zeroize::Zeroizing;

use super::{app, body, filled, json};
use crate::api::accounts as rest;
use crate::api::auth::Scope;
use crate::api::dto::CreatedAccount;
use crate::api::extract::Body;
use crate::clock::now_unix;
use crate::console::auth::{Action, Signed};
use crate::console::session::Flash;
use crate::console::view::{self, may, Section};
use crate::console::Console;

/// `GET /ui/accounts`.
pub async fn list(State(console): State<Console>, signed: Signed) -> Response {
    let accounts = match json(rest::list(app(&console), signed.caller.clone()).await) {
        Ok(a) => a,
        Err(e) => return signed.error(e, "/ui/"),
    };
    let now = now_unix();
    // Live delegates on every replica of the set, counted per account.
    let mut live: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    match console.app.cluster.sessions(&console.app.registry, None).await {
        Ok(sessions) => sessions.into_iter().for_each(|s| *live.entry(s.account_id).or_default() += 1),
        Err(e) => tracing::warn!(error = %e, "cannot read the cluster's sessions for the accounts page"),
    }
    let may_create = may(&signed.caller, Scope::Admin) && signed.caller.account.is_none();
    let body = html! {
        div class="table-wrap" {
            table {
                caption class="skip" { "Accounts" }
                thead { tr { th scope="col" { "Account" } th scope="col" { "Name" } th scope="col" { "Live delegates" }
                    th scope="col" { "Created" } th scope="col" { "Created by" } } }
                tbody {
                    @for a in &accounts {
                        tr {
                            td { a href={ "/ui/accounts/" (a.id) } { code { (a.id) } } }
                            td { (a.name) }
                            td class="num" { (live.get(&a.id).copied().unwrap_or(0)) }
                            td { (view::when(a.created_at, now)) }
                            td { (a.created_by) }
                        }
                    }
                    @if accounts.is_empty() { tr { td colspan="5" class="muted" { "No accounts." } } }
                }
            }
        }
        @if may_create {
            h2 { "New account" }
            form class="panel" method="post" action="/ui/accounts" {
                (view::csrf_field(&signed.csrf))
                div class="fields" {
                    div { label for="account-id" { "Account id" span class="hint" { "letters, digits, . _ -" } }
                        input type="text" id="account-id" name="id" required autocomplete="off"; }
                    div { label for="account-name" { "Display name" span class="hint" { "optional" } }
                        input type="text" id="account-name" name="name" autocomplete="off"; }
                    div { button type="submit" { "Create account" } }
                }
                p class="hint" { "The account gets a token named " code { "default" } "; its value is shown once." }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, "Accounts", Section::Accounts), body))
}

/// The new-account form.
#[derive(Debug, serde::Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

/// `POST /ui/accounts`.
pub async fn create(State(console): State<Console>, action: Action<CreateForm>) -> Response {
    let Action { signed, form, .. } = action;
    let request =
        match body(serde_json::json!({ "id": form.id.trim(), "name": filled(Some(form.name.as_str())) })) {
            Ok(r) => r,
            Err(e) => return signed.fail(&console, e, "/ui/accounts"),
        };
    let created: CreatedAccount =
        match rest::create(app(&console), signed.caller.clone(), Body(request)).await {
            Ok((_, axum::Json(c))) => c,
            Err(e) => return signed.fail(&console, e, "/ui/accounts"),
        };
    let account = created.account.id.clone();
    signed.notify(&console, false, format!("Account `{account}` created."));
    let flash = Flash::new(
        format!("Account {account} created: its default token"),
        Some(account.clone()),
        created.default_token.token.name.clone(),
        format!("/ui/accounts/{account}"),
        Zeroizing::new(created.default_token.value.expose().to_owned()),
        now_unix(),
    );
    super::secret::redirect_to(&console, &signed, flash)
}
