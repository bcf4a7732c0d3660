//! The web console in a real headless Chromium (WebDriver, `tether_tests::browser`), against
//! the real manager binary and a real delegate binary:
//!
//! - sign in; create a token (its value shown once: gone on reload and from back/forward); a
//!   delegate started with that value shows up live on the token page; rotate from the console
//!   and watch the rotation page reach `completed` as the delegate moves; revoke from the
//!   console (the confirmation names the live delegates cut): the delegate exits 78 and the
//!   page shows the token revoked with 0 live delegates; every action is in the audit log with
//!   the admin token's name and the browser's address;
//! - an under-scoped admin token sees read-only pages and the server refuses its forms posted
//!   directly; forged posts (no CSRF token, another origin) are refused; expired and revoked
//!   admin tokens' sessions are signed out; a bad sign-in says so and changes nothing;
//! - the secret scan covers every console page seen (but the one-time value pages) and the
//!   manager's log (tokens, admin tokens, session cookies, CSRF tokens): 0 hits.
//!
//! Screenshots of each main page go to `target/ui-screenshots/` (README's `docs/console/` holds
//! copies). Each test is bounded by [`TEST_LIMIT`].
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_protocol::Token;
use tether_tests::browser::{self, Browser};
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::{api_call, poll, Manager};
use tether_tests::secrets::{admin_needles, find_needles, token_needles};
use uuid::Uuid;

/// The whole of one test.
const TEST_LIMIT: Duration = Duration::from_secs(240);
/// One wait for state.
const LIMIT: Duration = Duration::from_secs(30);

/// Pages seen, for the secret scan: (label, HTML).
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    async fn keep(&mut self, b: &Browser, label: &str) -> Result<String> {
        let html = b.source().await?;
        self.0.push((label.to_owned(), html.clone()));
        Ok(html)
    }
}

async fn sign_in(b: &Browser, base: &str, admin_token: &str) -> Result<()> {
    b.goto(&format!("{base}/ui/sign-in")).await?;
    b.fill("#token", admin_token).await?;
    b.click("form[action='/ui/sign-in'] button[type=submit]").await?;
    match b.wait_url("the accounts page", |u| u.ends_with("/ui/accounts")).await {
        Ok(_) => Ok(()),
        Err(e) => bail!("{e:#}: {}", b.text("main").await?),
    }
}

async fn session_cookie(b: &Browser) -> Result<Option<String>> {
    Ok(b.client
        .get_all_cookies()
        .await?
        .into_iter()
        .find(|c| c.name() == "tether_session")
        .map(|c| c.value().to_owned()))
}

/// The hidden CSRF field's value on the current page.
async fn csrf(b: &Browser) -> Result<String> {
    let field = b.client.find(fantoccini::Locator::Css("input[name=_csrf]")).await?;
    field.attr("value").await?.context("the CSRF field has no value")
}

async fn audit(manager: &Manager) -> Result<Vec<Value>> {
    let (status, body) = manager.api(Method::GET, "/api/v1/audit?limit=1000", None).await?;
    ensure!(status == StatusCode::OK, "audit: {status} {body}");
    Ok(body.as_array().cloned().unwrap_or_default())
}

