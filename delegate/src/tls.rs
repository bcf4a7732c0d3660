//! The TLS client configuration towards the manager: rustls with the ring provider, trusting
//! the pinned CA certificates if any, else the public web roots compiled in. Built once, by
//! [`crate::config::Config::load`], so an unusable CA is bad configuration (exit 64).
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// TLS client configuration: the pinned CA certificates if any, else the public web roots.
pub fn client_config(ca_certs: &[CertificateDer<'static>]) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    if ca_certs.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in ca_certs {
            roots.add(cert.clone())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
