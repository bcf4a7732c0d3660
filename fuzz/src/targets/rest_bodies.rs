//! The admin REST API's JSON bodies, through the manager's real router (axum, the real
//! extractors, validation and SQLite store in a temporary data dir), in process.
//!
//! Input: a mode byte that picks the endpoint, then the request body. Mode 0: create an
//! account; 1: create a token; 2: rotate the default token; 3: create an admin token; 4: ping a
//! delegate session; 5: create a token with an admin token that holds only `tokens:read`.
//!
//! Invariants: no body makes the manager answer 5xx or panic; every error is the JSON
//! `{"error":{"code","message"}}`; a created token's value parses as a token; a token lacking
//! the scope never changes anything, whatever the body.
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use tether_protocol::Token;
use tower::ServiceExt as _;

use crate::input;
use crate::Reached;

/// The endpoints, by mode.
pub const ENDPOINTS: usize = 6;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    admin: String,
    reader: String,
    default_token_id: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // tmpfs when there is one: SQLite's fsyncs would otherwise dominate every run.
        let dir = tempfile::Builder::new()
            .prefix("tether-fuzz-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
            .expect("temp dir");
        let init = tether_manager::init::init(&tether_manager::init::InitOptions {
            data_dir: dir.path().join("data"),
            account: "fuzz".into(),
            tls_sans: vec![],
            manager_url: "https://127.0.0.1:8443".into(),
            database: None,
        })
        .expect("init");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let data = tether_manager::datadir::DataDir::open(&dir.path().join("data")).expect("data dir");
        let config = tether_manager::config::ServeConfig::for_data_dir(dir.path().join("data"));
        let router = runtime.block_on(async {
            let state = tether_manager::state::AppState::new(config, &data);
            state.set_ready();
            tether_manager::api::app(state)
        });
        let admin = init.admin_token.to_string();
        let fixture = Fixture {
            runtime,
            router,
            admin,
            reader: String::new(),
            default_token_id: init.default_token_id.clone(),
            _dir: dir,
        };
        let (status, body) = call(
            &fixture,
            Method::POST,
            "/api/v1/admin-tokens",
            &fixture.admin,
            br#"{"name":"reader","scopes":["tokens:read"]}"#,
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let reader = body["value"].as_str().expect("admin token value").to_owned();
        Fixture { reader, ..fixture }
    })
}

fn call(
    f: &Fixture,
    method: Method,
    path: &str,
    bearer: &str,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request builds");
    f.runtime.block_on(async {
        let response = f.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body reads");
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    })
}

/// Sends one body to the endpoint the mode picks and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let Some((mode, body)) = input::mode(data) else { return Reached::Refused };
    let f = fixture();
    let token = &f.default_token_id;
    let (path, bearer) = match usize::from(mode) % ENDPOINTS {
        0 => ("/api/v1/accounts".to_owned(), &f.admin),
        1 => ("/api/v1/accounts/fuzz/tokens".to_owned(), &f.admin),
        2 => (format!("/api/v1/accounts/fuzz/tokens/{token}/rotate"), &f.admin),
        3 => ("/api/v1/admin-tokens".to_owned(), &f.admin),
        4 => (format!("/api/v1/delegates/{}/ping", uuid::Uuid::nil()), &f.admin),
        _ => ("/api/v1/accounts/fuzz/tokens".to_owned(), &f.reader),
    };
    let (status, answer) = call(f, Method::POST, &path, bearer, body);
    assert!(!status.is_server_error(), "{path}: {status} for a client's body: {answer}");
    if usize::from(mode) % ENDPOINTS == 5 {
        assert!(!status.is_success(), "a tokens:read admin token created a token");
    }
    if status.is_success() {
        if let Some(value) = answer["value"].as_str().filter(|v| v.starts_with("tdt_")) {
            assert!(Token::parse(value).is_ok(), "a created token's value does not parse");
        }
        Reached::Accepted
    } else {
        assert!(answer["error"]["code"].is_string(), "{path}: {status} without a JSON error: {answer}");
        Reached::Parsed
    }
}

/// Valid bodies for every endpoint, and a few near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    let bodies: [(u8, &str); 10] = [
        (0, r#"{"id":"acct-2","name":"Second"}"#),
        (1, r#"{"name":"ci-1"}"#),
        (1, r#"{"name":"ci-2","expires_in_secs":3600,"allowed_cidrs":["10.0.0.0/8","::1/128"]}"#),
        (1, r#"{"name":"bad cidr","allowed_cidrs":["10.0.0.0/33"]}"#),
        (2, r#"{"grace_secs":60}"#),
        (2, r#"{}"#),
        (3, r#"{"name":"ops","scopes":["delegates:read","delegates:write"],"expires_in_secs":60}"#),
        (3, r#"{"name":"bad","scopes":["root"]}"#),
        (4, r#"{"payload":"hello"}"#),
        (5, r#"{"name":"sneaky"}"#),
    ];
    bodies.iter().map(|(mode, body)| [&[*mode][..], body.as_bytes()].concat()).collect()
}
