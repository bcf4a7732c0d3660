//! Signing in to the console and being signed in.
//!
//! Sign-in hands the presented admin token to the REST API's own authentication (the
//! [`Caller`] extractor, run on a request built here with the browser's address): the same
//! lookup by hash, the same revoked / expired / allowed-CIDR checks and the same per-address
//! lockout of failed admin authentication ([`crate::api::lockout`]); a failure also counts
//! against the address's failed-handshake limit of the delegate endpoint. Only then is a
//! session made ([`super::session`]); the cookie carries its random id and nothing else.
//!
//! Every later request ([`Signed`]) finds its session and reads its admin token again, so a
//! session ends as soon as the token is revoked or expires, or when it is used from an
//! address the token does not allow. Admin tokens with an endpoint restriction cannot sign
//! in: their rules name REST paths, and the console refuses what it cannot check.
//!
//! Forms: every POST must come from this origin (`Origin`, `Sec-Fetch-Site`) and carry the
//! session's CSRF token ([`Action`]); the sign-in form, before there is a session, carries a
//! token that must match a short-lived cookie (double submit).
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OriginalUri, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::session::{random_id, Current, Ended, Notice};
use super::view::{self, Section, Shell};
use super::Console;
use crate::api::auth::Caller;
use crate::api::error::AppError;
use crate::api::telemetry::CallerName;
use crate::clock::now_unix;
use crate::store::StoreOps;
use crate::validate::ip_allowed;

/// The session cookie.
pub const SESSION_COOKIE: &str = "tether_session";
/// The sign-in form's double-submit cookie.
pub const SIGNIN_COOKIE: &str = "tether_signin";
/// Largest form body the console reads.
pub const MAX_FORM: usize = 16 * 1024;

/// The value of cookie `name` in the request's `Cookie` headers (read as bytes: another
/// cookie that is not UTF-8 does not hide this one).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            std::str::from_utf8(value).ok()
        })
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    // The value is hex from `random_id` (or empty): always a valid header value.
    HeaderValue::from_str(&format!("{name}={value}; Path=/ui; HttpOnly; Secure; SameSite=Strict{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("tether_invalid=; Path=/ui; Max-Age=0"))
}

/// Why a browser is sent to the sign-in page, shown there (a fixed text per reason, so the
/// address carries nothing a third party could write onto the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedOut {
    /// Never signed in (or the manager restarted).
    NotSignedIn,
    /// The session ended by timeout.
    Timeout,
    /// The admin token was revoked.
    Revoked,
    /// The admin token expired.
    Expired,
    /// Signed out on request.
    SignedOut,
    /// The admin token may not be used from this address.
    NotFromHere,
}

impl SignedOut {
    fn code(self) -> &'static str {
        match self {
            Self::NotSignedIn => "none",
            Self::Timeout => "timeout",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::SignedOut => "out",
            Self::NotFromHere => "address",
        }
    }

    /// The reason of a `?why=` code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::NotSignedIn, Self::Timeout, Self::Revoked, Self::Expired, Self::SignedOut, Self::NotFromHere]
            .into_iter()
            .find(|r| r.code() == code)
    }

    /// What the sign-in page says.
    pub fn text(self) -> &'static str {
        match self {
            Self::NotSignedIn => "Sign in to continue.",
            Self::Timeout => "Your session ended; sign in again.",
            Self::Revoked => "You were signed out: the admin token was revoked.",
            Self::Expired => "You were signed out: the admin token expired.",
            Self::SignedOut => "You are signed out.",
            Self::NotFromHere => "You were signed out: the admin token may not be used from this address.",
        }
    }

    fn redirect(self) -> Response {
        let mut response = Redirect::to(&format!("/ui/sign-in?why={}", self.code())).into_response();
        response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
        response
    }
}

fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// A signed-in request: the caller as the REST API would see it, and its session.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The admin token's caller (scopes, account binding, address).
    pub caller: Caller,
    /// The cookie value (for notices and flashes of this session).
    pub session: Zeroizing<String>,
    /// The session's CSRF token, for the page's forms.
    pub csrf: Zeroizing<String>,
}

impl Signed {
    /// The page shell for this caller, taking the waiting notice.
    pub fn shell<'a>(&'a self, console: &Console, title: &'a str, section: Section) -> Shell<'a> {
        Shell {
            title,
            section,
            caller: Some(&self.caller),
            csrf: Some(self.csrf.as_str()),
            notice: console.sessions.take_notice(&self.session),
        }
    }

