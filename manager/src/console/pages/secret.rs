//! `/ui/secret/{flash}`: a new token's value, shown exactly once. The value waits in the
//! session ([`crate::console::session::Flash`]) from the form's answer to this page, which
//! takes it out: a reload, the back button or another tab finds only a note that it is gone.
//! Like every console page it is sent with `Cache-Control: no-store`, so it is neither cached
//! nor kept in the back/forward cache.
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

use crate::clock::now_unix;
use crate::console::auth::Signed;
use crate::console::view::{self, Section};
use crate::console::Console;

/// Keeps `flash` for one showing and answers with a redirect to the page that shows it.
pub fn redirect_to(console: &Console, signed: &Signed, flash: crate::console::session::Flash) -> Response {
    use axum::response::IntoResponse;
    match console.sessions.put_flash(&signed.session, flash, now_unix()) {
        Some(id) => axum::response::Redirect::to(&format!("/ui/secret/{}", id.as_str())).into_response(),
        None => crate::console::internal("the session ended before the new value could be kept"),
    }
}

/// `GET /ui/secret/{flash}`.
pub async fn show(
    State(console): State<Console>,
    signed: Signed,
    Path(flash): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(flash) = console.sessions.take_flash(&signed.session, &flash, now_unix()) else {
        let body = html! {
            p { "This value was shown once and is no longer available: the manager does not keep it. "
                "If it was not copied, revoke the token and create a new one (or rotate it)." }
            p { a href="/ui/accounts" { "Back to the accounts" } }
        };
        return view::respond(
            StatusCode::GONE,
            view::page(signed.shell(&console, "Value no longer available", Section::Accounts), body),
        );
    };
    // The address delegates use to reach this manager: as this browser reached it.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("MANAGER_HOST:8443");
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(*c)).collect();
    let value = flash.value.as_str();
    let body = html! {
        div class="secret" {
            p { strong { "Copy it now: this value is shown only once." } " The manager keeps only what it needs to verify it; this page cannot be shown again." }
            p { "Value of " strong { (flash.name) } ":" }
            pre id="secret-value" class="mono" { (value) }
            p class="actions" {
                button type="button" class="secondary" data-copy="secret-value" hidden { "Copy to clipboard" }
            }
        }
        @if let Some(account) = &flash.account {
            h2 { "Ready to paste" }
            p { "The delegate's environment:" }
            pre id="env-lines" class="snippet" {
                "ACCOUNT_ID=" (account) "\nACCOUNT_SECRET=" (value) "\nMANAGER_HOST_AND_PORT=" (host)
            }
            button type="button" class="secondary" data-copy="env-lines" hidden { "Copy" }
            p { code { "docker run" } ":" }
            pre id="docker-run" class="snippet" {
                "docker run -d --name " (flash.name) " \\\n"
                "  -e ACCOUNT_ID=" (account) " \\\n"
                "  -e ACCOUNT_SECRET=" (value) " \\\n"
                "  -e MANAGER_HOST_AND_PORT=" (host) " \\\n"
                "  -e MANAGER_CA_CERT=/etc/tether/ca.pem -v /path/to/ca.pem:/etc/tether/ca.pem:ro \\\n"
                "  tether-delegate:latest"
            }
            button type="button" class="secondary" data-copy="docker-run" hidden { "Copy" }
            p { "Docker Compose:" }
            pre id="compose" class="snippet" {
                "services:\n  " (flash.name) ":\n    image: tether-delegate:latest\n    environment:\n"
                "      ACCOUNT_ID: " (account) "\n      ACCOUNT_SECRET: " (value) "\n"
                "      MANAGER_HOST_AND_PORT: " (host) "\n      MANAGER_CA_CERT: /etc/tether/ca.pem\n"
                "    volumes:\n      - ./ca.pem:/etc/tether/ca.pem:ro\n"
            }
            button type="button" class="secondary" data-copy="compose" hidden { "Copy" }
        }
        p { a href=(flash.back) { "Done" } }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, &flash.title, Section::Accounts), body))
}
