//! DANE for SMTP (RFC 7672, RFC 7671): when a domain's MX records and an MX
//! host's address records are DNSSEC-secure (as [`mx6_dns::secure`] reports
//! them), the host's `_25._tcp` TLSA records decide its TLS:
//!
//! - usable records (DANE-TA(2), DANE-EE(3); selector cert(0) or SPKI(1);
//!   matching full(0), SHA-256(1), SHA-512(2)): TLS is mandatory and the
//!   peer's certificate must match one of them (§3.1);
//! - only unusable records (PKIX-TA/PKIX-EE, unknown parameters): TLS is
//!   mandatory, the certificate is not checked (§2.2, "mandatory
//!   unauthenticated TLS");
//! - an insecure MX or address lookup, or a secure denial of TLSA: no DANE,
//!   the next policy (MTA-STS, the default) applies;
//! - a bogus answer (SERVFAIL from the validating resolver) or a failed TLSA
//!   lookup: the host is not used and the mail waits (§2.2: the client
//!   cannot tell an attack from a failure).
//!
//! DANE-EE matches the end-entity certificate alone: its names and dates
//! are not checked (§3.1.1). DANE-TA must match a certificate of the chain
//! the server sent; the end entity must then chain to it, be within its
//! dates and carry the MX host name (§3.1.2, §3.2.2).

use std::sync::Arc;

use mx6_dns::secure::{Secure, SecureResolver, Tlsa};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::tls_policy::{self, TlsResult};

/// What DANE says about one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDane {
    /// No DANE for this host: the next policy applies.
    None,
    /// TLS is mandatory and must match one of these records.
    Verify(Vec<Tlsa>),
    /// TLSA records exist but none is usable: TLS without authentication.
    Encrypt,
    /// DNSSEC failed for the host (bogus, or the lookup failed): do not use it.
    Failed(TlsResult, String),
}

/// Whether `rtype` records of `name` are secure; a bogus answer is an error.
async fn secure_rrset(r: &SecureResolver, name: &str, rtype: mx6_dns::secure::RecordType) -> Result<bool, String> {
    match r.query(name, rtype).await {
        Secure::Bogus(e) => Err(format!("{name} {rtype}: {e}")),
        s => Ok(s.secure()),
    }
}

/// Whether the domain's MX RRset is secure (the precondition of DANE, §2.2.1).
pub async fn mx_secure(r: &SecureResolver, domain: &str) -> Result<bool, String> {
    secure_rrset(r, domain, mx6_dns::secure::RecordType::MX).await
}

/// Whether a record's parameters are ones RFC 7672 lets SMTP use.
pub fn usable(t: &Tlsa) -> bool {
    matches!(t.usage, 2 | 3) && matches!(t.selector, 0 | 1) && matches!(t.matching, 0..=2)
}

/// DANE for `host` (an MX host of a domain whose MX RRset is secure).
pub async fn host(r: &SecureResolver, host: &str, port: u16) -> HostDane {
    use mx6_dns::secure::RecordType;
    let (v6, v4) = tokio::join!(r.query(host, RecordType::AAAA), r.query(host, RecordType::A));
    for (s, t) in [(&v6, "AAAA"), (&v4, "A")] {
        match s {
            Secure::Bogus(e) => return HostDane::Failed(TlsResult::DnssecInvalid, format!("{host} {t}: {e}")),
            // §2.2.2: TLSA is used only for hosts whose addresses are secure.
            Secure::Found { secure: false, .. } => return HostDane::None,
            _ => {}
        }
    }
    match r.tlsa(host, port).await {
        Secure::Found { records, secure: true } => {
            let usable: Vec<Tlsa> = records.into_iter().filter(usable).collect();
            if usable.is_empty() {
                HostDane::Encrypt
            } else {
                HostDane::Verify(usable)
            }
        }
        Secure::Found { secure: false, .. } | Secure::NotFound { .. } => HostDane::None,
        Secure::Bogus(e) => HostDane::Failed(TlsResult::DnssecInvalid, format!("_{port}._tcp.{host} TLSA: {e}")),
        Secure::TempFail(e) => HostDane::Failed(TlsResult::TlsaInvalid, format!("_{port}._tcp.{host} TLSA lookup failed: {e}")),
    }
}

