//! How much TLS one destination gets (Postfix's `smtp_tls_security_level`
//! and `smtp_tls_policy_maps`): `none`, `may` (opportunistic STARTTLS, RFC
//! 3207, certificate not checked), `encrypt` (TLS required, certificate not
//! checked) or `verify` (TLS required and a certificate that chains to a
//! trusted root and names the MX host, RFC 7817 §3, RFC 6125 — or one of the
//! policy's `match` names). A per-destination entry overrides everything;
//! `relayhost` names the relayhost. Without one, a domain's MTA-STS policy
//! ([`crate::mta_sts`], RFC 8461 §4–§5) decides: `enforce` means `verify`
//! for the MX host name and only MX hosts its `mx` patterns allow; `testing`
//! verifies and reports but delivers as `may` would. Otherwise the default
//! applies. Credentials never travel in clear, so a relayhost with AUTH gets
//! at least `encrypt`.
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
    /// DANE when the host has secure TLSA records, else `may` (entries only).
    Dane,
    /// DANE or nothing: a host without secure usable TLSA is not used.
    DaneOnly,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "none" => Level::None,
            "may" => Level::May,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            "dane" => Level::Dane,
            "dane-only" => Level::DaneOnly,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
            Level::Dane => "dane",
            Level::DaneOnly => "dane-only",
        }
    }

    /// Whether a session without TLS must not carry mail.
    pub fn requires_tls(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify | Level::DaneOnly)
    }

    /// Whether DANE decides (per host) under this level.
    pub fn dane(self) -> bool {
        matches!(self, Level::Dane | Level::DaneOnly)
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
    /// The domain's MTA-STS policy (enforce or testing).
    MtaSts,
    /// The MX host's TLSA records (RFC 7672).
    Dane,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Opportunistic => "opportunistic",
            Source::Manual => "manual",
            Source::MtaSts => "mta_sts",
            Source::Dane => "dane",
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
    /// The MTA-STS policy in force: only hosts it allows carry the mail
    /// (under `enforce`).
    pub sts: Option<mx6_policy::mta_sts::Policy>,
    /// MTA-STS `testing`: the certificate and the host are checked and the
    /// failures reported, but the mail goes as with `may`.
    pub report_only: bool,
    /// DANE: the usable TLSA records the certificate must match.
    pub tlsa: Vec<mx6_dns::secure::Tlsa>,
}

impl Requirement {
    /// Whether `host` may carry the mail (MTA-STS enforce, RFC 8461 §4.1).
    pub fn allows_host(&self, host: &str) -> bool {
        match &self.sts {
            Some(p) if !self.report_only => p.allows(host),
            _ => true,
        }
    }

    /// Whether the path is verified for REQUIRETLS (RFC 8689 §4.2.1): DANE,
    /// MTA-STS enforce, or an operator's `verify`.
    pub fn verified(&self) -> bool {
        !self.tlsa.is_empty() || (self.level == Level::Verify && !self.report_only)
    }

    /// Whether the certificate is verified (`verify`, or MTA-STS testing).
    pub fn verifies(&self) -> bool {
        self.level == Level::Verify || self.report_only
    }
}

/// The `[[delivery.tls_policy]]` entry for `domain` (or the relayhost).
pub fn entry<'a>(manual: &'a [Manual], domain: &str, relayhost: bool) -> Option<&'a Manual> {
    let key = if relayhost { "relayhost" } else { domain };
    manual.iter().find(|m| m.domain.eq_ignore_ascii_case(key.trim_end_matches('.')))
}

