//! `[tls]`: the server certificate, and `[[tls.certificate]]`: more
//! certificates chosen by SNI.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    /// Extra certificates, chosen by the name the client asks for (SNI).
    pub certificate: Vec<CertificateConfig>,
}

/// One `[[tls.certificate]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Names it is chosen for: `mx.example.net` or `*.example.net`.
    pub names: Vec<String>,
    /// PEM certificate chain, end-entity first.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}