async fn run_bounded(test: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    if !browser::available() {
        bail!("chromium and chromedriver are not installed: run tests/run.sh, which installs them");
    }
    tokio::time::timeout(TEST_LIMIT, test).await.context("the test ran out of time")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rotate_and_revoke_a_token_in_the_browser() -> Result<()> {
    run_bounded(token_lifecycle()).await
}

async fn token_lifecycle() -> Result<()> {
    let manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let b = Browser::start(1280, 900).await?;
    let base = manager.url();
    let account = manager.init.account_id.clone();
    let admin = manager.init.admin_token.clone();
    let mut seen = Seen::default();

    // Sign in: `/ui/` sends a new browser to the sign-in page.
    b.goto(&format!("{base}/ui/")).await?;
    ensure!(
        b.url().await?.contains("/ui/sign-in"),
        "not sent to sign in: {} {}",
        b.url().await?,
        b.source().await?
    );
    seen.keep(&b, "sign-in").await?;
    b.screenshot("01-sign-in").await?;
    sign_in(&b, &base, &admin).await?;
    let cookies = b.client.get_all_cookies().await?;
    let session = cookies.iter().find(|c| c.name() == "tether_session").context("no session cookie")?;
    ensure!(
        session.http_only() == Some(true)
            && session.secure() == Some(true)
            && session.path() == Some("/ui")
            && format!("{:?}", session.same_site()) == "Some(Strict)",
        "session cookie attributes: {session:?}"
    );
    seen.keep(&b, "accounts").await?;
    b.screenshot("02-accounts").await?;

    // A new account: its default token's value is shown once.
    b.fill("#account-id", "console-acct").await?;
    b.click("form[action='/ui/accounts'] button[type=submit]").await?;
    b.wait_url("the account's value page", |u| u.contains("/ui/secret/")).await?;
    let account_token = Token::parse(b.text("#secret-value").await?.trim())
        .map_err(|e| anyhow::anyhow!("the account's default token: {e}"))?;
    b.goto(&format!("{base}/ui/accounts")).await?;
    ensure!(b.text("main").await?.contains("console-acct"), "the new account is not listed");

    // Create a token: the value is shown once.
    b.goto(&format!("{base}/ui/accounts/{account}")).await?;
    b.fill("#token-name", "console-e2e").await?;
    b.fill("#expires", "30").await?;
    b.fill("#rotate", "20").await?;
    b.click(&format!("form[action='/ui/accounts/{account}/tokens'] button[type=submit]")).await?;
    let secret_url = b.wait_url("the value's page", |u| u.contains("/ui/secret/")).await?;
    let value = b.text("#secret-value").await?;
    let token =
        Token::parse(value.trim()).map_err(|e| anyhow::anyhow!("the shown value is no token: {e}"))?;
    let snippet = b.text("#env-lines").await?;
    ensure!(snippet.contains(&format!("ACCOUNT_SECRET={}", value.trim())), "no ACCOUNT_SECRET= line");
    ensure!(b.has("#docker-run").await? && b.has("#compose").await?, "no docker run / compose snippets");
    ensure!(b.has("button[data-copy=secret-value]:not([hidden])").await?, "the copy button is not shown");
    b.screenshot("03-new-token-value-shown-once").await?;
    b.client.refresh().await?;
    let again = b.source().await?;
    ensure!(!again.contains(value.trim()), "the value is shown again on reload");
    ensure!(again.contains("no longer available"), "reload does not say the value is gone");
    b.goto(&format!("{base}/ui/accounts/{account}")).await?;
    b.client.back().await?;
    ensure!(b.url().await? == secret_url, "back did not return to the value's page");
    ensure!(!b.source().await?.contains(value.trim()), "the value came back from the back/forward cache");
    b.client.forward().await?;
    b.goto(&format!("{base}/ui/accounts/{account}?q=console")).await?;
    seen.keep(&b, "tokens").await?;
    b.screenshot("04-tokens").await?;

    // A delegate started with that value connects; the token page shows it live (no reload).
    let token_page = format!("{base}/ui/accounts/{account}/tokens/{}", token.id());
    b.goto(&token_page).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    let mut env = env_for(&manager, "console-delegate", &token.expose(), dir.path());
    env.retain(|(k, _)| k != "TETHER_APPLY_MODE");
    env.push(("ACCOUNT_SECRET_FILE".into(), file.display().to_string()));
    let mut delegate = Delegate::start(&env, &[])?;
    b.wait_for_text("the delegate on the token page (live refresh)", LIMIT, false, |t| {
        t.contains("console-delegate")
    })
    .await
    .with_context(|| delegate.log())?;
    ensure!(b.text("#token-live-count").await?.trim() == "1", "live count is not 1");
    let policy = b.text("#token-policy").await?;
    ensure!(policy.contains("every 20 d"), "the rotation policy is not shown: {policy}");
    seen.keep(&b, "token").await?;
    b.screenshot("05-token").await?;

    // Delegates page, and a ping from it.
    b.goto(&format!("{base}/ui/delegates")).await?;
    b.click("form[action$='/ping'] button").await?;
    poll::until("the ping's round trip", LIMIT, || async {
        Ok(b.text(".notice").await.is_ok_and(|n| n.contains("round trip")).then_some(()))
    })
    .await?;
    seen.keep(&b, "delegates").await?;
    b.screenshot("06-delegates").await?;

    // Rotate from the console: the rotation page reaches `completed` as the delegate moves.
    b.goto(&token_page).await?;
    b.fill("#grace", "5").await?;
    b.click("form[action$='/rotate'] button[type=submit]").await?;
    b.wait_url("the rotation's page", |u| u.contains("/ui/rotations/")).await?;
    poll::until("the rotation page to show completed", LIMIT, || async {
        Ok(b.text("#rotation-state").await?.contains("completed").then_some(()))
    })
    .await
    .with_context(|| delegate.log())?;
    seen.keep(&b, "rotation").await?;
    b.screenshot("07-rotation").await?;
    // The successor's value, once, from the link on the rotation page.
    b.click("a[href^='/ui/secret/']").await?;
    b.wait_url("the successor's value page", |u| u.contains("/ui/secret/")).await?;
    let successor = b.text("#secret-value").await?.trim().to_owned();
    let successor = Token::parse(&successor).map_err(|e| anyhow::anyhow!("successor: {e}"))?;
    b.goto(&format!("{base}/ui/rotations")).await?;
    seen.keep(&b, "rotations").await?;
    b.screenshot("08-rotations").await?;

    // Revoke the successor from the console: the confirmation names the delegate; it exits 78.
    let new_page = format!("{base}/ui/accounts/{account}/tokens/{}", successor.id());
    b.goto(&new_page).await?;
    b.wait_for_text("the delegate on its new token", LIMIT, true, |t| t.contains("console-delegate")).await?;
    b.click("a[href$='/revoke']").await?;
    b.wait_url("the confirmation", |u| u.ends_with("/revoke")).await?;
    let warning = b.text("#revoke-warning").await?;
    ensure!(warning.contains("1 live delegate"), "the confirmation does not name the delegate: {warning}");
    seen.keep(&b, "revoke-confirm").await?;
    b.screenshot("09-revoke-confirm").await?;
    b.click("form[action$='/revoke'] button.danger").await?;
    let (status, _) = delegate.wait_exit(LIMIT).await?;
    ensure!(status.code() == Some(78), "the delegate exited {status}: {}", delegate.log());
    b.goto(&new_page).await?;
    poll::until("the token page to show revoked with 0 live delegates", LIMIT, || async {
        let revoked = b.text("#token-state").await?.contains("revoked");
        Ok((revoked && b.text("#token-live-count").await?.trim() == "0").then_some(()))
    })
    .await?;
    seen.keep(&b, "token-revoked").await?;

    // Audit page and admin tokens page.
    b.goto(&format!("{base}/ui/audit?action=token.revoke")).await?;
    let filtered = b.text("table").await?;
    ensure!(
        filtered.contains("token.revoke") && !filtered.contains("token.create"),
        "the action filter: {filtered}"
    );
    b.goto(&format!("{base}/ui/audit?action=token")).await?;
    seen.keep(&b, "audit").await?;
    b.screenshot("10-audit").await?;
    // Admin tokens: create one (value once), then revoke it from the list.
    b.goto(&format!("{base}/ui/admin-tokens")).await?;
    b.fill("#admin-name", "console-made").await?;
    b.fill("#expires", "7").await?;
    b.click("form[action='/ui/admin-tokens'] button[type=submit]").await?;
    b.wait_url("the admin token's value page", |u| u.contains("/ui/secret/")).await?;
    let made = b.text("#secret-value").await?.trim().to_owned();
    ensure!(made.starts_with("tat_"), "no admin token shown");
    b.goto(&format!("{base}/ui/admin-tokens")).await?;
    seen.keep(&b, "admin-tokens").await?;
    b.screenshot("11-admin-tokens").await?;
    b.click("button[aria-label='Revoke admin token console-made']").await?;
    poll::until("the admin token revoked", LIMIT, || async {
        Ok(b.text(".notice").await.is_ok_and(|n| n.contains("console-made")).then_some(()))
    })
    .await?;
    let (status, _) =
        api_call(&manager.http(), &base, Method::GET, "/api/v1/accounts", Some(&made), None).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "the revoked admin token still works: {status}");
    // Readable at 320 px.
    b.client.set_window_size(320, 800).await?;
    b.goto(&format!("{base}/ui/accounts/{account}")).await?;
    seen.keep(&b, "tokens-narrow").await?;
    b.screenshot("12-tokens-320px").await?;

    // The secret scan needs the session's cookie and CSRF token; then sign out.
    let cookie = session_cookie(&b).await?.context("no session cookie")?;
    let csrf_token = csrf(&b).await?;
    b.click("form[action='/ui/sign-out'] button").await?;
    b.wait_url("the sign-in page", |u| u.contains("/ui/sign-in?why=out")).await?;
    b.goto(&format!("{base}/ui/accounts")).await?;
    ensure!(b.url().await?.contains("/ui/sign-in"), "still signed in after signing out");

    // Every action in the audit log, with the admin token's name and the browser's address.
    let entries = audit(&manager).await?;
    for action in [
        "console.sign_in",
        "console.sign_out",
        "account.create",
        "token.create",
        "token.rotate",
        "token.revoke",
        "admin_token.create",
        "admin_token.revoke",
    ] {
        let found = entries.iter().any(|e| {
            e["action"] == action
                && e["actor"].as_str().is_some_and(|a| a.starts_with("admin:"))
                && e["source_ip"] == "127.0.0.1"
        });
        ensure!(found, "no `{action}` entry by an admin token from 127.0.0.1: {entries:#?}");
    }

    // The secret scan: no page but the one-time ones, and no log line, holds a secret.
    let mut needles = token_needles(&token);
    needles.extend(token_needles(&successor));
    needles.extend(token_needles(&account_token));
    needles.extend(admin_needles(&admin));
    needles.extend(admin_needles(&made));
    for (label, html) in &seen.0 {
        let hits = find_needles(label, html, &needles);
        ensure!(hits.is_empty(), "a secret on a console page: {hits:?}");
        // The CSP forbids inline script and style; the pages have none to forbid.
        ensure!(!html.contains(" style=") && !html.contains("<style"), "{label}: inline style");
        let inline_script =
            html.split("<script").skip(1).any(|tag| !tag.split('>').next().unwrap_or("").contains("src="));
        ensure!(!inline_script, "{label}: inline script");
    }
    needles.push(cookie);
    needles.push(csrf_token);
    let hits = find_needles("manager log", &manager.logs(), &needles);
    ensure!(hits.is_empty(), "a secret in the manager's log: {hits:?}");
    for path in std::fs::read_dir(browser::screenshot_dir())? {
        let path = path?.path();
        ensure!(browser::is_png(&path), "{} is no PNG", path.display());
    }
    b.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_csrf_expiry_revocation_and_bad_sign_ins_in_the_browser() -> Result<()> {
    run_bounded(access()).await
}

async fn create_admin(
    manager: &Manager,
    name: &str,
    scopes: &[&str],
    extra: Value,
) -> Result<(Uuid, String)> {
    let mut body = json!({ "name": name, "scopes": scopes });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, v) = manager.api(Method::POST, "/api/v1/admin-tokens", Some(body)).await?;
    ensure!(status == StatusCode::CREATED, "admin token: {status} {v}");
    let id = v["admin_token"]["id"].as_str().context("no id")?.parse()?;
    Ok((id, v["value"].as_str().context("no value")?.to_owned()))
}