    /// Leaves a notice for the next page.
    pub fn notify(&self, console: &Console, error: bool, text: impl Into<String>) {
        console.sessions.notify(&self.session, Notice { error, text: text.into() });
    }

    /// An error page for this caller.
    pub fn error(&self, error: AppError, back: &str) -> Response {
        let message = error.to_string();
        // Answered as the API would (which logs an internal error's detail), shown as a page.
        let status = error.into_response().status();
        view::error_page(status, &message, back, Some(&self.caller), Some(&self.csrf))
    }

    /// After an action: the error as a notice on `back`, or the page itself when it is the
    /// answer to a form that must be corrected.
    pub fn fail(&self, console: &Console, error: AppError, back: &str) -> Response {
        let message = error.to_string();
        let _ = error.into_response(); // logs an internal error's detail, as the API does
        self.notify(console, true, message);
        Redirect::to(&view::location(back)).into_response()
    }
}

impl FromRequestParts<Console> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let now = now_unix();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE).map(|v| Zeroizing::new(v.to_owned())) else {
            return Err(SignedOut::NotSignedIn.redirect());
        };
        let Current { admin_token_id, csrf } = match console.sessions.touch(&id, now) {
            Ok(current) => current,
            Err(Ended::Unknown) => return Err(SignedOut::NotSignedIn.redirect()),
            Err(Ended::Idle | Ended::Absolute) => return Err(SignedOut::Timeout.redirect()),
        };
        let ip = peer_ip(parts);
        let row = match console.app.store.find_admin_token(&admin_token_id.to_string()).await {
            Ok(row) => row,
            Err(e) => {
                return Err(view::error_page(
                    AppError::from(e).into_response().status(),
                    "the store is unavailable; try again",
                    "/ui/",
                    None,
                    None,
                ))
            }
        };
        let ended = match &row {
            None => Some(SignedOut::Revoked),
            Some(r) if r.revoked_at.is_some() => Some(SignedOut::Revoked),
            Some(r) if r.expires_at.is_some_and(|e| e <= now) => Some(SignedOut::Expired),
            Some(r) if !ip.map_or(r.allowed_cidrs.is_empty(), |ip| ip_allowed(&r.allowed_cidrs, ip)) => {
                Some(SignedOut::NotFromHere)
            }
            Some(r) if r.restriction_id.is_some() => Some(SignedOut::NotSignedIn),
            Some(_) => None,
        };
        let (Some(row), None) = (row, ended) else {
            console.sessions.end(&id);
            return Err(ended.unwrap_or(SignedOut::NotSignedIn).redirect());
        };
        if let Some(name) = parts.extensions.get::<CallerName>() {
            name.set(&row.name);
        }
        let caller = Caller {
            id: row.id,
            name: row.name,
            scopes: row.scopes,
            ip,
            account: row.account_id,
            restriction: None,
            expires_at: row.expires_at,
            allowed_cidrs: row.allowed_cidrs,
        };
        Ok(Self { caller, session: id, csrf })
    }
}

/// Refuses a POST that a page of another origin sent: `Sec-Fetch-Site` must say
/// `same-origin` when the browser sends it; otherwise a real `Origin` must be this host (the
/// `Host` header, or the request's authority under HTTP/2). Under `Referrer-Policy:
/// no-referrer` a browser sends `Origin: null` for a form, so that value decides nothing; the
/// CSRF token is checked in every case.
fn same_origin(parts: &Parts) -> bool {
    let headers = &parts.headers;
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).filter(|o| *o != "null");
    let Some(origin) = origin else { return true };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    origin.strip_prefix("https://").is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
}

/// The fields of a posted form, in order (repeated names kept, e.g. checkboxes).
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

/// A form posted by a signed-in browser of this origin with its session's CSRF token: the
/// caller, the form as `T` and as its raw fields.
#[derive(Debug)]
pub struct Action<T> {
    /// Who posted it.
    pub signed: Signed,
    /// The form.
    pub form: T,
    /// Every field as posted.
    pub fields: Fields,
}

