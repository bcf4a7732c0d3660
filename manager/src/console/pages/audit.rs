//! `/ui/audit`: the audit log, newest first, filtered by actor, action, target and time range,
//! [`PAGE`] entries a page. Through `crate::api::audit` (which needs the `admin` scope and a
//! token bound to no account), read in pages of 1,000 and filtered here.
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{app, body, contains_ci, filled, json};
use crate::api::audit as rest;
use crate::api::dto::AuditDto;
use crate::api::error::AppError;
use crate::api::extract::Query as ApiQuery;
use crate::clock::now_unix;
use crate::console::auth::Signed;
use crate::console::view::{self, Section};
use crate::console::Console;

/// Entries shown per page.
pub const PAGE: usize = 50;
/// Most entries read for one page (the rest is reached with "Older").
pub const SCAN: usize = 10_000;

/// The filters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuditQuery {
    /// The actor contains this.
    #[serde(default)]
    pub actor: Option<String>,
    /// The action contains this.
    #[serde(default)]
    pub action: Option<String>,
    /// The target contains this.
    #[serde(default)]
    pub target: Option<String>,
    /// At or after (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM`, UTC).
    #[serde(default)]
    pub from: Option<String>,
    /// Before (same forms).
    #[serde(default)]
    pub to: Option<String>,
    /// Only entries older than this id (the next page).
    #[serde(default)]
    pub before: Option<String>,
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm); `None` before 1970.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days >= 0).then_some(days)
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (UTC) as unix seconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
    {
        return None;
    }
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute) = (t.next()??, t.next()??);
    let second = t.next().map_or(Some(0), |s| s)?;
    if t.next().is_some()
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..60).contains(&second)
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// `GET /ui/audit`.
pub async fn list(State(console): State<Console>, signed: Signed, Query(q): Query<AuditQuery>) -> Response {
    let field = |v: &Option<String>| filled(v.as_deref()).unwrap_or_default().to_owned();
    let (actor, action, target) = (field(&q.actor), field(&q.action), field(&q.target));
    let (from_text, to_text) = (field(&q.from), field(&q.to));
    let from = if from_text.is_empty() { None } else { parse_time(&from_text) };
    let to = if to_text.is_empty() { None } else { parse_time(&to_text) };
    if (!from_text.is_empty() && from.is_none()) || (!to_text.is_empty() && to.is_none()) {
        return signed.error(
            AppError::BadRequest("invalid time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)".into()),
            "/ui/audit",
        );
    }
    let mut before = filled(q.before.as_deref()).and_then(|b| b.parse::<i64>().ok());
    let keep = |e: &AuditDto| {
        contains_ci(&e.actor, &actor)
            && contains_ci(&e.action, &action)
            && contains_ci(&e.target, &target)
            && from.is_none_or(|f| e.at >= f)
            && to.is_none_or(|t| e.at < t)
    };
    let mut shown: Vec<AuditDto> = Vec::new();
    let mut scanned = 0;
    let mut next: Option<i64> = None;
    'scan: while scanned < SCAN {
        let query = match body(serde_json::json!({ "limit": 1000, "before": before })) {
            Ok(query) => query,
            Err(e) => return signed.error(e, "/ui/"),
        };
        let page = match json(rest::list(app(&console), signed.caller.clone(), ApiQuery(query)).await) {
            Ok(p) => p,
            Err(e) => return signed.error(e, "/ui/"),
        };
        let full = page.len() == 1000;
        for entry in page {
            scanned += 1;
            before = Some(entry.id);
            // Entries are newest first: once older than `from`, nothing later matches.
            if from.is_some_and(|f| entry.at < f) {
                next = None;
                break 'scan;
            }
            if keep(&entry) {
                shown.push(entry);
                if shown.len() == PAGE {
                    next = before;
                    break 'scan;
                }
            }
        }
        next = if full { before } else { None };
        if !full {
            break;
        }
    }
    let now = now_unix();
    let older = next.map(|id| {
        let mut pairs = vec![("before", id.to_string())];
        for (k, v) in [
            ("actor", &actor),
            ("action", &action),
            ("target", &target),
            ("from", &from_text),
            ("to", &to_text),
        ] {
            if !v.is_empty() {
                pairs.push((k, v.clone()));
            }
        }
        format!("/ui/audit?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
    });
    let body = html! {
        form class="panel" method="get" action="/ui/audit" role="search" {
            div class="fields" {
                div { label for="a-actor" { "Actor" span class="hint" { "e.g. admin:ops" } } input type="search" id="a-actor" name="actor" value=(actor); }
                div { label for="a-action" { "Action" span class="hint" { "e.g. token.revoke" } } input type="search" id="a-action" name="action" value=(action); }
                div { label for="a-target" { "Target" span class="hint" { "e.g. token:acme/…" } } input type="search" id="a-target" name="target" value=(target); }
                div { label for="a-from" { "From (UTC)" } input type="datetime-local" id="a-from" name="from" value=(from_text); }
                div { label for="a-to" { "Until (UTC)" } input type="datetime-local" id="a-to" name="to" value=(to_text); }
                div { button type="submit" class="secondary" { "Filter" } }
            }
        }
        div class="table-wrap" {
            table {
                caption class="skip" { "Audit log" }
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "From" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in &shown {
                        tr {
                            td class="num" { (e.id) }
                            td { (view::when(e.at, now)) }
                            td { (e.actor) }
                            td { code { (e.action) } }
                            td { code { (e.target) } }
                            td { (e.source_ip.as_deref().unwrap_or("-")) }
                            td { (e.detail) }
                        }
                    }
                    @if shown.is_empty() { tr { td colspan="7" class="muted" { "No entries match." } } }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            a href="/ui/audit" { "Newest" }
            @if let Some(older) = &older { a href=(older) { "Older →" } }
        }
    };
    view::respond(StatusCode::OK, view::page(signed.shell(&console, "Audit log", Section::Audit), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_and_nonsense_does_not() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2026-12-06T16:30"), Some(1_796_574_600));
        assert_eq!(parse_time("2026-12-06T16:30:01"), Some(1_796_574_601));
        for bad in [
            "",
            "2026-13-01",
            "2026-12-06T25:00",
            "x",
            "2026-12",
            "1969-12-31",
            "2026-12-06T16:30:01:00",
            "２０２６-01-01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
