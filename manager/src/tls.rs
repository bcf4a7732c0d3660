//! TLS material: a generated self-signed CA and server certificate kept in the data dir (or
//! operator-supplied PEM files), and the rustls server configuration (ring provider).
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub mod inspect;

/// CA certificate file name in the data dir.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// Server certificate file name in the data dir.
pub const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";

/// Errors building TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The clock is outside the range a certificate can state.
    #[error("the system clock is out of range for a certificate")]
    Clock,
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the server's certificate chain and key are, and the CA a client should trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain PEM.
    pub cert: PathBuf,
    /// Server private key PEM.
    pub key: PathBuf,
    /// The generated CA's certificate, when the certificates are generated.
    pub ca: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.display().to_string(), source }
}

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readers {
    /// The owner only (0600): private keys.
    Owner,
    /// Everyone (0644): certificates.
    Everyone,
}

impl Readers {
    fn mode(self) -> u32 {
        match self {
            Self::Owner => 0o600,
            Self::Everyone => 0o644,
        }
    }
}

/// Whether an existing server certificate is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerCert {
    /// Kept unless [`renewal_due`] says otherwise (`serve`).
    KeepExisting,
    /// Always issued anew (`init`, which may bring new SANs).
    Reissue,
}

/// Lifetime of a generated server certificate, in days (browsers and strict clients accept at
/// most 398).
pub const LEAF_LIFETIME_DAYS: i64 = 397;
/// A generated server certificate this close to its expiry (days) is renewed at `serve` start.
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// Lifetime of a generated CA, in days (delegates pin it, so it is long).
pub const CA_LIFETIME_DAYS: i64 = 20 * 365;
/// Generated certificates start this long before now (seconds), for clients whose clock is
/// slightly behind.
const BACKDATE_SECS: i64 = 3600;
const DAY: i64 = 86_400;

/// Why a server certificate was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// There was none (or the CA was just created).
    New,
    /// `init` asked for it.
    Requested,
    /// The previous one expires within [`RENEW_WITHIN_DAYS`] (or has expired).
    Expiring {
        /// Its expiry (Unix seconds).
        not_after: i64,
    },
    /// The previous one is refused by strict verifiers (made by an older version).
    NotStrict(Vec<String>),
    /// The previous one was not issued by the CA in the data dir, or cannot be read.
    Unusable(String),
}

impl std::fmt::Display for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::New => f.write_str("no server certificate yet"),
            Self::Requested => f.write_str("requested"),
            Self::Expiring { not_after } => write!(f, "the previous one expires at {not_after} (Unix time)"),
            Self::NotStrict(p) => {
                write!(f, "the previous one is refused by strict clients: {}", p.join(", "))
            }
            Self::Unusable(why) => write!(f, "the previous one is unusable: {why}"),
        }
    }
}

/// Whether the server certificate `leaf` must be issued anew from `ca` at `now` (Unix
/// seconds): it expires within [`RENEW_WITHIN_DAYS`], a strict client would refuse it, or it
/// was not issued by `ca`.
pub fn renewal_due(leaf: &inspect::CertInfo, ca: &inspect::CertInfo, now: i64) -> Option<Issued> {
    if !leaf.strict_problems.is_empty() {
        return Some(Issued::NotStrict(leaf.strict_problems.clone()));
    }
    if leaf.issuer != ca.subject || leaf.authority_key_id != ca.subject_key_id {
        return Some(Issued::Unusable("not issued by the CA in the data dir".into()));
    }
    if leaf.not_after.saturating_sub(now) <= RENEW_WITHIN_DAYS * DAY {
        return Some(Issued::Expiring { not_after: leaf.not_after });
    }
    None
}

fn write_file(path: &Path, data: &str, readers: Readers) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(readers.mode());
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// The generated files in `data_dir`, creating the CA and the server certificate if missing.
/// An existing server certificate is kept unless [`renewal_due`] (then it is issued anew by
/// the same CA, with the same SANs, and this is logged). SANs: localhost, 127.0.0.1, ::1 and
/// `extra_sans`.
pub fn ensure_generated(data_dir: &Path, extra_sans: &[String]) -> Result<TlsFiles, TlsError> {
    let (files, issued) = generate(data_dir, extra_sans, ServerCert::KeepExisting, now_unix())?;
    if let Some(issued) = issued {
        let leaf = inspect::read(&files.cert, inspect::Role::Leaf)?;
        tracing::warn!(cert = %files.cert.display(), reason = %issued, not_after = leaf.not_after,
            sha256 = %leaf.sha256, "issued a new server certificate from the data dir's CA");
    }
    Ok(files)
}

/// Like [`ensure_generated`], but the server certificate is always issued anew (by the same
/// CA, created if missing), for `extra_sans` to take effect.
pub fn reissue_server_cert(data_dir: &Path, extra_sans: &[String]) -> Result<TlsFiles, TlsError> {
    Ok(generate(data_dir, extra_sans, ServerCert::Reissue, now_unix())?.0)
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn at(unix: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| TlsError::Clock)
}

