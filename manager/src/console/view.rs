//! The pages' shared parts, written with maud (compiled templates that escape every value
//! they interpolate): the page shell with its navigation, notices, times in UTC with their
//! age, state badges and the hidden CSRF field of every form.
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use tether_protocol::utc::UtcTime;

use super::session::Notice;
use crate::api::auth::{Caller, Scope};

/// The console's sections, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Sign-in (no navigation).
    SignIn,
    /// Accounts and their tokens.
    Accounts,
    /// Live delegates.
    Delegates,
    /// Rotations.
    Rotations,
    /// The audit log.
    Audit,
    /// Admin tokens.
    AdminTokens,
    /// An error page.
    Error,
}

/// What the page shell needs besides the body.
#[derive(Debug)]
pub struct Shell<'a> {
    /// The page title (also its `h1`).
    pub title: &'a str,
    /// Where in the navigation it is.
    pub section: Section,
    /// The signed-in caller, for the navigation and the sign-out form.
    pub caller: Option<&'a Caller>,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: Option<&'a str>,
    /// The outcome of the last action.
    pub notice: Option<Notice>,
}

/// Whether `caller` holds `scope` (or `admin`): a button it cannot use is not shown.
pub fn may(caller: &Caller, scope: Scope) -> bool {
    caller.require(scope).is_ok()
}

/// `target` made safe as a `Location`: every character but unreserved ones and `/?=&%` is
/// percent-encoded (UTF-8 bytes), so a path value holding a control character or non-ASCII
/// text still redirects (to a page that answers 404) instead of failing the response.
pub fn location(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for c in target.chars() {
        if c.is_ascii_alphanumeric() || "-._~/?=&%".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The first page for `caller`: the accounts, else the delegates (a token that may read
/// neither sees the accounts page say which scope it lacks).
pub fn first_page(caller: &Caller) -> &'static str {
    if !may(caller, Scope::TokensRead) && may(caller, Scope::DelegatesRead) {
        "/ui/delegates"
    } else {
        "/ui/accounts"
    }
}

/// Whether `caller` may read the cluster-wide audit log.
pub fn may_read_audit(caller: &Caller) -> bool {
    may(caller, Scope::Admin) && caller.account.is_none()
}

/// The hidden CSRF field of a form.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(csrf); }
}

/// A whole page.
pub fn page(shell: Shell<'_>, body: Markup) -> Markup {
    let nav = |section: Section, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(shell.section == section).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (shell.title) " · Tether console" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/ui/" { "Tether" }
                    @if let Some(caller) = shell.caller {
                        nav aria-label="Main" {
                            ul {
                                @if may(caller, Scope::TokensRead) { (nav(Section::Accounts, "/ui/accounts", "Accounts")) }
                                @if may(caller, Scope::DelegatesRead) { (nav(Section::Delegates, "/ui/delegates", "Delegates")) }
                                @if may(caller, Scope::TokensRead) { (nav(Section::Rotations, "/ui/rotations", "Rotations")) }
                                @if may_read_audit(caller) { (nav(Section::Audit, "/ui/audit", "Audit log")) }
                                @if may(caller, Scope::Admin) { (nav(Section::AdminTokens, "/ui/admin-tokens", "Admin tokens")) }
                            }
                        }
                        div class="who" {
                            span { "Signed in as " strong { (caller.name) } }
                            @if let Some(csrf) = shell.csrf {
                                form class="inline" method="post" action="/ui/sign-out" {
                                    (csrf_field(csrf))
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (shell.title) }
                    @if let Some(n) = &shell.notice {
                        p class={ "notice " (if n.error { "error" } else { "ok" }) } role=(if n.error { "alert" } else { "status" }) {
                            (n.text)
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A rendered page as a response with `status`.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// An error page for a signed-in caller (or none), with a link back.
pub fn error_page(
    status: StatusCode,
    message: &str,
    back: &str,
    caller: Option<&Caller>,
    csrf: Option<&str>,
) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::BAD_REQUEST => "Check the form",
        _ => "Something went wrong",
    };
    let body = html! {
        p class="notice error" role="alert" { (message) }
        p { a href=(back) { "Back" } }
    };
    respond(status, page(Shell { title, section: Section::Error, caller, csrf, notice: None }, body))
}

/// `unix` as `2026-12-06 16:30:01 UTC`.
pub fn utc(unix: u64) -> String {
    let t = UtcTime::from_unix(unix);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// A length of time in its largest whole unit: `30 d`, `12 h`, `15 min`, `45 s`.
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// How long ago (or ahead) `unix` is from `now`: `just now`, `3 min ago`, `in 2 h`.
pub fn age(unix: u64, now: u64) -> String {
    let (secs, past) = if unix <= now { (now - unix, true) } else { (unix - now, false) };
    let amount = match secs {
        0..=9 => return "just now".to_owned(),
        10..=59 => format!("{secs} s"),
        60..=3_599 => format!("{} min", secs / 60),
        3_600..=86_399 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A time cell: the UTC time and its age.
pub fn when(unix: u64, now: u64) -> Markup {
    html! {
        time datetime=(tether_protocol::utc::rfc3339(unix)) { (utc(unix)) }
        " " span class="muted" { "(" (age(unix, now)) ")" }
    }
}

/// [`when`], or a dash for none.
pub fn when_opt(unix: Option<u64>, now: u64, none: &str) -> Markup {
    match unix {
        Some(t) => when(t, now),
        None => html! { span class="muted" { (none) } },
    }
}

/// A state badge.
pub fn badge(state: &str) -> Markup {
    let class: String = state
        .chars()
        .map(|c| if c == '_' { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    html! { span class={ "state state-" (class) } { (state) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_hold_no_control_character_or_raw_non_ascii() {
        assert_eq!(location("/ui/accounts/acme?revoked=1"), "/ui/accounts/acme?revoked=1");
        assert_eq!(location("/ui/accounts/\n\r/tokens"), "/ui/accounts/%0A%0D/tokens");
        assert_eq!(location("/ui/accounts/é x"), "/ui/accounts/%C3%A9%20x");
        assert!(axum::http::HeaderValue::from_str(&location("/ui/\u{0}\u{7f}ü\u{202e}")).is_ok());
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(100, 100), "just now");
        assert_eq!(age(100, 130), "30 s ago");
        assert_eq!(age(0, 180), "3 min ago");
        assert_eq!(age(0, 7_200), "2 h ago");
        assert_eq!(age(0, 3 * 86_400), "3 d ago");
        assert_eq!(age(7_200, 0), "in 2 h");
        assert_eq!(utc(1_796_574_601), "2026-12-06 16:30:01 UTC");
        assert_eq!(span(30 * 86_400), "30 d");
        assert_eq!(span(90 * 60), "90 min");
        assert_eq!(span(61), "61 s");
    }

    #[test]
    fn interpolated_values_are_escaped() {
        let markup = html! { p { ("<script>alert(1)</script>") } };
        assert_eq!(markup.into_string(), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
        assert_eq!(badge("x\"><b").into_string(), "<span class=\"state state-xb\">x&quot;&gt;&lt;b</span>");
    }
}
