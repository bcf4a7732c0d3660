//! The admin CLI's `--json` output, as the Compose tests read it (`tether_tests::harness::cli`),
//! against the real manager binary: the field names the manager emits for `delegate list`,
//! `token show`, `token create` and `token rotate`. The Compose tests run the same CLI inside
//! the manager image; this checks the one contract without Docker.
use std::time::Duration;

use tether_tests::attack::{handshake, Answer};
use tether_tests::harness::cli::{self, created_token_value, rotated_token_value, token_id};
use tether_tests::harness::{poll, Manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_tests_read_what_the_cli_prints() {
    let m = Manager::start(&[]).await.unwrap();
    let account = m.init.account_id.clone();
    let default_id = m.init.default_token_id.to_string();
    assert_eq!(token_id(&m.init.default_token).unwrap(), default_id);

    let answer = handshake(&m.target().unwrap(), None, &account, &m.default_token().unwrap()).await.unwrap();
    let Answer::Welcome(session) = answer else { panic!("welcome expected: {}", answer.describe()) };
    let sessions = poll::until("the session in `delegate list`", Duration::from_secs(10), || async {
        let listed = cli::delegate_list(&m.cli_json(&["delegate", "list"])?)?;
        Ok((!listed.is_empty()).then_some(listed))
    })
    .await
    .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].name, "attack");
    assert_eq!(sessions[0].token_id, default_id);
    assert!(!sessions[0].session_id.is_empty());

    assert_eq!(cli::token_state(&m.cli_json(&["token", "show", &default_id]).unwrap()).unwrap(), "active");
    let created = created_token_value(&m.cli_json(&["token", "create", "second"]).unwrap()).unwrap();
    let second_id = token_id(&created).unwrap();
    assert_eq!(cli::token_state(&m.cli_json(&["token", "show", &second_id]).unwrap()).unwrap(), "active");

    let rotated = m.cli_json(&["token", "rotate", &default_id, "--grace-secs", "60"]).unwrap();
    let successor = rotated_token_value(&rotated).unwrap();
    assert_ne!(token_id(&successor).unwrap(), default_id);
    assert_eq!(cli::token_state(&m.cli_json(&["token", "show", &default_id]).unwrap()).unwrap(), "rotating");
    drop(session);
}
