//! Unit tests of configuration validation, with a `HashMap` as the environment.
use std::collections::HashMap;

use rustls_pki_types::CertificateDer;
use tether_protocol::Token;
use uuid::Uuid;

use super::*;

fn token(byte: u8) -> String {
    Token::from_parts(Uuid::new_v4(), [byte; 32]).expose().to_string()
}

fn base(secret: &str) -> HashMap<String, String> {
    HashMap::from([
        ("ACCOUNT_ID".to_owned(), "acme".to_owned()),
        ("ACCOUNT_SECRET".to_owned(), secret.to_owned()),
        ("MANAGER_HOST_AND_PORT".to_owned(), "manager.example:8443".to_owned()),
        ("DELEGATE_NAME".to_owned(), "d1".to_owned()),
    ])
}

fn load(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    Config::load(&RunFlags::default(), env)
}

#[test]
fn valid_environment_loads() {
    let secret = token(1);
    let config = load(&base(&secret)).unwrap();
    assert_eq!(config.account_id, "acme");
    assert_eq!(config.endpoints, vec![Endpoint { host: "manager.example".into(), port: 8443 }]);
    assert_eq!(config.delegate_name, "d1");
    assert_eq!(config.candidates.len(), 1);
    assert_eq!(config.candidates[0].source, TokenSource::Env("ACCOUNT_SECRET"));
    assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(config.apply_mode, ApplyModeSetting::Auto);
}

#[test]
fn flags_override_environment() {
    let env = base(&token(1));
    let flags = RunFlags { delegate_name: Some("from-flag".into()), ..RunFlags::default() };
    assert_eq!(Config::load(&flags, &env).unwrap().delegate_name, "from-flag");
}

#[test]
fn missing_variables_are_named() {
    for var in ["ACCOUNT_ID", "MANAGER_HOST_AND_PORT", "ACCOUNT_SECRET"] {
        let mut env = base(&token(1));
        env.remove(var);
        assert_eq!(load(&env).unwrap_err().var, var);
    }
}

#[test]
fn malformed_tokens_give_the_reason_and_never_the_value() {
    let good = token(2);
    let mut flipped: Vec<char> = good.chars().collect();
    flipped[40] = if flipped[40] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    let cases = [
        (flipped, "checksum"),
        (format!("xyz_{}", &good[4..]), "prefix"),
        (good[..60].to_owned(), "characters, expected 74"),
    ];
    for (bad, reason) in cases {
        let err = load(&base(&bad)).unwrap_err();
        assert_eq!(err.var, "ACCOUNT_SECRET");
        let text = err.to_string();
        assert!(text.contains(reason), "{text}");
        assert!(!text.contains(&bad[4..20]), "value leaked: {text}");
    }
}

#[test]
fn delegate_token_is_an_alias_and_must_agree() {
    let secret = token(3);
    let mut env = base(&secret);
    env.remove("ACCOUNT_SECRET");
    env.insert("DELEGATE_TOKEN".into(), secret.clone());
    assert_eq!(load(&env).unwrap().candidates[0].source, TokenSource::Env("DELEGATE_TOKEN"));
    env.insert("ACCOUNT_SECRET".into(), token(4));
    assert_eq!(load(&env).unwrap_err().var, "DELEGATE_TOKEN");
}

#[test]
fn token_whitespace_is_trimmed() {
    let secret = token(5);
    assert!(load(&base(&format!("  {secret}\n"))).is_ok());
}

#[test]
fn endpoint_forms() {
    let ok = [
        ("host:1", "host", 1),
        ("https://host:8443", "host", 8443),
        ("wss://host:8443/", "host", 8443),
        ("host", "host", 443),
        ("[::1]:8443", "::1", 8443),
        ("127.0.0.1:9", "127.0.0.1", 9),
    ];
    for (text, host, port) in ok {
        assert_eq!(parse_endpoint(text).unwrap(), Endpoint { host: host.into(), port }, "{text}");
    }
    for bad in ["http://host:1", "ws://host:1", "host:0", "host:x", ":8443", "host:1/path", "::1:8443"] {
        assert_eq!(parse_endpoint(bad).unwrap_err().var, "MANAGER_HOST_AND_PORT", "{bad}");
    }
    assert_eq!(parse_endpoint("[::1]:8443").unwrap().url(), "wss://[::1]:8443/api/v1/delegates/connect");
}

