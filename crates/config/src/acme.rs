//! `[acme]`: certificates obtained and renewed by mx6 itself from an ACME
//! server (RFC 8555), proving control of each name by HTTP-01 (§8.3) or
//! TLS-ALPN-01 (RFC 8737). Off while `directory` is empty. Keys are ECDSA
//! P-256.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::units::duration;

/// How the ACME server checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `http://<name>/.well-known/acme-challenge/<token>` on `http_listen`.
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on the `[mta_sts] listen` port.
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

fn challenge<'de, D: Deserializer<'de>>(d: D) -> Result<Challenge, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "http-01" => Ok(Challenge::Http01),
        "tls-alpn-01" => Ok(Challenge::TlsAlpn01),
        _ => Err(de::Error::custom(format!("unknown `{s}`; expected http-01 or tls-alpn-01"))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The ACME directory URL; empty = no ACME.
    pub directory: String,
    /// Account contacts, `mailto:` URLs.
    pub contact: Vec<String>,
    /// Names on the certificate; empty = the hostname and `mta-sts.<domain>`
    /// for each domain whose MTA-STS policy is served.
    pub names: Vec<String>,
    #[serde(deserialize_with = "challenge")]
    pub challenge: Challenge,
    /// Where HTTP-01 challenges are answered.
    pub http_listen: Vec<SocketAddr>,
    /// Trust anchors (PEM) for a private ACME server; empty = the system's.
    pub ca_file: String,
    /// Renew this long before the certificate expires.
    #[serde(deserialize_with = "duration")]
    pub renew_before: Duration,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: String::new(),
            contact: Vec::new(),
            names: Vec::new(),
            challenge: Challenge::Http01,
            http_listen: vec!["[::]:80".parse().expect("address"), "0.0.0.0:80".parse().expect("address")],
            ca_file: String::new(),
            renew_before: Duration::from_secs(30 * 86400),
        }
    }
}

impl AcmeConfig {
    pub fn enabled(&self) -> bool {
        !self.directory.is_empty()
    }
}

/// What the ACME client last did, in `data_dir/acme/status.toml`, for
/// `mx6 check` and for operators.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct RenewalStatus {
    /// The names ordered.
    pub names: Vec<String>,
    /// The end of the validity of the certificate in use, Unix seconds (0: none yet).
    pub not_after: i64,
    /// The last attempt to order, Unix seconds.
    pub last_attempt: i64,
    /// Why the last attempt failed; empty when it succeeded.
    pub last_error: String,
    /// Attempts that failed in a row.
    pub failures: u32,
    /// The next attempt, Unix seconds.
    pub next_attempt: i64,
}

impl RenewalStatus {
    pub fn path(data_dir: &std::path::Path) -> std::path::PathBuf {
        data_dir.join("acme").join("status.toml")
    }

    pub fn read(data_dir: &std::path::Path) -> Option<RenewalStatus> {
        toml::from_str(&std::fs::read_to_string(Self::path(data_dir)).ok()?).ok()
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
