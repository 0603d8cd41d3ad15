//! Which certificates outbound TLS trusts when it verifies (RFC 6125, RFC
//! 7817, RFC 8461 §4.2): the system's roots (`/etc/ssl/certs` through
//! rustls-native-certs) plus the PEM anchors of `[delivery] ca_file`.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {message}")]
    CaFile { path: String, message: String },
    #[error("no trust anchors: neither the system's roots nor ca_file gave one")]
    Empty,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The system's roots plus the anchors of `ca_file` (empty: none).
pub fn roots(ca_file: &str) -> Result<rustls::RootCertStore, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if !ca_file.is_empty() {
        let err = |e: rustls_pki_types::pem::Error| TrustError::CaFile { path: ca_file.to_string(), message: e.to_string() };
        for c in CertificateDer::pem_file_iter(ca_file).map_err(err)? {
            roots.add(c.map_err(err)?)?;
        }
    }
    if roots.is_empty() {
        return Err(TrustError::Empty);
    }
    Ok(roots)
}

/// A client configuration that verifies certificates against [`roots`],
/// with `alpn` protocols offered.
pub fn verifying_client(ca_file: &str, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let roots = roots(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(c))
}
