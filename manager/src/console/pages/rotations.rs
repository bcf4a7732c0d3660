//! `/ui/rotations`: the rotations the caller may see, and one rotation's page with each
//! delegate's progress (pending → acked → reconnected, outcome, detail), refreshing live while
//! it runs. Through `crate::api::rotations`.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{app, json, word};
use crate::api::extract::Path as ApiPath;
use crate::api::rotations as rest;
use crate::clock::now_unix;
use crate::console::auth::Signed;
use crate::console::view::{self, Section};
use crate::console::Console;

/// `GET /ui/rotations`.
pub async fn list(State(console): State<Console>, signed: Signed) -> Response {
    let rotations = match json(rest::list(app(&console), signed.caller.clone()).await) {
        Ok(r) => r,
        Err(e) => return signed.error(e, "/ui/"),
    };
    let now = now_unix();
    let body = html! {
        section id="rotations-live" data-refresh="5" {
            div class="table-wrap" {
                table {
                    caption class="skip" { "Rotations" }
                    thead { tr {
                        th scope="col" { "Rotation" } th scope="col" { "Account" } th scope="col" { "State" }
                        th scope="col" { "Delegates moved" } th scope="col" { "Started" } th scope="col" { "Old token valid until" }
                        th scope="col" { "Finished" }
                    } }
                    tbody {
                        @for r in &rotations {
                            tr {
                                td { a href={ "/ui/rotations/" (r.id) } { code { (r.id) } } }
                                td { code { (r.account_id) } }
                                td { (view::badge(&word(&r.state))) }
                                td class="num" { (r.delegates.iter().filter(|d| d.moved).count()) " / " (r.delegates.len()) }
                                td { (view::when(r.started_at, now)) br; span class="muted" { "by " (r.started_by) } }
                                td { (view::when(r.deadline, now)) }
                                td { (view::when_opt(r.finished_at, now, "running")) }
                            }
                        }
                        @if rotations.is_empty() { tr { td colspan="7" class="muted" { "No rotations." } } }
                    }
                }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, "Rotations", Section::Rotations), body))
}

/// The rotation page's query.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ShowQuery {
    /// The one-time link to the successor's value, right after the rotation started here.
    #[serde(default)]
    pub successor: Option<String>,
}

/// `GET /ui/rotations/{rotation_id}`.
pub async fn show(
    State(console): State<Console>,
    signed: Signed,
    Path(rotation_id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let r = match json(rest::show(app(&console), signed.caller.clone(), ApiPath(rotation_id)).await) {
        Ok(r) => r,
        Err(e) => return signed.error(e, "/ui/rotations"),
    };
    let now = now_unix();
    let state = word(&r.state);
    let running = r.finished_at.is_none();
    let title = format!("Rotation {}", r.id);
    let successor = q.successor.filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()));
    let body = html! {
        @if let Some(s) = &successor {
            p class="notice" { "The successor token's value is available once: "
                a href={ "/ui/secret/" (s) } { "show the successor's value" } "." }
        }
        section id="rotation-live" data-refresh=[running.then_some("2")] aria-live="polite" {
            dl class="facts" {
                dt { "State" } dd id="rotation-state" { (view::badge(&state)) }
                dt { "Account" } dd { a href={ "/ui/accounts/" (r.account_id) } { code { (r.account_id) } } }
                dt { "Old token" } dd { a href={ "/ui/accounts/" (r.account_id) "/tokens/" (r.old_token_id) } { code { (r.old_token_id) } } }
                dt { "New token" } dd { a href={ "/ui/accounts/" (r.account_id) "/tokens/" (r.new_token_id) } { code { (r.new_token_id) } } }
                dt { "Started" } dd { (view::when(r.started_at, now)) " by " (r.started_by) }
                dt { "Old token valid until" } dd { (view::when(r.deadline, now)) }
                dt { "Finished" } dd { (view::when_opt(r.finished_at, now, "running")) }
                dt { "Delegates moved" } dd id="rotation-moved" { (r.delegates.iter().filter(|d| d.moved).count()) " of " (r.delegates.len()) }
            }
            h2 { "Delegates" }
            div class="table-wrap" {
                table id="rotation-delegates" {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Instance" } th scope="col" { "Progress" }
                        th scope="col" { "Moved" } th scope="col" { "Outcome" } th scope="col" { "Detail" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for d in &r.delegates {
                            tr {
                                td { (d.name) }
                                td { code { (d.instance) } }
                                td { (view::badge(&word(&d.state))) }
                                td { @if d.moved { "yes" } @else { "not yet" } }
                                td { @if let Some(o) = &d.outcome { (word(o)) } @else { span class="muted" { "-" } } }
                                td { (d.detail.as_deref().unwrap_or("")) }
                                td { (view::when(d.updated_at, now)) }
                            }
                        }
                        @if r.delegates.is_empty() { tr { td colspan="7" class="muted" { "No delegate was connected with the old token." } } }
                    }
                }
            }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, &title, Section::Rotations), body))
}