fn generate(
    data_dir: &Path,
    extra_sans: &[String],
    server_cert: ServerCert,
    now: i64,
) -> Result<(TlsFiles, Option<Issued>), TlsError> {
    let (ca_cert, ca_key) = (data_dir.join(CA_CERT), data_dir.join(CA_KEY));
    let (cert, key) = (data_dir.join(SERVER_CERT), data_dir.join(SERVER_KEY));
    if !ca_cert.exists() || !ca_key.exists() {
        let ca_kp = rcgen::KeyPair::generate()?;
        let ca = ca_params(now)?.self_signed(&ca_kp)?;
        write_file(&ca_key, &ca_kp.serialize_pem(), Readers::Owner)?;
        write_file(&ca_cert, &ca.pem(), Readers::Everyone)?;
        let _ = std::fs::remove_file(&cert);
    }
    let ca_info = inspect::read(&ca_cert, inspect::Role::Ca)?;
    let mut previous_sans = Vec::new();
    let issued = if server_cert == ServerCert::Reissue {
        Some(Issued::Requested)
    } else if !cert.exists() || !key.exists() {
        Some(Issued::New)
    } else {
        match inspect::read(&cert, inspect::Role::Leaf) {
            Ok(leaf) => {
                let due = renewal_due(&leaf, &ca_info, now);
                previous_sans = leaf.sans;
                due
            }
            Err(e) => Some(Issued::Unusable(e.to_string())),
        }
    };
    if issued.is_some() {
        let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        for san in previous_sans.into_iter().chain(extra_sans.iter().cloned()) {
            if !san.is_empty() && !sans.contains(&san) {
                sans.push(san);
            }
        }
        issue_leaf(
            &ca_cert,
            &ca_key,
            &cert,
            &key,
            sans,
            now,
            (now + LEAF_LIFETIME_DAYS * DAY).min(ca_info.not_after),
        )?;
    }
    Ok((TlsFiles { cert, key, ca: Some(ca_cert) }, issued))
}

/// Issues the server certificate (ECDSA P-256, so Key Usage is digitalSignature only) from
/// the stored CA, valid from `now` (backdated by [`BACKDATE_SECS`]) to `not_after`.
fn issue_leaf(
    ca_cert: &Path,
    ca_key: &Path,
    cert: &Path,
    key: &Path,
    sans: Vec<String>,
    now: i64,
    not_after: i64,
) -> Result<(), TlsError> {
    let ca_key_pem = std::fs::read_to_string(ca_key).map_err(io_err(ca_key))?;
    let ca_cert_pem = std::fs::read_to_string(ca_cert).map_err(io_err(ca_cert))?;
    let ca_kp = rcgen::KeyPair::from_pem(&ca_key_pem)?;
    // The issuer is read from the stored CA certificate, so the leaf's issuer name and
    // Authority Key Identifier are exactly the CA's subject and Subject Key Identifier.
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert_pem, ca_kp)?;
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(now - BACKDATE_SECS)?;
    params.not_after = at(not_after)?;
    let kp = rcgen::KeyPair::generate()?;
    let server = params.signed_by(&kp, &issuer)?;
    write_file(key, &kp.serialize_pem(), Readers::Owner)?;
    write_file(cert, &server.pem(), Readers::Everyone)?;
    Ok(())
}

fn ca_params(now: i64) -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = at(now - BACKDATE_SECS)?;
    params.not_after = at(now + CA_LIFETIME_DAYS * DAY)?;
    Ok(params)
}

