//! The real `tether-manager` binary as the binary tests run it: the command, `init`, a served
//! data dir through the one end-to-end harness (JSON logs), the admin CLI against it, and the
//! check that no secret reached the captured logs.
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{handshake_on, open_ws, Refused, TestDelegate};

use serde_json::Value;
use tether_tests::harness::{Manager, Options};
use tether_tests::secrets::find_needles;

pub const BIN: &str = env!("CARGO_BIN_EXE_tether-manager");

pub fn command() -> std::process::Command {
    tether_tests::harness::manager::command(Path::new(BIN))
}

pub fn init(dir: &Path, extra: &[&str]) -> std::process::Output {
    command().arg("init").arg("--data-dir").arg(dir).args(extra).output().unwrap()
}

/// Serves a fresh data dir (`init --account acme --tls-san manager`) through the one
/// end-to-end harness, with JSON logs and `env`.
pub async fn start(env: &[(&str, &str)]) -> Manager {
    let mut options = Options::with_env(env);
    options.env.push(("TETHER_LOG_FORMAT".into(), "json".into()));
    options.account = Some("acme".into());
    options.tls_sans = vec!["manager".into()];
    options.bin = Some(BIN.into());
    Manager::start_with(options).await.expect("the manager starts")
}

pub fn assert_no_secrets(logs: &[String], secrets: &[&str]) {
    assert!(!logs.is_empty());
    // Each value, and not even the part after its `tdt_` / `tat_` prefix.
    let needles: Vec<String> =
        secrets.iter().flat_map(|s| [s.to_string(), s.get(4..).unwrap_or_default().to_owned()]).collect();
    for line in logs {
        let found = find_needles("log line", line, &needles);
        assert!(found.is_empty(), "a secret leaked into the logs ({found:?}): {line}");
    }
}

pub async fn cli_output(m: &Manager, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(m.cli_command(args)).output().await.unwrap()
}

/// Runs a CLI subcommand and returns stdout (asserting exit 0).
pub async fn cli(m: &Manager, args: &[&str]) -> String {
    let out = cli_output(m, args).await;
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub async fn cli_json(m: &Manager, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&cli(m, &all).await).unwrap()
}

/// A manager address for the in-test delegate client.
pub struct Target {
    pub url: String,
    pub ca: PathBuf,
}

impl Target {
    pub async fn connect(&self, account: &str, token: &str, name: &str) -> TestDelegate {
        let ws_url = format!("{}/api/v1/delegates/connect", self.url.replace("https://", "wss://"));
        let ws = open_ws(&ws_url, &self.ca).await;
        let token = tether_protocol::Token::parse(token).unwrap();
        handshake_on(ws, account, &token, Uuid::new_v4(), name).await.expect("handshake")
    }

    pub async fn refused(&self, account: &str, token: &str) -> Refused {
        let ws_url = format!("{}/api/v1/delegates/connect", self.url.replace("https://", "wss://"));
        let ws = open_ws(&ws_url, &self.ca).await;
        let token = tether_protocol::Token::parse(token).unwrap();
        handshake_on(ws, account, &token, Uuid::new_v4(), "x").await.err().expect("refused")
    }
}
