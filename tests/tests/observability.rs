//! Issue 17 (metrics, access log) against the real manager binary: `/metrics` in both
//! exposition formats, validated by an outside parser (PyPI's prometheus-client, through
//! `tests/tools/check_metrics.py`; `tests/run.sh` installs it); route labels that are templates,
//! never raw paths; the access log with the request id echoed and no secret in it.
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_tests::attack::handshake;
use tether_tests::harness::{poll, Manager};
use tether_tests::secrets::{admin_needles, find_needles, token_needles};
use tokio::io::AsyncWriteExt;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `/metrics` with this `Accept` header: the content type and the body.
async fn scrape(m: &Manager, accept: Option<&str>) -> (String, String) {
    let mut request = m.http().get(format!("{}/metrics", m.url()));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (content_type, response.text().await.unwrap())
}

/// Runs `tests/tools/check_metrics.py FORMAT` on `body`: the parser's family list, or a panic
/// with its complaint.
async fn outside_check(format: &str, body: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/check_metrics.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (with PyPI's prometheus-client: tests/run.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the checker finishes")
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "PyPI's prometheus-client is missing: `pip install prometheus-client` (tests/run.sh does)"
    );
    assert!(
        out.status.success(),
        "{format} exposition refused by the outside parser:\n{stderr}\n---\n{body}"
    );
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_exposition_formats_pass_the_outside_parsers() {
    let m = Manager::start(&[]).await.unwrap();
    let account = m.init.account_id.clone();
    let target = m.target().unwrap();
    // Traffic that moves the new families: a handshake, an API read, a rotation with a live
    // session (running), a revoke.
    let token = m.create_token(&account, "observed", json!({})).await.unwrap();
    let answer = handshake(&target, None, &account, &token).await.unwrap();
    assert!(answer.is_welcome());
    let other = m.create_token(&account, "revoked", json!({})).await.unwrap();
    m.revoke(other.id()).await.unwrap();
    m.rotate(token.id(), 600).await.unwrap();

    let mut families = Vec::new();
    for (accept, content_type, format) in [
        (None, TEXT, "text"),
        (Some("text/plain"), TEXT, "text"),
        (Some("*/*"), TEXT, "text"),
        (Some("application/openmetrics-text"), OPENMETRICS, "openmetrics"),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS, "openmetrics"),
    ] {
        let (served, body) = scrape(&m, accept).await;
        assert_eq!(served, content_type, "Accept {accept:?}");
        families.push((format, outside_check(format, &body).await, body));
    }
    for (format, parsed, body) in &families {
        for family in [
            "tether_build info",
            "tether_sessions gauge",
            "tether_handshakes counter",
            "tether_handshake_duration_seconds histogram",
            "tether_revoke_fanout_duration_seconds histogram",
            "tether_api_requests counter",
            "tether_api_request_duration_seconds histogram",
            "tether_store_operation_duration_seconds histogram",
            "tether_rotations_in_progress gauge",
            "tether_rotation_delegates gauge",
            "process_cpu_seconds counter",
            "process_resident_memory_bytes gauge",
            "process_open_fds gauge",
            "process_start_time_seconds gauge",
        ] {
            // The 0.0.4 parser of prometheus-client names an info metric by its sample.
            let family = if *format == "text" {
                family.replace("tether_build info", "tether_build_info gauge")
            } else {
                family.into()
            };
            assert!(
                parsed.lines().any(|l| l.starts_with(&format!("{family} "))),
                "{format}: no {family}:\n{parsed}"
            );
        }
        for sample in [
            // Initialised at zero, so an alert on them sees a series.
            "tether_handshakes_total{outcome=\"auth_failed\"} 0",
            "tether_sessions_refused_total{cap=\"total\"} 0",
            "tether_admin_auth_failures_total{reason=\"unknown\"} 0",
            // Moved by the traffic above.
            "tether_handshakes_total{outcome=\"ok\"} 1",
            "tether_handshake_duration_seconds_count{result=\"ok\"} 1",
            "tether_revoke_fanout_duration_seconds_count 1",
            "tether_rotations_in_progress 1",
            "tether_rotation_delegates{state=\"pending\"} 1",
        ] {
            assert!(body.lines().any(|l| l == sample), "{format}: no `{sample}` in\n{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_are_labelled_by_route_template_never_the_raw_path() {
    let m = Manager::start(&[]).await.unwrap();
    let account = m.init.account_id.clone();
    let token = m.create_token(&account, "labelled", json!({})).await.unwrap();
    let path = format!("/api/v1/accounts/{account}/tokens/{}", token.id());
    let (status, _) = m.api(Method::GET, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let stray = "/api/v1/no-such-thing/5d0c2c9e-0000-4000-8000-00000000beef";
    let (status, _) = m.api(Method::GET, stray, None).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, body) = scrape(&m, None).await;
    for want in [
        "tether_api_requests_total{method=\"GET\",route=\"/api/v1/accounts/{account}/tokens/{token}\",status=\"200\"} 1",
        "tether_api_requests_total{method=\"POST\",route=\"/api/v1/accounts/{account}/tokens\",status=\"201\"} 1",
        "tether_api_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "tether_api_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/accounts/{account}/tokens/{token}\"} 1",
        // Initialised for every route.
        "tether_api_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/audit\"} 0",
    ] {
        assert!(body.lines().any(|l| l == want), "no `{want}` in\n{body}");
    }
    let token_id = token.id().to_string();
    for raw in [token_id.as_str(), "beef", "no-such-thing"] {
        assert!(!body.contains(raw), "`{raw}` from a raw path is in the metrics:\n{body}");
    }
    let needles = token_needles(&token);
    assert_eq!(find_needles("metrics", &body, &needles), Vec::<String>::new());
}

/// The access log's JSON lines (`--log-format json`).
fn access_lines(m: &Manager) -> Vec<Value> {
    m.log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tether_manager::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request_with_the_request_id_echoed_and_no_secret() {
    let m = Manager::start(&[("TETHER_LOG_FORMAT", "json")]).await.unwrap();
    let account = m.init.account_id.clone();
    let url = format!("{}/api/v1/accounts/{account}", m.url());
    let admin = m.init.admin_token.clone();

    // A valid client id is taken and echoed.
    let response = m
        .http()
        .get(&url)
        .bearer_auth(&admin)
        .header("x-request-id", "it-17.access~42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "it-17.access~42");

    // Invalid ids (a space, a control character, too long) are replaced by a generated one.
    let long = "a".repeat(129);
    let mut generated = Vec::new();
    for bad in ["has space", "tab\there", long.as_str()] {
        let response =
            m.http().get(&url).bearer_auth(&admin).header("x-request-id", bad).send().await.unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, bad);
        assert_eq!(echoed.len(), 36, "a generated id: {echoed}");
        generated.push(echoed);
    }
    // No id: one is generated too; a failed authentication has no caller name.
    let response = m.http().get(&url).bearer_auth("tat_notAValidToken0000000000000000").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let unauthenticated = response.headers()["x-request-id"].to_str().unwrap().to_owned();

    let line = poll::until("the access line of it-17.access~42", Duration::from_secs(10), || async {
        Ok(access_lines(&m).into_iter().find(|l| l["request_id"] == "it-17.access~42"))
    })
    .await
    .unwrap();
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/api/v1/accounts/{account}", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["admin_token"], "init-admin", "{line}");
    assert!(line["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{line}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    for id in &generated {
        let found = poll::until(format!("the access line of {id}"), Duration::from_secs(10), || async {
            Ok(access_lines(&m).into_iter().find(|l| l["request_id"] == id.as_str()))
        })
        .await
        .unwrap();
        assert_eq!(found["status"], 200, "{found}");
    }
    let refused = poll::until("the access line of the refused request", Duration::from_secs(10), || async {
        Ok(access_lines(&m).into_iter().find(|l| l["request_id"] == unauthenticated.as_str()))
    })
    .await
    .unwrap();
    assert_eq!(
        (refused["status"].as_u64(), refused["admin_token"].as_str()),
        (Some(401), Some("-")),
        "{refused}"
    );
    // One line per request: each id once.
    let lines = access_lines(&m);
    assert_eq!(lines.iter().filter(|l| l["request_id"] == "it-17.access~42").count(), 1);

    // No secret in any log line.
    let logs = m.logs();
    assert_eq!(find_needles("logs", &logs, &admin_needles(&admin)), Vec::<String>::new());
    let token = m.default_token().unwrap();
    assert_eq!(find_needles("logs", &logs, &token_needles(&token)), Vec::<String>::new());
}