#[test]
fn file_token_is_tried_before_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let (env_secret, file_secret) = (token(6), token(7));
    std::fs::write(&file, format!("{file_secret}\n")).unwrap();
    let mut env = base(&env_secret);
    env.insert("ACCOUNT_SECRET_FILE".into(), file.display().to_string());
    let config = load(&env).unwrap();
    let sources: Vec<_> = config.candidates.iter().map(|c| c.source.clone()).collect();
    assert_eq!(sources, [TokenSource::File, TokenSource::Env("ACCOUNT_SECRET")]);
    assert_eq!(config.state_dir, dir.path());

    // Same token in both: tried once.
    std::fs::write(&file, &env_secret).unwrap();
    assert_eq!(load(&env).unwrap().candidates.len(), 1);

    // Missing file: seeded later from the environment.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(load(&env).unwrap().candidates.len(), 1);

    // Missing file and no environment token.
    env.remove("ACCOUNT_SECRET");
    assert_eq!(load(&env).unwrap_err().var, "ACCOUNT_SECRET_FILE");

    // Malformed file content.
    std::fs::write(&file, "tdt_garbage").unwrap();
    let err = load(&env).unwrap_err();
    assert_eq!(err.var, "ACCOUNT_SECRET_FILE");
    assert!(!err.to_string().contains("garbage"));
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not pem").unwrap();
    let mut env = base(&token(8));
    env.insert("MANAGER_CA_CERT".into(), ca.display().to_string());
    assert_eq!(load(&env).unwrap_err().var, "MANAGER_CA_CERT");
    env.insert("MANAGER_CA_CERT".into(), dir.path().join("missing.pem").display().to_string());
    assert_eq!(load(&env).unwrap_err().var, "MANAGER_CA_CERT");
    // PEM framing around bytes that are no certificate.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    env.insert("MANAGER_CA_CERT".into(), ca.display().to_string());
    assert_eq!(load(&env).unwrap_err().var, "MANAGER_CA_CERT");
}

#[test]
fn numbers_and_modes_are_validated() {
    let mut env = base(&token(9));
    env.insert("TETHER_REPLACE_TIMEOUT_SECS".into(), "soon".into());
    assert_eq!(load(&env).unwrap_err().var, "TETHER_REPLACE_TIMEOUT_SECS");
    env.remove("TETHER_REPLACE_TIMEOUT_SECS");
    env.insert("TETHER_APPLY_MODE".into(), "file".into());
    assert_eq!(load(&env).unwrap_err().var, "TETHER_APPLY_MODE");
    env.insert("TETHER_APPLY_MODE".into(), "sometimes".into());
    assert_eq!(load(&env).unwrap_err().var, "TETHER_APPLY_MODE");
    env.insert("TETHER_APPLY_MODE".into(), "manual".into());
    assert_eq!(load(&env).unwrap().apply_mode, ApplyModeSetting::Manual);
    env.insert("TETHER_CONTAINER_ID".into(), "not-hex".into());
    assert_eq!(load(&env).unwrap_err().var, "TETHER_CONTAINER_ID");
}

/// A private CA and a `localhost` server certificate it signed; returns the CA's PEM and the
/// server's TLS configuration.
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    (ca.pem(), Arc::new(server))
}

/// A TLS handshake in memory between `client` and `server`; `Err` with the client's error.
fn handshake(client: Arc<ClientConfig>, server: Arc<rustls::ServerConfig>) -> Result<(), rustls::Error> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client, name).unwrap();
    let mut server = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        if !client.is_handshaking() {
            return Ok(());
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut wire.as_slice()).unwrap();
        let _ = server.process_new_packets();
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets()?;
    }
    panic!("the handshake did not finish in 20 rounds");
}

#[test]
fn the_tls_configuration_built_at_load_trusts_the_pinned_ca_only() {
    let (ca_pem, server) = private_ca();
    let (_, stranger) = private_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let mut env = base(&token(10));
    env.insert("MANAGER_CA_CERT".into(), ca.display().to_string());
    let pinned = load(&env).unwrap().tls;
    handshake(pinned.clone(), server.clone()).expect("the pinned CA's certificate is trusted");
    assert!(handshake(pinned, stranger).is_err(), "a certificate of another CA is trusted");
    // Without MANAGER_CA_CERT: the public roots, which do not hold the private CA.
    env.remove("MANAGER_CA_CERT");
    assert!(handshake(load(&env).unwrap().tls, server).is_err());
}