async fn access() -> Result<()> {
    let manager = Manager::start(&[]).await?;
    let b = Browser::start(1280, 900).await?;
    let base = manager.url();
    let account = manager.init.account_id.clone();
    let mut seen = Seen::default();
    let mut needles = admin_needles(&manager.init.admin_token);

    // The security headers of a page.
    let response = manager.http().get(format!("{base}/ui/sign-in")).send().await?;
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let csp = header("content-security-policy");
    ensure!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "CSP: {csp}"
    );
    ensure!(!csp.contains("unsafe-inline"), "CSP allows inline code: {csp}");
    ensure!(header("x-frame-options") == "DENY", "X-Frame-Options");
    ensure!(header("referrer-policy") == "no-referrer", "Referrer-Policy");
    ensure!(header("cache-control") == "no-store", "Cache-Control");

    // A bad token: a clear message, no session, nothing in the audit log.
    let before = audit(&manager).await?.len();
    b.goto(&format!("{base}/ui/sign-in")).await?;
    b.fill("#token", "tat_this-is-not-a-valid-admin-token-at-all").await?;
    b.click("form[action='/ui/sign-in'] button[type=submit]").await?;
    let message = poll::until("the failed sign-in's message", LIMIT, || async {
        Ok(b.text(".notice.error").await.ok().filter(|m| m.contains("Sign-in failed")))
    })
    .await?;
    ensure!(
        message.contains("Sign-in failed") && message.contains("unknown admin token"),
        "message: {message}"
    );
    ensure!(session_cookie(&b).await?.is_none(), "a failed sign-in set a session cookie");
    seen.keep(&b, "bad-sign-in").await?;
    b.screenshot("13-sign-in-failed").await?;
    ensure!(audit(&manager).await?.len() == before, "a failed sign-in changed the audit log");

    // An under-scoped token sees read-only pages…
    let (_, reader) =
        create_admin(&manager, "console-reader", &["tokens:read", "delegates:read"], json!({})).await?;
    needles.extend(admin_needles(&reader));
    sign_in(&b, &base, &reader).await?;
    ensure!(!b.has("form[action='/ui/accounts']").await?, "a reader sees the new-account form");
    ensure!(
        !b.has("a[href='/ui/admin-tokens']").await? && !b.has("a[href='/ui/audit']").await?,
        "admin links shown"
    );
    b.goto(&format!("{base}/ui/accounts/{account}")).await?;
    ensure!(!b.has("#token-name").await?, "a reader sees the new-token form");
    ensure!(!b.has("a[href$='/revoke']").await?, "a reader sees revoke links");
    seen.keep(&b, "reader-tokens").await?;
    b.screenshot("14-read-only-tokens").await?;
    b.goto(&format!("{base}/ui/delegates")).await?;
    ensure!(!b.has("form[action$='/disconnect']").await?, "a reader sees disconnect buttons");

    // …and the server refuses its forms anyway, posted directly with a valid CSRF token.
    let cookie = session_cookie(&b).await?.context("no session cookie")?;
    let reader_csrf = csrf(&b).await?;
    let http = manager.http();
    let post = |path: String, form: Vec<(&'static str, String)>, origin: &'static str| {
        let (http, cookie, base) = (http.clone(), cookie.clone(), base.clone());
        async move {
            let origin = if origin == "self" { base.clone() } else { origin.to_owned() };
            let response = http
                .post(format!("{base}{path}"))
                .header("cookie", format!("tether_session={cookie}"))
                .header("origin", origin)
                .form(&form)
                .send()
                .await?;
            let status = response.status();
            anyhow::Ok((status, response.text().await.unwrap_or_default()))
        }
    };
    let create = format!("/ui/accounts/{account}/tokens");
    // (The client follows the redirect back to the form's page, which shows the refusal.)
    let (status, page) =
        post(create.clone(), vec![("_csrf", reader_csrf.clone()), ("name", "forged".into())], "self").await?;
    ensure!(status == StatusCode::OK && page.contains("tokens:write"), "the refusal is not shown: {status}");
    let (status, _) =
        manager.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/forged"), None).await?;
    ensure!(status == StatusCode::NOT_FOUND, "an under-scoped form post created a token");

    // Forged posts: without the CSRF token, with another's, from another origin.
    let (status, _) = post(create.clone(), vec![("name", "forged".into())], "self").await?;
    ensure!(status == StatusCode::FORBIDDEN, "no CSRF token: {status}");
    let (status, _) =
        post(create.clone(), vec![("_csrf", "0".repeat(64)), ("name", "forged".into())], "self").await?;
    ensure!(status == StatusCode::FORBIDDEN, "a wrong CSRF token: {status}");
    let (status, _) = post(
        create.clone(),
        vec![("_csrf", reader_csrf.clone()), ("name", "forged".into())],
        "https://evil.example",
    )
    .await?;
    ensure!(status == StatusCode::FORBIDDEN, "another origin: {status}");
    // The session id and CSRF token belong in the browser (cookie, forms), never in the log.
    let mut log_only = vec![cookie, reader_csrf];

    // An expiring admin token's session ends when it expires; a revoked one's when revoked.
    let (_, expiring) =
        create_admin(&manager, "console-expiring", &["admin"], json!({ "expires_in_secs": 3 })).await?;
    needles.extend(admin_needles(&expiring));
    b.client.delete_all_cookies().await?;
    sign_in(&b, &base, &expiring).await?;
    b.wait_for_text("the expired admin token's session to end", LIMIT, true, |t| t.contains("expired"))
        .await?;
    ensure!(b.url().await?.contains("/ui/sign-in?why=expired"), "not signed out: {}", b.url().await?);
    seen.keep(&b, "expired").await?;

    let (revoked_id, revoked) = create_admin(&manager, "console-revoked", &["admin"], json!({})).await?;
    needles.extend(admin_needles(&revoked));
    sign_in(&b, &base, &revoked).await?;
    let (status, v) = manager
        .api(Method::POST, &format!("/api/v1/admin-tokens/{revoked_id}/revoke"), Some(json!({})))
        .await?;
    ensure!(status == StatusCode::OK, "revoke: {status} {v}");
    b.goto(&format!("{base}/ui/accounts")).await?;
    ensure!(b.url().await?.contains("/ui/sign-in?why=revoked"), "not signed out: {}", b.url().await?);
    ensure!(b.text(".notice").await?.contains("revoked"), "no message");
    seen.keep(&b, "revoked").await?;

    // With JavaScript off the pages still work: sign in, create a token, see its value once
    // (only the copy buttons, which need the script, stay hidden).
    let plain = Browser::start_without_javascript(1024, 800).await?;
    sign_in(&plain, &base, &manager.init.admin_token).await?;
    plain.goto(&format!("{base}/ui/accounts/{account}")).await?;
    plain.fill("#token-name", "no-script").await?;
    plain.click(&format!("form[action='/ui/accounts/{account}/tokens'] button[type=submit]")).await?;
    plain.wait_url("the value's page", |u| u.contains("/ui/secret/")).await?;
    let shown = plain.text("#secret-value").await?;
    ensure!(Token::parse(shown.trim()).is_ok(), "no token shown without JavaScript");
    ensure!(!plain.has("button[data-copy]:not([hidden])").await?, "a copy button without its script");
    plain.close().await?;

    // Failed sign-ins count against the address's admin lockout, like failed bearer tokens:
    // after the limit even the right token is refused from there (another loopback address,
    // so the rest of this test is not locked out).
    let guesser = manager.http_from("127.0.0.2".parse()?)?;
    let attempt = |token: String| {
        let (guesser, base) = (guesser.clone(), base.clone());
        async move {
            let form = guesser.get(format!("{base}/ui/sign-in")).send().await?;
            let cookie = form
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| c.strip_prefix("tether_signin=")?.split(';').next().map(str::to_owned))
                .context("no sign-in cookie")?;
            let response = guesser
                .post(format!("{base}/ui/sign-in"))
                .header("cookie", format!("tether_signin={cookie}"))
                .form(&[("_csrf", cookie.as_str()), ("token", token.as_str())])
                .send()
                .await?;
            anyhow::Ok(response.status())
        }
    };
    for i in 0..5 {
        let status = attempt(format!("tat_wrong-guess-number-{i}-xxxxxxxxxxxxxxxx")).await?;
        ensure!(status == StatusCode::UNAUTHORIZED, "guess {i}: {status}");
    }
    let status = attempt(manager.init.admin_token.clone()).await?;
    ensure!(status == StatusCode::TOO_MANY_REQUESTS, "the right token after 5 failures: {status}");

    // Not even a REST call can use a console cookie: the API wants the bearer token.
    let (status, _) = api_call(&http, &base, Method::GET, "/api/v1/accounts", None, None).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");

    for (label, html) in &seen.0 {
        let hits = find_needles(label, html, &needles);
        ensure!(hits.is_empty(), "a secret on a console page: {hits:?}");
    }
    needles.append(&mut log_only);
    let hits = find_needles("manager log", &manager.logs(), &needles);
    ensure!(hits.is_empty(), "a secret in the manager's log: {hits:?}");
    b.close().await
}
