//! Reading a PEM certificate back: subject, SANs, validity, SHA-256 fingerprint, and what a
//! strict verifier (OpenSSL `-x509_strict`, Python's `VERIFY_X509_STRICT`) would object to.
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject, as `CN=…`.
    pub subject: String,
    /// The issuer, as `CN=…`.
    pub issuer: String,
    /// DNS names and IP addresses of the subject alternative name extension.
    pub sans: Vec<String>,
    /// Not valid before (Unix seconds).
    pub not_before: i64,
    /// Not valid after (Unix seconds).
    pub not_after: i64,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub sha256: String,
    /// Whether Basic Constraints says CA:true.
    pub is_ca: bool,
    /// Subject key identifier (hex), if present.
    pub subject_key_id: Option<String>,
    /// Authority key identifier (hex), if present.
    pub authority_key_id: Option<String>,
    /// What a strict verifier refuses in this certificate for its role (empty: nothing).
    pub strict_problems: Vec<String>,
}

/// The role a certificate plays, for the strictness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The self-signed CA delegates and clients trust.
    Ca,
    /// The server (leaf) certificate.
    Leaf,
}

fn pem_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads the first certificate of a PEM file.
pub fn read(path: &Path, role: Role) -> Result<CertInfo, TlsError> {
    let der = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .next()
        .ok_or_else(|| pem_err(path, "no certificate"))?
        .map_err(|e| pem_err(path, e))?;
    parse(der.as_ref(), role).map_err(|reason| pem_err(path, reason))
}

/// Parses a DER certificate.
pub fn parse(der: &[u8], role: Role) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut sans = Vec::new();
    let mut bc: Option<(bool, bool)> = None;
    let mut ku: Option<(bool, bool, bool)> = None; // digitalSignature, keyCertSign, critical
    let mut eku_server_auth = false;
    let (mut ski, mut aki) = (None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => sans.push(
                                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or([0; 4]))
                                    .to_string(),
                            ),
                            16 => sans.push(
                                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or([0; 16]))
                                    .to_string(),
                            ),
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(b) => bc = Some((b.ca, ext.critical)),
            ParsedExtension::KeyUsage(k) => {
                ku = Some((k.digital_signature(), k.key_cert_sign(), ext.critical));
            }
            ParsedExtension::ExtendedKeyUsage(e) => eku_server_auth = e.server_auth,
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(hex::encode(k.0)),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| hex::encode(k.0));
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut want = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    want(cert.version().0 == 2, "not an X.509 v3 certificate");
    want(ski.is_some(), "no Subject Key Identifier");
    match role {
        Role::Ca => {
            want(bc == Some((true, true)), "no critical Basic Constraints CA:true");
            want(matches!(ku, Some((_, true, _))), "no Key Usage keyCertSign");
        }
        Role::Leaf => {
            want(aki.is_some(), "no Authority Key Identifier");
            want(matches!(bc, Some((false, _))), "no Basic Constraints CA:false");
            want(matches!(ku, Some((true, _, _))), "no Key Usage digitalSignature");
            want(eku_server_auth, "no Extended Key Usage serverAuth");
            want(!sans.is_empty(), "no subject alternative names");
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256: hex::encode(Sha256::digest(der)),
        is_ca: bc.is_some_and(|(ca, _)| ca),
        subject_key_id: ski,
        authority_key_id: aki,
        strict_problems: problems,
    })
}
