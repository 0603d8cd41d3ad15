//! How much TLS one destination gets (Postfix's `smtp_tls_security_level`
//! and `smtp_tls_policy_maps`): `none`, `may` (opportunistic STARTTLS, RFC
//! 3207, certificate not checked), `encrypt` (TLS required, certificate not
//! checked) or `verify` (TLS required and a certificate that chains to a
//! trusted root and names the MX host, RFC 7817 §3, RFC 6125 — or one of the
//! policy's `match` names). A per-destination entry overrides the default;
//! `relayhost` names the relayhost. Credentials never travel in clear, so a
//! relayhost with AUTH gets at least `encrypt`.
//!
//! Every attempt ends with a [`TlsResult`]: success, or the RFC 8460 §4.3
//! result type of what went wrong, for the metric and the logs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// A security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "none" => Level::None,
            "may" => Level::May,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
        }
    }

    /// Whether a session without TLS must not carry mail.
    pub fn requires_tls(self) -> bool {
        self >= Level::Encrypt
    }
}

/// One `[[delivery.tls_policy]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manual {
    /// A domain (comparable form), or `relayhost`.
    pub domain: String,
    pub level: Level,
    /// Names the certificate may carry instead of the MX host name.
    pub names: Vec<String>,
}

/// Which policy decided a destination's level (the `policy` label of
/// `mx6_delivery_tls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Level `none`: no TLS tried.
    None,
    /// The default `may`.
    Opportunistic,
    /// A `[[delivery.tls_policy]]` entry, the default `encrypt`/`verify`, or
    /// the relayhost's AUTH.
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Opportunistic => "opportunistic",
            Source::Manual => "manual",
        }
    }
}

/// What one destination gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub level: Level,
    pub source: Source,
    /// With `verify`: names other than the host's that the certificate may carry.
    pub names: Vec<String>,
}

/// The requirement for `domain` (or the relayhost when `relayhost`), with
/// `default` where no entry names it.
pub fn requirement(default: Level, manual: &[Manual], domain: &str, relayhost: bool, auth: bool) -> Requirement {
    let key = if relayhost { "relayhost" } else { domain };
    let entry = manual.iter().find(|m| m.domain.eq_ignore_ascii_case(key.trim_end_matches('.')));
    let (mut level, mut source, names) = match entry {
        Some(m) => (m.level, Source::Manual, m.names.clone()),
        None if default >= Level::Encrypt => (default, Source::Manual, Vec::new()),
        None if default == Level::None => (Level::None, Source::None, Vec::new()),
        None => (Level::May, Source::Opportunistic, Vec::new()),
    };
    if relayhost && auth && level < Level::Encrypt {
        (level, source) = (Level::Encrypt, Source::Manual);
    }
    Requirement { level, source, names }
}

/// How one attempt's TLS went (RFC 8460 §4.3 result types, and `success`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsResult {
    Success,
    /// No TLS was tried (level `none`, or `may` and the peer offers no STARTTLS).
    Plaintext,
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
}

impl TlsResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsResult::Success => "success",
            TlsResult::Plaintext => "plaintext",
            TlsResult::StarttlsNotSupported => "starttls-not-supported",
            TlsResult::CertificateHostMismatch => "certificate-host-mismatch",
            TlsResult::CertificateExpired => "certificate-expired",
            TlsResult::CertificateNotTrusted => "certificate-not-trusted",
            TlsResult::ValidationFailure => "validation-failure",
        }
    }

    /// The result type of a failed handshake.
    pub fn of_handshake(e: &std::io::Error) -> TlsResult {
        use rustls::CertificateError as C;
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsResult::CertificateHostMismatch,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => TlsResult::CertificateExpired,
                C::UnknownIssuer | C::BadSignature | C::Revoked => TlsResult::CertificateNotTrusted,
                _ => TlsResult::ValidationFailure,
            },
            _ => TlsResult::ValidationFailure,
        }
    }
}

