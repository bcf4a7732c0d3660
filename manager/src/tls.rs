//! TLS material: a generated self-signed CA and server certificate kept in the data dir (or
//! operator-supplied PEM files), and the rustls server configuration (ring provider).
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// CA certificate file name in the data dir.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
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
    /// Kept when both its files exist (`serve`).
    KeepExisting,
    /// Always issued anew (`init`, which may bring new SANs).
    Reissue,
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

/// The generated files in `data_dir`, creating the CA and the server certificate if missing
/// (an existing server certificate is kept). SANs: localhost, 127.0.0.1, ::1 and `extra_sans`.
pub fn ensure_generated(data_dir: &Path, extra_sans: &[String]) -> Result<TlsFiles, TlsError> {
    generate(data_dir, extra_sans, ServerCert::KeepExisting)
}

/// Like [`ensure_generated`], but the server certificate is always issued anew (by the same
/// CA, created if missing), for `extra_sans` to take effect.
pub fn reissue_server_cert(data_dir: &Path, extra_sans: &[String]) -> Result<TlsFiles, TlsError> {
    generate(data_dir, extra_sans, ServerCert::Reissue)
}

fn generate(data_dir: &Path, extra_sans: &[String], server_cert: ServerCert) -> Result<TlsFiles, TlsError> {
    let (ca_cert, ca_key) = (data_dir.join(CA_CERT), data_dir.join(CA_KEY));
    let (cert, key) = (data_dir.join(SERVER_CERT), data_dir.join(SERVER_KEY));
    if !ca_cert.exists() || !ca_key.exists() {
        let ca_kp = rcgen::KeyPair::generate()?;
        let ca = ca_params()?.self_signed(&ca_kp)?;
        write_file(&ca_key, &ca_kp.serialize_pem(), Readers::Owner)?;
        write_file(&ca_cert, &ca.pem(), Readers::Everyone)?;
        let _ = std::fs::remove_file(&cert);
    }
    if server_cert == ServerCert::Reissue || !cert.exists() || !key.exists() {
        let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;
        let ca_kp = rcgen::KeyPair::from_pem(&ca_key_pem)?;
        // The issuer is rebuilt from the same parameters and key as the stored CA, so the
        // issuer name and key identifier match it.
        let issuer = rcgen::Issuer::new(ca_params()?, ca_kp);
        let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        sans.extend(extra_sans.iter().filter(|s| !s.is_empty()).cloned());
        sans.dedup();
        let mut params = rcgen::CertificateParams::new(sans)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let kp = rcgen::KeyPair::generate()?;
        let server = params.signed_by(&kp, &issuer)?;
        write_file(&key, &kp.serialize_pem(), Readers::Owner)?;
        write_file(&cert, &server.pem(), Readers::Everyone)?;
    }
    Ok(TlsFiles { cert, key, ca: Some(ca_cert) })
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tether manager CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
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
}