/// Lowercase hex SHA-256 of the first certificate in a PEM file (to pin or compare a CA).
pub fn fingerprint_sha256(pem_path: &Path) -> Result<String, TlsError> {
    let der = CertificateDer::pem_file_iter(pem_path)
        .map_err(|e| TlsError::Pem { path: pem_path.display().to_string(), reason: e.to_string() })?
        .next()
        .ok_or_else(|| TlsError::Pem {
            path: pem_path.display().to_string(),
            reason: "no certificate".into(),
        })?
        .map_err(|e| TlsError::Pem { path: pem_path.display().to_string(), reason: e.to_string() })?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

/// The rustls server configuration for `files` with the process-default (ring) provider,
/// HTTP/1.1 only (the WebSocket upgrade needs it).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.display().to_string();
        move |e: rustls_pki_types::pem::Error| TlsError::Pem { path, reason: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(pem_err(&files.cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(&files.cert))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.display().to_string(),
            reason: "no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_err(&files.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A rustls client configuration trusting only the CA in `ca_pem` (CLI and tests).
pub fn client_config(ca_pem: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let pem_err = |e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: ca_pem.display().to_string(),
        reason: e.to_string(),
    };
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(pem_err)? {
        roots.add(cert.map_err(pem_err)?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_builds_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_generated(dir.path(), &["manager".into()]).unwrap();
        let server = std::fs::read(&files.cert).unwrap();
        ensure_generated(dir.path(), &[]).unwrap();
        assert_eq!(std::fs::read(&files.cert).unwrap(), server, "serve keeps the server certificate");
        server_config(&files).unwrap();
        client_config(files.ca.as_ref().unwrap()).unwrap();
        let fp = fingerprint_sha256(files.ca.as_ref().unwrap()).unwrap();
        assert_eq!(fp.len(), 64);
        // Regenerating the server certificate keeps the CA.
        reissue_server_cert(dir.path(), &[]).unwrap();
        assert_eq!(fingerprint_sha256(files.ca.as_ref().unwrap()).unwrap(), fp);
        assert_ne!(std::fs::read(&files.cert).unwrap(), server, "init issues a new server certificate");
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(CA_KEY), mode(SERVER_KEY)), (0o600, 0o600));
        assert_eq!((mode(CA_CERT), mode(SERVER_CERT)), (0o644, 0o644));
    }

    fn leaf(dir: &Path) -> inspect::CertInfo {
        inspect::read(&dir.join(SERVER_CERT), inspect::Role::Leaf).unwrap()
    }

    fn ca_fp(dir: &Path) -> String {
        fingerprint_sha256(&dir.join(CA_CERT)).unwrap()
    }

    #[test]
    fn generated_certificates_are_strict_clean_and_short_lived() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        generate(dir.path(), &["manager.example".into()], ServerCert::Reissue, now).unwrap();
        let ca = inspect::read(&dir.path().join(CA_CERT), inspect::Role::Ca).unwrap();
        let leaf = leaf(dir.path());
        assert_eq!(ca.strict_problems, Vec::<String>::new());
        assert_eq!(leaf.strict_problems, Vec::<String>::new());
        assert!(ca.is_ca && !leaf.is_ca);
        assert_eq!(leaf.authority_key_id, ca.subject_key_id);
        assert_eq!(leaf.sans, ["localhost", "127.0.0.1", "::1", "manager.example"]);
        assert!(leaf.not_before <= now && leaf.not_before >= now - 2 * BACKDATE_SECS);
        assert!(leaf.not_after - leaf.not_before <= 398 * DAY, "leaf lifetime at most 398 days");
        assert!(leaf.not_after > now + 390 * DAY);
    }

    #[test]
    fn a_leaf_within_30_days_of_expiry_is_renewed_by_the_same_ca_with_its_sans() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        // Issued 370 days ago: 27 days left.
        generate(dir.path(), &["manager.example".into()], ServerCert::Reissue, now - 370 * DAY).unwrap();
        let (ca_before, old) = (ca_fp(dir.path()), leaf(dir.path()));
        assert!(old.not_after - now < RENEW_WITHIN_DAYS * DAY);
        let (_, issued) = generate(dir.path(), &[], ServerCert::KeepExisting, now).unwrap();
        assert_eq!(issued, Some(Issued::Expiring { not_after: old.not_after }));
        let new = leaf(dir.path());
        assert_eq!(ca_fp(dir.path()), ca_before, "the CA is kept, so delegates keep trusting it");
        assert_ne!(new.sha256, old.sha256);
        assert!(new.not_after > now + 390 * DAY);
        assert_eq!(new.sans, old.sans, "the SANs given at init are kept");
    }

    #[test]
    fn a_leaf_with_more_than_30_days_left_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        // Issued 300 days ago: 97 days left.
        generate(dir.path(), &[], ServerCert::Reissue, now - 300 * DAY).unwrap();
        let bytes = std::fs::read(dir.path().join(SERVER_CERT)).unwrap();
        let (_, issued) = generate(dir.path(), &[], ServerCert::KeepExisting, now).unwrap();
        assert_eq!(issued, None);
        assert_eq!(std::fs::read(dir.path().join(SERVER_CERT)).unwrap(), bytes);
    }

    #[test]
    fn a_leaf_from_the_old_generator_is_reissued_and_the_old_ca_kept() {
        let dir = tempfile::tempdir().unwrap();
        // What the previous version wrote: a CA valid 2024–2045 and a leaf without AKI, Key
        // Usage or Basic Constraints, valid 2024–2044.
        let ca_kp = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = ca_params(0).unwrap();
        ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let ca = ca_params.self_signed(&ca_kp).unwrap();
        write_file(&dir.path().join(CA_KEY), &ca_kp.serialize_pem(), Readers::Owner).unwrap();
        write_file(&dir.path().join(CA_CERT), &ca.pem(), Readers::Everyone).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_kp);
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let kp = rcgen::KeyPair::generate().unwrap();
        let old = params.signed_by(&kp, &issuer).unwrap();
        write_file(&dir.path().join(SERVER_KEY), &kp.serialize_pem(), Readers::Owner).unwrap();
        write_file(&dir.path().join(SERVER_CERT), &old.pem(), Readers::Everyone).unwrap();
        let ca_before = ca_fp(dir.path());

        let (_, issued) = generate(dir.path(), &[], ServerCert::KeepExisting, now_unix()).unwrap();
        let Some(Issued::NotStrict(problems)) = issued else { panic!("not reissued: {issued:?}") };
        assert!(problems.iter().any(|p| p.contains("Authority Key Identifier")), "{problems:?}");
        assert_eq!(ca_fp(dir.path()), ca_before);
        assert_eq!(leaf(dir.path()).strict_problems, Vec::<String>::new());
        assert!(leaf(dir.path()).not_after < now_unix() + 398 * DAY);
    }
}
