//! Secret hygiene of the real manager at TRACE logging: a full life cycle (create, handshake,
//! session, rotate with the sealed successor delivered and opened, failed handshakes, revoke,
//! admin-token misuse), then every log line, every API response except the two that hand out a
//! value (token create, token rotate; and admin-token create), `/metrics` and every error body
//! are scanned for every token secret, `K_token` and admin token in every encoding. Zero hits.
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_protocol::message::{C2s, HeartbeatStatus, S2c};
use tether_protocol::Token;
use tether_tests::attack::{
    flip_bit, handshake, hello_for, nonce32, send_hello_bytes, Answer, Incoming, Raw, TAG_BITS,
};
use tether_tests::harness::{api_call, Manager};
use tether_tests::secrets::{admin_needles, find_needles, token_needles};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_responses_metrics_or_errors_at_trace() {
    let mut m =
        Manager::start(&[("RUST_LOG", "trace"), ("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]).await.unwrap();
    let account = m.init.account_id.clone();
    let target = m.target().unwrap();
    let tokens = format!("/api/v1/accounts/{account}/tokens");
    let mut secrets: Vec<Token> = vec![m.default_token().unwrap()];
    let mut admin_values = vec![m.init.admin_token.clone()];
    // Responses that must be clean (everything except the value-bearing create/rotate answers).
    let mut clean: Vec<(String, String)> = Vec::new();
    let mut record = |label: &str, status: StatusCode, v: &Value| {
        clean.push((format!("{label} ({status})"), v.to_string()))
    };

    // Create a token (its answer carries the value: not scanned) and an admin token.
    let (status, created) = m.api(Method::POST, &tokens, Some(json!({"name": "scanned"}))).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = Token::parse(created["value"].as_str().unwrap()).unwrap();
    let (status, admin) = m
        .api(Method::POST, "/api/v1/admin-tokens", Some(json!({"name": "narrow", "scopes": ["tokens:read"]})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{admin}");
    let narrow = admin["value"].as_str().unwrap().to_owned();
    admin_values.push(narrow.clone());

    // A live session on the token, with heartbeats.
    let Answer::Welcome(est) = handshake(&target, None, &account, &token).await.unwrap() else {
        panic!("handshake")
    };
    let mut est = *est;
    for _ in 0..2 {
        let f = est
            .session
            .encode(C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 1, apply_mode: None } });
        est.raw.send(f).await;
    }

    // Rotate: the successor reaches the live session sealed, and opens to the announced value.
    let (status, rotated) = m
        .api(Method::POST, &format!("{tokens}/{}/rotate", token.id()), Some(json!({"grace_secs": 600})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let successor =
        Token::parse(rotated["token"].as_str().unwrap()).expect("rotate answers the successor's value");
    let Incoming::Frame(frame) = est.raw.recv().await.unwrap() else { panic!("no rotate frame") };
    match est.session.decode(&frame).unwrap() {
        S2c::Rotate { rotation_id, token_id, sealed_token, .. } => {
            let opened = est.session.open_sealed_token(rotation_id, token_id, &sealed_token).unwrap();
            assert!(opened.same_as(&successor), "the sealed successor is the announced one");
        }
        other => panic!("expected rotate, got {other:?}"),
    }
    assert!(handshake(&target, None, &account, &successor).await.unwrap().is_welcome());

    // Failed handshakes: a bad tag with a real token, an unknown token.
    let mut raw = Raw::connect(&target, None).await.unwrap();
    let challenge = raw.challenge().await.unwrap();
    let (_, hello) = hello_for(&challenge, &account, &successor, nonce32()).unwrap();
    send_hello_bytes(&mut raw, flip_bit(&hello, TAG_BITS.start + 1)).await.unwrap();
    let unknown = Token::from_parts(Uuid::new_v4(), [3; 32]);
    let _ = handshake(&target, None, &account, &unknown).await.unwrap();

    // Revoke the successor; a revoked token's handshake.
    let (status, v) =
        m.api(Method::POST, &format!("{tokens}/{}/revoke", successor.id()), None).await.unwrap();
    record("revoke", status, &v);
    let _ = handshake(&target, None, &account, &successor).await.unwrap();

    // Admin misuse: a near-miss admin token (one character changed), a narrow token writing,
    // a delegate token used as admin token.
    let http = m.http();
    let mut near = m.init.admin_token.clone().into_bytes();
    let last = near.len() - 1;
    near[last] = if near[last] == b'A' { b'B' } else { b'A' };
    let near = String::from_utf8(near).unwrap();
    for (label, bearer) in [
        ("near-miss admin", near.as_str()),
        ("narrow writes", narrow.as_str()),
        ("delegate as admin", m.init.default_token.as_str()),
    ] {
        let (status, v) =
            api_call(&http, &m.url(), Method::POST, &tokens, Some(bearer), Some(json!({"name": "x"})))
                .await
                .unwrap();
        assert!(status.is_client_error(), "{label}: {status}");
        record(label, status, &v);
    }
    let (status, v) = m.api(Method::POST, &tokens, Some(json!({"name": "scanned"}))).await.unwrap();
    record("duplicate name", status, &v);
    let (status, v) =
        m.api(Method::POST, &tokens, Some(json!({"name": "", "allowed_cidrs": ["nope"]}))).await.unwrap();
    record("invalid body", status, &v);

    // Every read endpoint.
    for path in [
        tokens.clone(),
        format!("{tokens}/{}", token.id()),
        format!("{tokens}/{}", successor.id()),
        "/api/v1/accounts".into(),
        format!("/api/v1/accounts/{account}"),
        "/api/v1/rotations".into(),
        format!("/api/v1/rotations/{}", rotated["rotation_id"].as_str().unwrap()),
        "/api/v1/delegates".into(),
        "/api/v1/admin-tokens".into(),
        "/api/v1/audit".into(),
        "/api/v1/openapi.json".into(),
    ] {
        let (status, v) = m.api(Method::GET, &path, None).await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        record(&path, status, &v);
    }
    let mut texts = Vec::new();
    for path in ["/metrics", "/healthz", "/readyz"] {
        let body = http.get(format!("{}{path}", m.url())).send().await.unwrap().text().await.unwrap();
        texts.push((path.to_owned(), body));
    }
    est.raw.close().await;
    m.kill9().unwrap();
    let logs = m.logs();

    // The scan.
    secrets.push(token);
    secrets.push(successor);
    let mut needles: Vec<String> = secrets.iter().flat_map(token_needles).collect();
    for a in &admin_values {
        needles.extend(admin_needles(a));
    }
    let mut hits = Vec::new();
    for (n, line) in logs.lines().enumerate() {
        hits.extend(find_needles(&format!("log line {}", n + 1), line, &needles));
    }
    for (label, body) in clean.iter().chain(texts.iter()) {
        hits.extend(find_needles(label, body, &needles));
    }
    let lines = logs.lines().count();
    let trace_lines = logs.lines().filter(|l| l.contains("TRACE")).count();
    println!(
        "secret scan: {} needles over {lines} log lines ({trace_lines} at TRACE, {} bytes), {} API responses, {} other bodies: {} hits",
        needles.len(),
        logs.len(),
        clean.len(),
        texts.len(),
        hits.len()
    );
    assert!(trace_lines > 0, "the manager did not log at TRACE: the scan would prove nothing");
    assert!(hits.is_empty(), "secrets leaked: {hits:#?}");
}