/// The requirement for `domain` (or the relayhost when `relayhost`): its
/// entry, else its MTA-STS policy `sts` (never for the relayhost), else `default`.
pub fn requirement(
    default: Level,
    manual: &[Manual],
    domain: &str,
    relayhost: bool,
    auth: bool,
    sts: Option<&mx6_policy::mta_sts::Policy>,
) -> Requirement {
    use mx6_policy::mta_sts::Mode;
    let sts = sts.filter(|p| !relayhost && p.mode != Mode::None);
    let (mut level, mut source, names) = match (entry(manual, domain, relayhost), sts) {
        (Some(m), _) => (m.level, Source::Manual, m.names.clone()),
        (None, Some(p)) => {
            let testing = p.mode == Mode::Testing;
            let level = if testing { default.max(Level::May) } else { Level::Verify };
            return Requirement {
                level,
                source: Source::MtaSts,
                names: Vec::new(),
                sts: Some(p.clone()),
                report_only: testing,
                tlsa: Vec::new(),
            };
        }
        (None, None) if default >= Level::Encrypt => (default, Source::Manual, Vec::new()),
        (None, None) if default == Level::None => (Level::None, Source::None, Vec::new()),
        (None, None) => (Level::May, Source::Opportunistic, Vec::new()),
    };
    if relayhost && auth && matches!(level, Level::None | Level::May) {
        (level, source) = (Level::Encrypt, Source::Manual);
    }
    Requirement { level, source, names, sts: None, report_only: false, tlsa: Vec::new() }
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
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
    /// No TLSA record matched the peer, or the TLSA lookup failed.
    TlsaInvalid,
    /// A bogus DNSSEC answer for the MX, its addresses or its TLSA.
    DnssecInvalid,
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
            TlsResult::StsPolicyFetchError => "sts-policy-fetch-error",
            TlsResult::StsPolicyInvalid => "sts-policy-invalid",
            TlsResult::StsWebpkiInvalid => "sts-webpki-invalid",
            TlsResult::TlsaInvalid => "tlsa-invalid",
            TlsResult::DnssecInvalid => "dnssec-invalid",
        }
    }

    /// The result type of a failed handshake.
    pub fn of_handshake(e: &std::io::Error) -> TlsResult {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(e) => TlsResult::of_rustls(e),
            None => TlsResult::ValidationFailure,
        }
    }

    /// The result type of a certificate verification error.
    pub fn of_rustls(e: &rustls::Error) -> TlsResult {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsResult::CertificateHostMismatch,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => TlsResult::CertificateExpired,
                C::UnknownIssuer | C::BadSignature | C::Revoked => TlsResult::CertificateNotTrusted,
                // Only the DANE verifier says this: no TLSA record matched.
                C::ApplicationVerificationFailure => TlsResult::TlsaInvalid,
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
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| crate::trust::TrustError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(Connectors { unverified: client_tls(), webpki: Some(webpki) })
    }

    /// Without verification (tests of `may`, LMTP).
    pub fn unverified() -> Connectors {
        Connectors { unverified: client_tls(), webpki: None }
    }

    /// The configuration for one session to `host` under `req` (not DANE:
    /// see [`crate::dane::client`]); `None` when it must verify and no
    /// trust anchor is loaded.
    pub fn for_session(&self, req: &Requirement, host: &str) -> Option<SessionTls> {
        if !req.verifies() {
            return Some(SessionTls { config: self.unverified.clone(), observed: None });
        }
        let mut names: Vec<ServerName<'static>> = Vec::new();
        for n in req.names.iter().map(String::as_str).chain((req.names.is_empty()).then_some(host)) {
            if let Ok(s) = ServerName::try_from(n.trim_end_matches('.').to_ascii_lowercase()) {
                names.push(s);
            }
        }
        let observed = req.report_only.then(|| Arc::new(std::sync::Mutex::new(None)));
        let verifier = Arc::new(AnyOf { inner: self.webpki.clone()?, names, observed: observed.clone() });
        Some(SessionTls { config: with_verifier(verifier)?, observed })
    }
}

/// The TLS configuration of one session.
#[derive(Debug, Clone)]
pub struct SessionTls {
    pub config: Arc<rustls::ClientConfig>,
    /// MTA-STS testing: the verification failure seen, if any (the handshake
    /// went on regardless).
    pub observed: Option<Arc<std::sync::Mutex<Option<TlsResult>>>>,
}

