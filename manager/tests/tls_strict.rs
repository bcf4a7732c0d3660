//! The generated certificates against strict outside verifiers: Python's `ssl` module with
//! `VERIFY_X509_STRICT` (the default of Python 3.13, set explicitly here) connecting to the
//! real manager, and `openssl verify -x509_strict`; and a data dir from an older version (a
//! leaf without AKI, Key Usage or Basic Constraints, fixed validity) gets a strict-clean leaf
//! from the same CA at `serve` start, which `tls show` reports.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tether_tests::harness::{Manager, Options};

const BIN: &str = env!("CARGO_BIN_EXE_tether-manager");

async fn start() -> Manager {
    let options = Options { tls_sans: vec!["manager".into()], bin: Some(BIN.into()), ..Options::default() };
    Manager::start_with(options).await.expect("the manager starts")
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
        || Command::new(tool).arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: `{tool}` is not installed, so this strict-verifier check cannot run");
    }
    ok
}

/// `openssl verify -x509_strict -CAfile ca server`: stdout+stderr, and whether it passed.
fn openssl_verify(ca: &Path, server: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(ca)
        .arg(server)
        .output()
        .expect("openssl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains(": OK"), text)
}

/// Python's ssl client with `VERIFY_X509_STRICT`, the CA file and hostname checking, against
/// `host:port` (the SNI and checked name is `name`).
async fn python_strict_handshake(ca: &Path, port: u16, name: &str) -> (bool, String) {
    const SCRIPT: &str = r#"
import socket, ssl, sys
ca, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        print("handshake ok", tls.version())
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(ca)
        .arg(port.to_string())
        .arg(name)
        .output()
        .await
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("handshake ok"), text)
}

fn tls_show(data_dir: &Path) -> Value {
    let out = Command::new(BIN).args(["tls", "show", "--json", "--data-dir"]).arg(data_dir).output().unwrap();
    assert!(out.status.success(), "tls show: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn strict_python_and_openssl_accept_the_generated_chain() {
    if !have("python3") {
        return;
    }
    let m = start().await;
    let (ca, server) = (m.data_dir().join("ca.pem"), m.data_dir().join("server.pem"));
    for name in ["127.0.0.1", "localhost", "manager"] {
        let (ok, text) = python_strict_handshake(&ca, m.addr.port(), name).await;
        assert!(ok, "Python's strict client refused the manager as {name}: {text}");
    }
    if have("openssl") {
        let (ok, text) = openssl_verify(&ca, &server);
        assert!(ok, "openssl verify -x509_strict refused the chain: {text}");
    }
}

/// Writes what the previous version generated: a leaf signed by the data dir's CA with no
/// AKI, Key Usage or Basic Constraints, valid 2024-01-01 to 2044-01-01.
fn write_old_style_leaf(data_dir: &Path) {
    let ca_pem = std::fs::read_to_string(data_dir.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data_dir.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let sans = ["localhost", "127.0.0.1", "::1", "manager"].map(String::from).to_vec();
    let mut params = rcgen::CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&kp, &issuer).unwrap();
    std::fs::write(data_dir.join("server-key.pem"), kp.serialize_pem()).unwrap();
    std::fs::write(data_dir.join("server.pem"), cert.pem()).unwrap();
}

#[tokio::test]
async fn serve_reissues_an_old_style_leaf_from_the_same_ca() {
    let mut m = start().await;
    m.stop().await.unwrap();
    let data_dir: PathBuf = m.data_dir();
    write_old_style_leaf(&data_dir);
    let before = tls_show(&data_dir);
    assert_eq!(before["server"]["strict_clean"], false, "{before}");
    if have("openssl") {
        let (ok, text) = openssl_verify(&data_dir.join("ca.pem"), &data_dir.join("server.pem"));
        assert!(!ok, "the old-style leaf should be refused by openssl -x509_strict: {text}");
    }

    m.serve().await.unwrap();
    let after = tls_show(&data_dir);
    assert_eq!(after["ca"]["sha256"], before["ca"]["sha256"], "the CA is kept (delegates pin it)");
    assert_ne!(after["server"]["sha256"], before["server"]["sha256"]);
    assert_eq!(after["server"]["strict_clean"], true, "{after}");
    assert_eq!(after["server"]["sans"], before["server"]["sans"], "the SANs are kept");
    let days = after["server"]["days_left"].as_i64().unwrap();
    assert!((390..=398).contains(&days), "leaf lifetime {days} days");
    assert!(m.logs().contains("issued a new server certificate"), "the reissue is logged:\n{}", m.logs());
    if have("openssl") {
        let (ok, text) = openssl_verify(&data_dir.join("ca.pem"), &data_dir.join("server.pem"));
        assert!(ok, "{text}");
    }
    if have("python3") {
        let (ok, text) = python_strict_handshake(&data_dir.join("ca.pem"), m.addr.port(), "manager").await;
        assert!(ok, "{text}");
    }
}
