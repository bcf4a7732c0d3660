//! Every delegate struct that holds a token — the parsed command line (`Cli`, `Command::Run`,
//! `RunFlags`), the validated `Config` with its candidates, the successor container's spec
//! (whose environment carries the new token) — formatted with `{:?}` and `{:#?}` shows no
//! form of the secret.
use std::collections::HashMap;

use bollard::models::{ContainerConfig, ContainerInspectResponse, HostConfig};
use clap::Parser;
use rand::RngCore;
use tether_delegate::cli::{Cli, Command};
use tether_delegate::config::Config;
use tether_delegate::docker::successor::successor_spec;
use tether_protocol::Token;
use uuid::Uuid;

fn token() -> Token {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Token::from_parts(Uuid::new_v4(), secret)
}

/// The forms of `token` that must never be printed: the whole string, the body after the
/// `tdt_` prefix, and its secret-bearing middle.
fn needles(token: &Token) -> Vec<String> {
    let full = token.expose().to_string();
    let body = full.strip_prefix("tdt_").expect("tdt_ prefix").to_owned();
    let middle: String = body.chars().skip(22).take(38).collect();
    vec![full, body, middle]
}

fn assert_clean(label: &str, formatted: &str, secrets: &[&Token]) {
    for token in secrets {
        for needle in needles(token) {
            assert!(!formatted.contains(&needle), "{label} shows a secret: {formatted}");
        }
    }
}

#[test]
fn no_struct_that_holds_a_token_shows_it_in_debug() {
    let (secret, alias) = (token(), token());
    let (secret_text, alias_text) = (secret.expose().to_string(), alias.expose().to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{secret_text}\n")).unwrap();

    // Both secret flags, as the top-level `run` settings and under the `run` subcommand.
    let top = Cli::try_parse_from([
        "tether-delegate",
        "--account-secret",
        &secret_text,
        "--delegate-token",
        &alias_text,
    ])
    .unwrap();
    assert_eq!(top.run.account_secret.as_ref().map(|s| s.expose()), Some(secret_text.as_str()));
    assert_eq!(top.run.delegate_token.as_ref().map(|s| s.expose()), Some(alias_text.as_str()));
    let sub = Cli::try_parse_from([
        "tether-delegate",
        "run",
        "--account-secret",
        &secret_text,
        "--delegate-token",
        &alias_text,
    ])
    .unwrap();
    let Some(Command::Run(flags)) = &sub.command else { panic!("run subcommand: {sub:?}") };
    for (label, formatted) in [
        ("Cli", format!("{top:?}")),
        ("Cli (pretty)", format!("{top:#?}")),
        ("RunFlags", format!("{:?}", top.run)),
        ("Cli with run", format!("{sub:?}")),
        ("Command::Run", format!("{:#?}", sub.command)),
    ] {
        assert_clean(label, &formatted, &[&secret, &alias]);
    }

    // The validated configuration (flag token, environment alias and the file's token).
    let mut run = (**flags).clone();
    run.delegate_token = None;
    run.account_secret_file = Some(file.display().to_string());
    let env = HashMap::from([
        ("ACCOUNT_ID", "acme"),
        ("DELEGATE_TOKEN", secret_text.as_str()),
        ("MANAGER_HOST_AND_PORT", "manager.example:8443"),
        ("DELEGATE_NAME", "d1"),
    ]);
    let config = Config::load(&run, &env).unwrap();
    assert!(!config.candidates.is_empty());
    assert_clean("Config", &format!("{config:?}"), &[&secret]);
    assert_clean("Config (pretty)", &format!("{config:#?}"), &[&secret]);

    // The successor's create spec carries the new token in its environment.
    let inspect = ContainerInspectResponse {
        id: Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()),
        name: Some("/delegate".into()),
        config: Some(ContainerConfig {
            env: Some(vec![format!("ACCOUNT_SECRET={secret_text}"), "ACCOUNT_ID=acme".into()]),
            ..ContainerConfig::default()
        }),
        host_config: Some(HostConfig::default()),
        ..ContainerInspectResponse::default()
    };
    let spec = successor_spec(&inspect, &alias.expose()).unwrap();
    assert!(
        spec.body.env.as_ref().is_some_and(|env| env.contains(&format!("ACCOUNT_SECRET={alias_text}"))),
        "the spec carries the new token"
    );
    assert_clean("Successor", &format!("{spec:?}"), &[&secret, &alias]);
    assert_clean("Successor (pretty)", &format!("{spec:#?}"), &[&secret, &alias]);
}