impl<T: DeserializeOwned + Send> FromRequest<Console> for Action<T> {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, console).await?;
        let refuse = |message: &str| {
            view::error_page(StatusCode::FORBIDDEN, message, "/ui/", Some(&signed.caller), Some(&signed.csrf))
        };
        if !same_origin(&parts) {
            return Err(refuse("refused: this form was not sent from the console's own pages"));
        }
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| refuse("refused: the form is too large or was not received whole"))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| refuse("refused: the form could not be read"))?;
        let fields = Fields(fields);
        let presented = fields.get("_csrf").unwrap_or_default();
        if !console.sessions.csrf_matches(&signed.session, presented) {
            return Err(refuse("refused: the form's CSRF token is missing or does not match your session; reload the page and try again"));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            view::error_page(
                StatusCode::BAD_REQUEST,
                &format!("the form is not valid: {}", tether_protocol::text::bounded(&e.to_string(), 200)),
                "/ui/",
                Some(&signed.caller),
                Some(&signed.csrf),
            )
        })?;
        Ok(Self { signed, form, fields })
    }
}

/// `GET /ui/`: the first page for who is signed in.
pub async fn home(signed: Result<Signed, Response>) -> Response {
    match signed {
        Ok(signed) => Redirect::to(view::first_page(&signed.caller)).into_response(),
        Err(_) => Redirect::to("/ui/sign-in").into_response(),
    }
}

/// The sign-in page's query.
#[derive(Debug, serde::Deserialize)]
pub struct SignInQuery {
    /// Why the browser was sent here.
    #[serde(default)]
    pub why: Option<String>,
}

fn sign_in_page(status: StatusCode, message: Option<Notice>) -> Response {
    let token = random_id();
    let body = html! {
        div class="signin" {
            p { "Sign in with an admin token (" code { "tat_…" } "). Its scopes, expiry and allowed networks apply here as in the REST API." }
            form class="panel" method="post" action="/ui/sign-in" {
                (view::csrf_field(&token))
                label for="token" { "Admin token" }
                input type="password" id="token" name="token" required autocomplete="off" spellcheck="false" autofocus;
                p { button type="submit" { "Sign in" } }
            }
            p class="muted" { "The first admin token is printed once by " code { "tether-manager init" } "; with the Docker quick start, by " code { "bash docker/up.sh" } "." }
        }
    };
    let shell =
        Shell { title: "Sign in", section: Section::SignIn, caller: None, csrf: None, notice: message };
    let mut response = view::respond(status, view::page(shell, body));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, &token, Some(3_600)));
    response
}

/// `GET /ui/sign-in`.
pub async fn sign_in_form(axum::extract::Query(q): axum::extract::Query<SignInQuery>) -> Response {
    let notice = q.why.as_deref().and_then(SignedOut::from_code).map(|r| Notice {
        error: !matches!(r, SignedOut::SignedOut | SignedOut::NotSignedIn),
        text: r.text().into(),
    });
    sign_in_page(StatusCode::OK, notice)
}

/// The sign-in form.
#[derive(serde::Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

impl std::fmt::Debug for SignInForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInForm { token: [redacted] }")
    }
}

