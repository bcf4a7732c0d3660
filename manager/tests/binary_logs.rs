//! The real binary's logs: changes logged once, a disconnect that says who and why, repeated
//! warnings summarised, and no colours when stderr is not a terminal.
mod common;

use common::*;
use serde_json::Value;
use tether_tests::harness::{Manager, Options};

/// The JSON log lines whose message is `message`.
fn logged(lines: &[String], message: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// Issue 17, finding 6: admin-token, account, token and restriction changes are logged, a
/// revocation once however often it is repeated; a delegate's disconnect line says which
/// delegate, which account and why; JSON carries no `"None"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_logged_once_and_a_disconnect_says_who_and_why() {
    install_provider();
    let m = start(&[]).await;
    cli_json(&m, &["account", "create", "beta"]).await;
    let ops = cli_json(&m, &["admin-token", "create", "ops", "--scope", "tokens:read"]).await;
    for _ in 0..2 {
        cli_json(&m, &["admin-token", "revoke", "ops"]).await;
    }
    cli_json(&m, &["token", "create", "t1", "--account", "acme"]).await;
    for _ in 0..2 {
        cli_json(&m, &["token", "revoke", "t1", "--account", "acme"]).await;
    }
    cli_json(&m, &["token", "delete", "t1", "--account", "acme"]).await;
    cli_json(&m, &["restriction", "create", "r1", "--allow", "GET /api/v1/accounts"]).await;
    cli_json(&m, &["restriction", "delete", "r1"]).await;

    let target = Target { url: m.url(), ca: m.init.ca_cert.clone() };
    let d = target.connect("acme", &m.init.default_token, "logged-one").await;
    let sid = d.welcome.session_id.to_string();
    let serving = d.serve_tasks();
    cli(&m, &["delegate", "disconnect", &sid]).await;
    assert_eq!(tokio::time::timeout(WAIT, serving).await.unwrap().unwrap(), Some(1000));
    let gone = tether_tests::harness::poll::until("the disconnect line", WAIT, || {
        let found = logged(&m.log_lines(), "delegate disconnected").into_iter().next();
        async move { Ok(found) }
    })
    .await
    .unwrap();
    assert_eq!(gone["session_id"], sid.as_str(), "{gone}");
    assert_eq!(gone["delegate"], "logged-one", "{gone}");
    assert_eq!(gone["account"], "acme", "{gone}");
    assert_eq!(gone["reason"], "disconnected by an operator", "{gone}");
    assert_eq!(gone["close_code"], 1000, "{gone}");

    let lines = m.log_lines();
    let ops_id = ops["admin_token"]["id"].as_str().unwrap();
    let created = logged(&lines, "admin token created");
    assert!(created.iter().any(|l| l["admin_token_id"] == ops_id), "{created:?}");
    let revoked = logged(&lines, "admin token revoked");
    assert_eq!(revoked.len(), 1, "logged once, not at the idempotent repeat: {revoked:?}");
    assert_eq!(revoked[0]["admin_token_id"], ops_id);
    assert_eq!(logged(&lines, "token revoked").len(), 1, "logged once, not at the idempotent repeat");
    for change in
        ["account created", "token created", "token deleted", "restriction created", "restriction deleted"]
    {
        assert_eq!(logged(&lines, change).len(), 1, "{change}");
    }
    let none: Vec<&String> = lines.iter().filter(|l| l.contains("\"None\"") || l.contains("Some(")).collect();
    assert!(none.is_empty(), "an Option printed with Debug: {none:?}");
}

/// A TLS ClientHello whose SNI is the IP address `ip`, which rustls logs as a WARN each time
/// it sees one ("Illegal SNI extension: ignoring IP address presented as hostname (<hex>)").
fn client_hello_with_ip_sni(ip: &str) -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let name = ip.as_bytes();
    let entry = [&[0u8][..], &be16(name.len()), name].concat();
    let list = [&be16(entry.len())[..], &entry].concat();
    let sni = [&[0u8, 0][..], &be16(list.len()), &list].concat();
    let body = [
        &[3u8, 3][..],       // legacy version
        &[7u8; 32],          // random
        &[0],                // no session id
        &[0, 2, 0x13, 0x01], // TLS_AES_128_GCM_SHA256
        &[1, 0],             // null compression
        &be16(sni.len()),
        &sni,
    ]
    .concat();
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let handshake = [&[1u8, len[1], len[2], len[3]][..], &body].concat();
    [&[0x16u8, 3, 1][..], &be16(handshake.len()), &handshake].concat()
}

/// Issue 17, finding 6: a warning repeated once per connection (rustls's "Illegal SNI
/// extension", as a TLS scanner provokes) is written once, then summarised as "N similar log
/// lines suppressed"; text logs carry no colour codes when stderr is not a terminal. Review 2,
/// F5: each hello presents a different IP address (quoted in the warning), still one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_warnings_are_summarised_and_text_logs_have_no_colours() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    install_provider();
    let mut options = Options::with_env(&[("TETHER_LOG_FORMAT", "text")]);
    options.account = Some("acme".into());
    options.bin = Some(BIN.into());
    let mut m = Manager::start_with(options).await.expect("the manager starts");
    const SCANS: usize = 20;
    for i in 0..SCANS {
        let mut tcp = tokio::net::TcpStream::connect(m.addr).await.unwrap();
        tcp.write_all(&client_hello_with_ip_sni(&format!("10.0.{}.{}", i / 200, i % 200 + 1))).await.unwrap();
        // The manager answers with an alert and closes: by then it has read the hello.
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("the manager closes");
        assert!(read.is_ok() || answer.is_empty());
    }
    m.terminate().unwrap();
    let (status, _) = m.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status:?}");
    let lines = m.log_lines();
    let sni: Vec<&String> =
        lines.iter().filter(|l| l.contains("Illegal SNI") && !l.contains("suppressed")).collect();
    assert_eq!(sni.len(), 1, "one line of {SCANS} warnings differing in the name: {sni:#?}");
    let summary = format!("{} similar log lines suppressed", SCANS - 1);
    assert!(
        lines.iter().any(|l| l.contains(&summary) && l.contains("rustls")),
        "no `{summary}`:\n{}",
        m.logs()
    );
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(coloured.is_empty(), "ANSI escapes in logs written to a pipe: {coloured:?}");
}