/// The client configurations outbound SMTP uses: one that inspects nothing
/// (`may`, `encrypt`) and the trust store for `verify`.
#[derive(Debug, Clone)]
pub struct Connectors {
    pub unverified: Arc<rustls::ClientConfig>,
    /// `None` when no trust anchor could be loaded: `verify` then defers.
    pub webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl Connectors {
    /// Trust the system's roots and `ca_file`.
    pub fn new(ca_file: &str) -> Result<Connectors, crate::trust::TrustError> {
        let roots = crate::trust::roots(ca_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| crate::trust::TrustError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(Connectors { unverified: crate::remote::client_tls(), webpki: Some(webpki) })
    }

    /// Without verification (tests of `may`, LMTP).
    pub fn unverified() -> Connectors {
        Connectors { unverified: crate::remote::client_tls(), webpki: None }
    }

    /// The configuration for one session to `host` under `req`.
    pub fn for_session(&self, req: &Requirement, host: &str) -> Option<Arc<rustls::ClientConfig>> {
        if req.level != Level::Verify {
            return Some(self.unverified.clone());
        }
        let mut names: Vec<ServerName<'static>> = Vec::new();
        for n in req.names.iter().map(String::as_str).chain((req.names.is_empty()).then_some(host)) {
            if let Ok(s) = ServerName::try_from(n.trim_end_matches('.').to_ascii_lowercase()) {
                names.push(s);
            }
        }
        let verifier = Arc::new(AnyOf { inner: self.webpki.clone()?, names });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Some(Arc::new(c))
    }
}

/// Verifies a certificate for any of `names` (the SNI sent stays the host).
#[derive(Debug)]
struct AnyOf {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AnyOf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        for n in &self.names {
            match self.inner.verify_server_cert(end_entity, intermediates, n, ocsp, now) {
                Ok(v) => return Ok(v),
                // A name mismatch says less than any other failure: keep the other.
                Err(e) => {
                    let mismatch = matches!(
                        e,
                        rustls::Error::InvalidCertificate(
                            rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. }
                        )
                    );
                    if !mismatch || matches!(last, rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) {
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual(d: &str, l: Level) -> Manual {
        Manual { domain: d.into(), level: l, names: Vec::new() }
    }

    #[test]
    fn an_entry_overrides_the_default_and_auth_forces_encryption() {
        let m = vec![manual("example.net", Level::Verify), manual("relayhost", Level::None)];
        let r = requirement(Level::May, &m, "Example.NET.", false, false);
        assert_eq!((r.level, r.source), (Level::Verify, Source::Manual));
        let r = requirement(Level::May, &m, "other.example", false, false);
        assert_eq!((r.level, r.source), (Level::May, Source::Opportunistic));
        let r = requirement(Level::None, &m, "other.example", false, false);
        assert_eq!((r.level, r.source), (Level::None, Source::None));
        let r = requirement(Level::May, &m, "x", true, true);
        assert_eq!((r.level, r.source), (Level::Encrypt, Source::Manual), "AUTH never goes in clear");
        let r = requirement(Level::Verify, &[], "x", false, false);
        assert_eq!((r.level, r.source), (Level::Verify, Source::Manual));
    }

    #[test]
    fn handshake_errors_map_to_rfc8460_result_types() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let c = |c: rustls::CertificateError| TlsResult::of_handshake(&io(rustls::Error::InvalidCertificate(c)));
        assert_eq!(c(rustls::CertificateError::NotValidForName), TlsResult::CertificateHostMismatch);
        assert_eq!(c(rustls::CertificateError::Expired), TlsResult::CertificateExpired);
        assert_eq!(c(rustls::CertificateError::UnknownIssuer), TlsResult::CertificateNotTrusted);
        assert_eq!(TlsResult::of_handshake(&std::io::ErrorKind::BrokenPipe.into()), TlsResult::ValidationFailure);
    }
}
