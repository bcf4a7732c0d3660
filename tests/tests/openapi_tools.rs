//! The OpenAPI document checked by outside tools against the real manager (issue 17, finding
//! 3): `openapi-spec-validator` finds it valid (unique operationIds, every path parameter in
//! its path, ...), and a bounded `schemathesis run` with its default checks, excluding
//! nothing, finds no failure: every answer is documented, conforms to its schema and content
//! type, valid input is accepted and invalid input refused. Both tools come from PyPI;
//! `bash tests/run.sh` installs the pinned versions when they are missing. A missing tool
//! fails the test (it is never skipped).
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::Method;
use tether_tests::harness::process::run_within;
use tether_tests::harness::Manager;
use tether_tests::secrets;

/// How long schemathesis fuzzes and runs stateful sequences (it repeats them until this is
/// spent), in seconds.
const SCHEMATHESIS_SECS: u64 = 100;
/// Test cases per operation and round.
const MAX_EXAMPLES: &str = "25";

/// Runs `tool` with `args` in `dir` within `limit`; a tool that is not installed fails with
/// the way to install it.
fn run_tool(tool: &str, args: &[&str], dir: &Path, limit: Duration) -> Output {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`{tool}` is not installed: `bash tests/run.sh` installs it (pip, pinned versions); \
         this test is not skipped without it"
    );
    let mut command = Command::new(tool);
    command.args(args).current_dir(dir).env("NO_COLOR", "1");
    run_within(&mut command, limit).unwrap_or_else(|e| panic!("{tool} did not finish: {e:#}"))
}

/// The tool's output with every token in it redacted.
fn shown(m: &Manager, out: &Output) -> String {
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut needles = secrets::admin_needles(&m.init.admin_token);
    needles.push(m.init.default_token.clone());
    secrets::redact(&text, &needles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_validator_finds_the_document_valid() {
    let m = Manager::start(&[]).await.expect("manager starts");
    let (status, doc) = m.api(Method::GET, "/api/v1/openapi.json", None).await.unwrap();
    assert!(status.is_success(), "{status}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run_tool("openapi-spec-validator", &[file.to_str().unwrap()], &dir, Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(out.status.success(), "openapi-spec-validator ({}):\n{}", out.status, shown(&m, &out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure() {
    // The `ignored_auth` check sends a wrong admin token to every operation on purpose; the
    // throwaway manager must not lock its one client address out for that. (The stateful phase
    // may create a second `admin` token and then revoke this one; the calls after that are
    // answered 401, which every check accepts.) `tests/schemathesis.toml` tells two checks
    // that the WebSocket endpoint's valid answer is 101; no check is turned off.
    let m = Manager::start(&[("TETHER_ADMIN_AUTH_FAIL_LIMIT", "1000000"), ("RUST_LOG", "warn")])
        .await
        .expect("manager starts");
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("{}/api/v1/openapi.json", m.url());
    let auth = format!("Authorization: Bearer {}", m.init.admin_token);
    let ca = m.init.ca_cert.to_string_lossy().into_owned();
    let max_time = SCHEMATHESIS_SECS.to_string();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let config = config.to_string_lossy().into_owned();
    let args: Vec<String> = [
        "--config-file",
        &config,
        "run",
        &schema,
        "--url",
        &m.url(),
        "--header",
        &auth,
        "--tls-verify",
        &ca,
        "--workers",
        "1",
        "--max-examples",
        MAX_EXAMPLES,
        "--max-time",
        &max_time,
        "--request-timeout",
        "20",
        // A keep-alive connection the manager closes (idle, or past the header timeout) just as
        // the next request goes out on it is a transport race (RFC 9112, section 9.3.1), not an
        // answer: retried, like any HTTP client would.
        "--request-retries",
        "2",
        "--generation-database",
        "none",
        "--no-color",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_tool("schemathesis", &args, &dir, Duration::from_secs(SCHEMATHESIS_SECS + 120))
        }
    })
    .await
    .unwrap();
    let text = shown(&m, &out);
    let log = secrets::redact(&m.logs(), &secrets::admin_needles(&m.init.admin_token));
    assert!(out.status.success(), "schemathesis ({}):\n{text}\nmanager log:\n{log}", out.status);
    // The summary line, for the test's output: e.g. "N passed".
    let summary: Vec<&str> =
        text.lines().filter(|l| l.contains("passed") || l.contains("failures")).collect();
    println!("schemathesis:\n{}", summary.join("\n"));
}
