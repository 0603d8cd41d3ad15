//! DKIM signing (RFC 6376; ed25519-sha256 per RFC 8463 and rsa-sha256) of mail
//! from authenticated users and mynetworks, and the key files `mx6 dkim
//! keygen` writes (`data_dir/dkim/<domain>.<selector>.key`, PKCS#8 PEM).
//!
//! A domain may have several keys (one ed25519 and one RSA, say): each signs,
//! so receivers that do not know ed25519 still find an RSA signature.

use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use mail_auth::AuthenticatedMessage;

/// Header fields signed when present (RFC 6376 §5.4.1), From always.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

enum Key {
    Ed25519(DkimSigner<Ed25519Key, Done>),
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
}

/// One configured key.
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    key: Key,
}

impl DkimKey {
    /// Load a PEM key file (PKCS#8 ed25519 or RSA, or PKCS#1 RSA).
    pub fn load(domain: &str, selector: &str, path: &std::path::Path) -> Result<DkimKey, SignError> {
        let err = |m: String| SignError::Key { path: path.display().to_string(), message: m };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let der = pem_der(&pem).ok_or_else(|| err("not a PEM key file".into()))?;
        let (d, s) = (domain.to_lowercase(), selector.to_string());
        let key = if let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der) {
            Key::Ed25519(DkimSigner::from_key(k).domain(&d).selector(&s).headers(SIGNED_HEADERS.iter().copied()))
        } else if let Ok(k) = rsa_key(&der) {
            Key::Rsa(DkimSigner::from_key(k).domain(&d).selector(&s).headers(SIGNED_HEADERS.iter().copied()))
        } else {
            return Err(err("neither an ed25519 nor an RSA private key".into()));
        };
        Ok(DkimKey { domain: d, selector: s, key })
    }

    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Ed25519(_) => "ed25519",
            Key::Rsa(_) => "rsa",
        }
    }

    /// The `DKIM-Signature:` header field (CRLF-terminated) for `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, SignError> {
        let e = |x: mail_auth::Error| SignError::Sign(x.to_string());
        let sig = match &self.key {
            Key::Ed25519(k) => k.sign(message).map_err(e)?,
            Key::Rsa(k) => k.sign(message).map_err(e)?,
        };
        Ok(sig.to_header())
    }
}

/// The DKIM-Signature fields for `message` from every key of its From
/// domain, newest on top (the order they go into the message), and the keys
/// that failed with why. Empty when no key matches.
pub fn signatures<'k>(keys: &'k [DkimKey], message: &[u8]) -> (String, Vec<(&'k DkimKey, SignError)>) {
    let mut sigs = String::new();
    let mut failed = Vec::new();
    if keys.is_empty() {
        return (sigs, failed);
    }
    let Some(domain) = from_domain(message) else { return (sigs, failed) };
    for key in keys.iter().filter(|k| k.domain == domain) {
        match key.sign(message) {
            Ok(h) => sigs.insert_str(0, &h),
            Err(e) => failed.push((key, e)),
        }
    }
    (sigs, failed)
}

/// The domain of the (single) From address, lower-cased.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let m = AuthenticatedMessage::parse(message)?;
    let mut domains = m.from.iter().filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_lowercase()));
    let first = domains.next()?;
    domains.all(|d| d == first).then_some(first)
}

fn rsa_key(der: &[u8]) -> mail_auth::Result<RsaKey<Sha256>> {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())))
        .or_else(|_| RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec()))))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A new ed25519 key: (PKCS#8 PEM, the DNS TXT record value).
pub fn generate_ed25519() -> Result<(String, String), SignError> {
    let der = Ed25519Key::generate_pkcs8().map_err(|e| SignError::Sign(e.to_string()))?;
    let key = Ed25519Key::from_pkcs8_der(&der).map_err(|e| SignError::Sign(e.to_string()))?;
    let p = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    Ok((pem("PRIVATE KEY", &der), format!("v=DKIM1; k=ed25519; p={p}")))
}

/// The TXT record value for an RSA private key in PEM.
pub fn rsa_record(pem_text: &str) -> Result<String, SignError> {
    let der = pem_der(pem_text).ok_or_else(|| SignError::Sign("not PEM".into()))?;
    let key = rsa_key(&der).map_err(|e| SignError::Sign(e.to_string()))?;
    let spki = spki_rsa(&key.public_key());
    Ok(format!("v=DKIM1; k=rsa; p={}", base64::engine::general_purpose::STANDARD.encode(spki)))
}

/// DER length octets.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else if n < 0x100 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

/// Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1; the
/// form RFC 6376 §3.6.1 publishes).
fn spki_rsa(pkcs1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0x03];
    bits.extend(der_len(pkcs1.len() + 1));
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(ALG.len() + bits.len()));
    out.extend_from_slice(ALG);
    out.extend(bits);
    out
}