#[test]
fn kubernetes_settings_have_defaults_and_are_validated() {
    let mut env = base(&token(4));
    env.insert("HOSTNAME".into(), "tether-delegate-7d9f-abcde".into());
    let k8s = load(&env).unwrap().kubernetes;
    assert_eq!(k8s.secret, DEFAULT_K8S_SECRET);
    assert_eq!(k8s.serviceaccount_dir, PathBuf::from(DEFAULT_K8S_SERVICEACCOUNT_DIR));
    assert_eq!(k8s.pod_name, "tether-delegate-7d9f-abcde", "the pod name defaults to the host name");
    assert_eq!((k8s.service_host, k8s.service_port), (None, 443));
    assert!(!load(&env).unwrap().kubernetes.in_pod(), "no KUBERNETES_SERVICE_HOST");

    env.insert("TETHER_APPLY_MODE".into(), "kubernetes".into());
    assert_eq!(load(&env).unwrap().apply_mode, ApplyModeSetting::Kubernetes);
    for (var, bad) in [
        ("TETHER_K8S_SECRET", "Not_A_Name"),
        ("TETHER_K8S_SECRET", "-x"),
        ("TETHER_K8S_POD_NAME", "pod/../x"),
        ("KUBERNETES_SERVICE_PORT", "0"),
        ("KUBERNETES_SERVICE_PORT", "https"),
    ] {
        let mut env = env.clone();
        env.insert(var.into(), bad.into());
        let err = load(&env).unwrap_err();
        assert_eq!(err.var, var, "{bad}");
        assert!(!err.to_string().contains(bad), "the value is echoed: {err}");
    }

    // In a pod: the service host is set and the service-account token is mounted.
    let dir = tempfile::tempdir().unwrap();
    env.insert("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
    env.insert("KUBERNETES_SERVICE_PORT".into(), "6443".into());
    env.insert("TETHER_K8S_SERVICEACCOUNT_DIR".into(), dir.path().display().to_string());
    env.insert("TETHER_K8S_SECRET".into(), "my-delegate-token".into());
    let k8s = load(&env).unwrap().kubernetes;
    assert!(!k8s.in_pod(), "no token mounted yet");
    std::fs::write(dir.path().join("token"), "sa-token").unwrap();
    let k8s = load(&env).unwrap().kubernetes;
    assert!(k8s.in_pod());
    assert_eq!((k8s.service_host.as_deref(), k8s.service_port), (Some("10.96.0.1"), 6443));
    assert_eq!(k8s.secret, "my-delegate-token");
}

#[test]
fn object_names_are_dns_subdomains() {
    for good in ["a", "tether-delegate", "x.y-1", &"a".repeat(253)] {
        assert!(is_object_name(good), "{good}");
    }
    for bad in ["", "A", "-a", "a-", "a_b", "a/b", "é", &"a".repeat(254)] {
        assert!(!is_object_name(bad), "{bad}");
    }
}

#[test]
fn a_list_of_managers_is_parsed_and_each_address_is_checked_as_one() {
    let list = parse_endpoints("m1.example:8443, https://m2.example:9443 ,[::1]:7000").unwrap();
    assert_eq!(
        list,
        vec![
            Endpoint { host: "m1.example".into(), port: 8443 },
            Endpoint { host: "m2.example".into(), port: 9443 },
            Endpoint { host: "::1".into(), port: 7000 },
        ]
    );
    // One address keeps its own messages; a bad entry of a list says what is wrong with it.
    assert_eq!(parse_endpoints("m1:8443").unwrap().len(), 1);
    let e = parse_endpoints("m1:8443,m2:0").unwrap_err();
    assert_eq!(e.var, "MANAGER_HOST_AND_PORT");
    assert!(e.to_string().contains("port"), "{e}");
    assert!(parse_endpoints(",").is_err(), "no address at all");
    let many = vec!["m:1"; MAX_ENDPOINTS + 1].join(",");
    assert!(parse_endpoints(&many).is_err());
    // Multi-byte text is refused cleanly, never sliced.
    assert!(parse_endpoints("mé:8443,ü:x").is_err());
}
