//! The real binary's admin CLI: documented exit codes and JSON errors, durations with units,
//! and the generated shell completions and man page.
mod common;

use common::*;
use serde_json::{json, Value};
use tether_tests::harness::Manager;

/// Runs the CLI with `--json` expecting `exit`; returns the one JSON error object it printed
/// on stderr (stdout stays empty).
async fn cli_json_error(m: &Manager, args: &[&str], exit: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli_output(m, &all).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    let v: Value =
        serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {err}"));
    assert_eq!(v["error"]["exit_code"], exit, "{v}");
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
    v
}

/// Issue 17, finding 9: the documented exit codes (64 usage, 65 refused input, 69
/// unreachable or untrusted, 77 not authorised), errors as JSON under `--json`, and the TLS
/// trust failure naming `--ca-cert` and where the CA is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_have_documented_exit_codes_and_json() {
    let m = start(&[]).await;

    // 64: usage, before any call (clap's refusal too).
    let v = cli_json_error(&m, &["token", "list", "--admin-token", ""], 64).await;
    assert_eq!(v["error"]["code"], "usage");
    let v = cli_json_error(&m, &["token", "create"], 64).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("<NAME>"), "{v}");
    // A line break in the admin token (it would inject a header): refused by name, not value.
    let v = cli_json_error(&m, &["token", "list", "--admin-token", "tat_x\nInjected: 1"], 64).await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("TETHER_ADMIN_TOKEN") && !message.contains("Injected"), "{v}");
    let out = cli_output(&m, &["token", "create"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&out.stderr).trim_start().starts_with('{'), "text without --json");

    // 65: the server refused the input (400 validation, 404, 409).
    let v = cli_json_error(&m, &["token", "create", "bad name!", "--account", "acme"], 65).await;
    assert_eq!(v["error"]["status"], 400, "{v}");
    let v = cli_json_error(&m, &["token", "show", "nope", "--account", "acme"], 65).await;
    assert_eq!((v["error"]["status"].clone(), v["error"]["code"].clone()), (json!(404), json!("not_found")));
    let v = cli_json_error(&m, &["account", "create", "acme"], 65).await;
    assert_eq!(v["error"]["status"], 409, "{v}");
    let out = cli_output(&m, &["account", "create", "acme"]).await;
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("tether-manager: "),
        "a sentence without --json"
    );

    // 77: not authorised (403 for a token without the scope, 401 for an unknown one).
    let reader = cli_json(&m, &["admin-token", "create", "reader", "--scope", "tokens:read"]).await;
    let reader = reader["value"].as_str().unwrap().to_owned();
    let v = cli_json_error(&m, &["account", "create", "zeta", "--admin-token", &reader], 77).await;
    assert_eq!(v["error"]["status"], 403, "{v}");
    let unknown = "tat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let v = cli_json_error(&m, &["token", "list", "--account", "acme", "--admin-token", unknown], 77).await;
    assert_eq!(v["error"]["status"], 401, "{v}");

    // 69: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let v = cli_json_error(&m, &["token", "list", "--manager", &nowhere], 69).await;
    assert_eq!(v["error"]["code"], "unreachable");

    // 69: another manager's CA — the message says to pass --ca-cert and where the CA is.
    let other = tempfile::tempdir().unwrap();
    assert!(init(other.path(), &["--json"]).status.success());
    let other_ca = other.path().join("ca.pem");
    let other_ca = other_ca.to_str().unwrap();
    let v = cli_json_error(&m, &["token", "list", "--ca-cert", other_ca], 69).await;
    assert_eq!(v["error"]["code"], "tls_untrusted");
    let out = cli_output(&m, &["token", "list", "--ca-cert", other_ca]).await;
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-cert") && err.contains("ca.pem") && err.contains(other_ca), "{err}");

    assert_no_secrets(&m.log_lines(), &[&m.init.admin_token, &reader]);
}

/// Issue 17, finding 9: durations as `90s`, `1h`, `30d` wherever seconds are taken (plain
/// seconds still work); a bad one is a usage error naming the forms, multi-byte and overflow
/// input included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_durations_take_units() {
    let m = start(&[]).await;
    let lifetime = |v: &Value| v["expires_at"].as_u64().unwrap() - v["created_at"].as_u64().unwrap();
    let t = cli_json(&m, &["token", "create", "h1", "--account", "acme", "--expires-in", "1h"]).await;
    assert_eq!(lifetime(&t["token"]), 3600, "{t}");
    let t = cli_json(&m, &["token", "create", "s90", "--account", "acme", "--expires-in", "90"]).await;
    assert_eq!(lifetime(&t["token"]), 90, "plain seconds");
    let a =
        cli_json(&m, &["admin-token", "create", "month", "--scope", "tokens:read", "--expires-in", "30d"])
            .await;
    assert_eq!(lifetime(&a["admin_token"]), 30 * 86_400, "{a}");
    let r =
        cli_json(&m, &["token", "rotate", "h1", "--account", "acme", "--grace", "90s", "--expires-in", "2h"])
            .await;
    let shown = cli_json(&m, &["rotation", "show", r["rotation_id"].as_str().unwrap()]).await;
    assert_eq!(shown["deadline"].as_u64().unwrap() - shown["started_at"].as_u64().unwrap(), 90, "{shown}");

    for bad in ["1é", "１h", "💥", "1.5h", "99999999999999999999", "18446744073709551615m"] {
        let out = cli_output(&m, &["token", "create", "x", "--account", "acme", "--expires-in", bad]).await;
        assert_eq!(out.status.code(), Some(64), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("duration") && err.contains("--expires-in"), "{bad}: {err}");
    }
    let v = cli_json_error(&m, &["token", "rotate", "s90", "--account", "acme", "--grace-secs", "1w2d"], 64)
        .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("not a duration"), "{v}");
}

/// Issue 17, finding 9: completions and the man page come from the clap definitions.
#[test]
fn completions_and_man_page_are_generated() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef tether-manager"), ("fish", "complete -c tether-manager")]
    {
        let out = command().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["admin-token", "rotate", "ca-cert", "completions"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    assert_eq!(command().args(["completions", "tcsh"]).output().unwrap().status.code(), Some(64));
    let out = command().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH tether-manager"), "{page}");
    for word in ["init", "serve", "admin\\-token", "completions", "rotation"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
}