/// The part of `cert` a record's selector names.
fn selected(cert: &[u8], selector: u8) -> Option<Vec<u8>> {
    match selector {
        0 => Some(cert.to_vec()),
        1 => x509_parser::parse_x509_certificate(cert).ok().map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec()),
        _ => None,
    }
}

/// Whether `cert` matches record `t` (selector and matching type).
pub fn matches(t: &Tlsa, cert: &[u8]) -> bool {
    let Some(data) = selected(cert, t.selector) else { return false };
    let digest = match t.matching {
        0 => data,
        1 => ring::digest::digest(&ring::digest::SHA256, &data).as_ref().to_vec(),
        2 => ring::digest::digest(&ring::digest::SHA512, &data).as_ref().to_vec(),
        _ => return false,
    };
    digest == t.data
}

/// Verifies a peer against TLSA records, for the names in `names`.
#[derive(Debug)]
pub struct DaneVerifier {
    pub records: Vec<Tlsa>,
    pub names: Vec<ServerName<'static>>,
}

/// No record matched: what [`TlsResult::of_rustls`] reports as `tlsa-invalid`.
fn no_match() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the key or certificate itself, nothing else (§3.1.1).
        if self.records.iter().any(|t| t.usage == 3 && matches(t, end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: a certificate the server sent is the trust anchor (§3.1.2).
        let mut last = no_match();
        for ta in intermediates.iter().chain(std::iter::once(end_entity)) {
            if !self.records.iter().any(|t| t.usage == 2 && matches(t, ta)) {
                continue;
            }
            let mut roots = rustls::RootCertStore::empty();
            if roots.add(ta.clone().into_owned()).is_err() {
                continue;
            }
            let Ok(v) = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls_policy::provider()).build() else { continue };
            for n in &self.names {
                match v.verify_server_cert(end_entity, intermediates, n, ocsp, now) {
                    Ok(ok) => return Ok(ok),
                    Err(e) => last = e,
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
        tls_policy::verify_tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls_policy::verify_tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        tls_policy::signature_schemes()
    }
}

/// A client configuration that verifies with `records` for `host`.
pub fn client(records: Vec<Tlsa>, host: &str) -> Option<Arc<rustls::ClientConfig>> {
    let names = ServerName::try_from(host.trim_end_matches('.').to_ascii_lowercase()).ok().into_iter().collect();
    tls_policy::with_verifier(Arc::new(DaneVerifier { records, names }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> Vec<u8> {
        let k = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["mx.example.org".into()]).unwrap().self_signed(&k).unwrap().der().to_vec()
    }

    #[test]
    fn records_match_by_selector_and_matching_type() {
        let c = cert();
        let spki = selected(&c, 1).unwrap();
        assert!(spki.len() < c.len() && spki[0] == 0x30, "SPKI is a DER sequence inside the certificate");
        let sha256 = |d: &[u8]| ring::digest::digest(&ring::digest::SHA256, d).as_ref().to_vec();
        let sha512 = |d: &[u8]| ring::digest::digest(&ring::digest::SHA512, d).as_ref().to_vec();
        let t = |selector, matching, data| Tlsa { usage: 3, selector, matching, data };
        assert!(matches(&t(0, 0, c.clone()), &c));
        assert!(matches(&t(1, 1, sha256(&spki)), &c));
        assert!(matches(&t(0, 2, sha512(&c)), &c));
        assert!(!matches(&t(1, 1, sha256(&c)), &c), "the selector decides what is hashed");
        assert!(!matches(&t(1, 1, sha256(&selected(&cert(), 1).unwrap())), &c), "another key");
        assert!(!matches(&t(1, 3, spki), &c), "an unknown matching type never matches");
    }

    #[test]
    fn only_dane_ta_and_dane_ee_are_usable_for_smtp() {
        let t = |usage, selector, matching| Tlsa { usage, selector, matching, data: vec![1] };
        assert!(usable(&t(3, 1, 1)) && usable(&t(2, 0, 2)));
        assert!(!usable(&t(0, 1, 1)) && !usable(&t(1, 1, 1)), "PKIX usages are not for SMTP (RFC 7672 §3.1.3)");
        assert!(!usable(&t(3, 2, 1)) && !usable(&t(3, 1, 3)));
    }
}