impl SessionTls {
    /// The failure a report-only verification saw.
    pub fn observed(&self) -> Option<TlsResult> {
        self.observed.as_ref().and_then(|o| *o.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Verifies a certificate for any of `names` (the SNI sent stays the host);
/// with `observed`, a failure is noted there and the handshake goes on.
#[derive(Debug)]
struct AnyOf {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
    observed: Option<Arc<std::sync::Mutex<Option<TlsResult>>>>,
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
        match &self.observed {
            Some(o) => {
                *o.lock().unwrap_or_else(|p| p.into_inner()) = Some(TlsResult::of_rustls(&last));
                Ok(ServerCertVerified::assertion())
            }
            None => Err(last),
        }
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

/// The crypto provider of every outbound TLS configuration (ring), made once.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> = std::sync::OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// A client configuration whose certificates `verifier` judges.
pub(crate) fn with_verifier(verifier: Arc<dyn ServerCertVerifier>) -> Option<Arc<rustls::ClientConfig>> {
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Some(Arc::new(c))
}

/// Handshake signatures, checked alike by every verifier here: the
/// certificate decides who the peer is, the signature that it holds the key.
pub(crate) fn verify_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
}

pub(crate) fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
}

pub(crate) fn signature_schemes() -> Vec<rustls::SignatureScheme> {
    provider().signature_verification_algorithms.supported_schemes()
}

/// TLS for outbound SMTP: opportunistic, so certificates are inspected, not
/// required to chain to a root (RFC 3207 §4.1, as Postfix `may`/`encrypt`).
pub fn client_tls() -> Arc<rustls::ClientConfig> {
    static CFG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CFG.get_or_init(|| with_verifier(Arc::new(AnyCert)).expect("ring supports the default protocol versions")).clone()
}

#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        signature_schemes()
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
        let r = requirement(Level::May, &m, "Example.NET.", false, false, None);
        assert_eq!((r.level, r.source), (Level::Verify, Source::Manual));
        let r = requirement(Level::May, &m, "other.example", false, false, None);
        assert_eq!((r.level, r.source), (Level::May, Source::Opportunistic));
        let r = requirement(Level::None, &m, "other.example", false, false, None);
        assert_eq!((r.level, r.source), (Level::None, Source::None));
        let r = requirement(Level::May, &m, "x", true, true, None);
        assert_eq!((r.level, r.source), (Level::Encrypt, Source::Manual), "AUTH never goes in clear");
        let r = requirement(Level::Verify, &[], "x", false, false, None);
        assert_eq!((r.level, r.source), (Level::Verify, Source::Manual));
    }

    #[test]
    fn mta_sts_decides_where_no_entry_does() {
        use mx6_policy::mta_sts::parse_policy;
        let enforce = parse_policy("version: STSv1\nmode: enforce\nmx: *.example.net\nmax_age: 86400\n").unwrap();
        let testing = parse_policy("version: STSv1\nmode: testing\nmx: mx.example.net\nmax_age: 86400\n").unwrap();
        let m = vec![manual("example.net", Level::Encrypt)];
        let r = requirement(Level::May, &[], "example.org", false, false, Some(&enforce));
        assert_eq!((r.level, r.source, r.report_only), (Level::Verify, Source::MtaSts, false));
        assert!(r.allows_host("mx1.example.net") && !r.allows_host("mx.evil.example"));
        let r = requirement(Level::May, &[], "example.org", false, false, Some(&testing));
        assert_eq!((r.level, r.source, r.report_only), (Level::May, Source::MtaSts, true));
        assert!(r.allows_host("mx.evil.example") && r.verifies(), "testing checks but does not refuse");
        let r = requirement(Level::May, &m, "example.net", false, false, Some(&enforce));
        assert_eq!((r.level, r.source), (Level::Encrypt, Source::Manual), "an entry overrides the policy");
        let r = requirement(Level::May, &[], "x", true, false, Some(&enforce));
        assert_eq!(r.source, Source::Opportunistic, "the relayhost is not the domain's MX");
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