/// `POST /ui/sign-in`: the token goes through the REST API's authentication; a session is made.
pub async fn sign_in(State(console): State<Console>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let fail =
        |text: &str| sign_in_page(StatusCode::UNAUTHORIZED, Some(Notice { error: true, text: text.into() }));
    if !same_origin(&parts) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some(Notice {
                error: true,
                text: "refused: the sign-in form was not sent from this console".into(),
            }),
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return fail("The sign-in form could not be read.");
    };
    let bytes = Zeroizing::new(bytes.to_vec());
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&bytes) else {
        return fail("The sign-in form could not be read.");
    };
    let expected = cookie(&parts.headers, SIGNIN_COOKIE).unwrap_or_default();
    let matches = !expected.is_empty()
        && expected.len() == form.csrf.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), form.csrf.as_bytes()));
    if !matches {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some(Notice {
                error: true,
                text: "The sign-in form expired or was not sent from this console; try again.".into(),
            }),
        );
    }
    // A failed sign-in counts against this address twice: in the admin lockout (inside the
    // REST API's authentication below) and in the failed-handshake limit of the delegate
    // endpoint, so guessing through the console costs what guessing through either does.
    let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if ip.is_some_and(|ip| console.app.limiter.is_limited(ip, now_unix())) {
        return sign_in_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Notice {
                error: true,
                text: "Too many failed attempts from this address; try again later.".into(),
            }),
        );
    }
    // The REST API's own authentication, on a request carrying this browser's address.
    let mut auth = Request::builder().method(Method::POST).uri("/ui/sign-in");
    let presented = Zeroizing::new(form.token);
    let bearer = Zeroizing::new(format!("Bearer {}", presented.trim()));
    // A value that is no header (control characters) is malformed: counted as a failure there.
    let value = HeaderValue::from_str(&bearer).unwrap_or_else(|_| HeaderValue::from_static("Bearer -"));
    auth = auth.header(header::AUTHORIZATION, value);
    let Ok(auth) = auth.body(Body::empty()) else { return fail("The sign-in form could not be read.") };
    let (mut auth, _) = auth.into_parts();
    auth.extensions.insert(OriginalUri("/ui/sign-in".parse().unwrap_or_default()));
    if let Some(connect) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        auth.extensions.insert(*connect);
    }
    if let Some(lockout) = parts.extensions.get::<std::sync::Arc<crate::api::lockout::AdminLockout>>() {
        auth.extensions.insert(lockout.clone());
    }
    let caller = match Caller::from_request_parts(&mut auth, &console.app).await {
        Ok(caller) => caller,
        Err(e) => {
            let message = match &e {
                AppError::Unauthorized(_) => {
                    if let Some(ip) = ip {
                        console.app.limiter.record_failure(ip, now_unix());
                    }
                    format!("Sign-in failed: {e}. Check the token; nothing was changed.")
                }
                _ => format!("Sign-in failed: {e}."),
            };
            let status = e.into_response().status();
            return sign_in_page(status, Some(Notice { error: true, text: message }));
        }
    };
    if caller.restriction.is_some() {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some(Notice {
                error: true,
                text: "This admin token has an endpoint restriction, which names REST paths only; it cannot sign in to the console. Use it with the REST API or the CLI.".into(),
            }),
        );
    }
    if let Some(name) = parts.extensions.get::<CallerName>() {
        name.set(&caller.name);
    }
    let now = now_unix();
    if let Err(e) = super::audit_console(&console, &caller, "console.sign_in", now).await {
        return view::error_page(
            AppError::from(e).into_response().status(),
            "the sign-in could not be recorded; try again",
            "/ui/sign-in",
            None,
            None,
        );
    }
    let session = console.sessions.create(caller.id, now);
    tracing::info!(admin_token = %caller.name, "console sign-in");
    let mut response = Redirect::to(view::first_page(&caller)).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &session, None));
    h.append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, "", Some(0)));
    response
}

/// `POST /ui/sign-out`.
pub async fn sign_out(State(console): State<Console>, action: Action<serde::de::IgnoredAny>) -> Response {
    let signed = action.signed;
    let _ = super::audit_console(&console, &signed.caller, "console.sign_out", now_unix()).await;
    console.sessions.end(&signed.session);
    SignedOut::SignedOut.redirect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; tether_session_x=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes("b=é; tether_session=abc".as_bytes()).expect("a header"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let parts = |headers: &[(&'static str, &'static str)]| {
            let mut request = Request::builder().uri("/ui/accounts");
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            request.body(Body::empty()).map(|r| r.into_parts().0).expect("a request")
        };
        let host = ("host", "127.0.0.1:8443");
        assert!(same_origin(&parts(&[host])), "no Origin (an older client): the CSRF token decides");
        assert!(same_origin(&parts(&[host, ("origin", "https://127.0.0.1:8443")])));
        assert!(!same_origin(&parts(&[host, ("origin", "https://evil.example")])));
        assert!(!same_origin(&parts(&[("origin", "https://127.0.0.1:8443")])), "no host known: refused");
        let cross = [host, ("origin", "https://127.0.0.1:8443"), ("sec-fetch-site", "cross-site")];
        assert!(!same_origin(&parts(&cross)));
        assert!(same_origin(&parts(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&parts(&[host, ("origin", "null"), ("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn sign_out_reasons_round_trip_and_unknown_codes_are_ignored() {
        for r in [SignedOut::Revoked, SignedOut::Expired, SignedOut::Timeout, SignedOut::NotFromHere] {
            assert_eq!(SignedOut::from_code(r.code()), Some(r));
        }
        assert_eq!(SignedOut::from_code("<script>"), None);
    }
}
