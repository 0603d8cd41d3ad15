//! Outbound and queue sections: `[delivery]`, `[queue]`, `[[dkim]]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::units::{duration, optional_ipv4, optional_ipv6, optional_size, size};

/// One DKIM signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// Relative to data_dir; default `dkim/<domain>.<selector>.key`.
    #[serde(default)]
    pub key: String,
}

impl DkimConfig {
    pub fn key_path(&self, data_dir: &Path) -> PathBuf {
        if self.key.is_empty() {
            data_dir.join("dkim").join(format!("{}.{}.key", self.domain, self.selector))
        } else {
            data_dir.join(&self.key)
        }
    }
}

/// Outbound delivery (`[delivery]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `host:port`, `[host]:port` (no MX lookup) or `[2001:db8::1]:587`; empty = MX delivery.
    #[serde(deserialize_with = "relayhost")]
    pub relayhost: Option<mx6_delivery::remote::Relayhost>,
    /// AUTH credentials for the relayhost (sent only inside TLS).
    pub relayhost_username: String,
    pub relayhost_password: String,
    /// Remote SMTP port for MX delivery.
    pub port: u16,
    #[serde(deserialize_with = "optional_ipv6")]
    pub bind_ipv6: Option<std::net::Ipv6Addr>,
    #[serde(deserialize_with = "optional_ipv4")]
    pub bind_ipv4: Option<std::net::Ipv4Addr>,
    #[serde(deserialize_with = "preference")]
    pub address_preference: mx6_delivery::remote::AddressPreference,
    /// Outbound sessions at once, all destinations together.
    pub concurrency: usize,
    /// Outbound sessions at once to one destination domain.
    pub destination_concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Port of MTA-STS policy servers (RFC 8461 §3.3 says 443).
    pub mta_sts_port: u16,
    /// Fetch and obey the MTA-STS policies of recipient domains (RFC 8461).
    pub mta_sts: bool,
    /// Obey the TLSA records of DNSSEC-secure MX hosts (RFC 7672).
    pub dane: bool,
    /// Extra trust anchors (PEM) for MX and policy-server certificates.
    pub ca_file: String,
    /// The TLS level of destinations no `tls_policy` entry names: none, may,
    /// encrypt or verify.
    #[serde(deserialize_with = "tls_level")]
    pub tls: mx6_delivery::tls_policy::Level,
    /// `[[delivery.tls_policy]]`: per destination, like Postfix's `smtp_tls_policy_maps`.
    pub tls_policy: Vec<TlsPolicyEntry>,
}

/// One `[[delivery.tls_policy]]` entry; its level is judged by the checks,
/// so an unknown one is named with its line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsPolicyEntry {
    /// A domain, or `relayhost`.
    pub domain: String,
    pub level: String,
    /// Names the certificate may carry instead of the MX host name (with `verify`).
    #[serde(rename = "match")]
    pub names: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            relayhost: None,
            relayhost_username: String::new(),
            relayhost_password: String::new(),
            port: 25,
            bind_ipv6: None,
            bind_ipv4: None,
            address_preference: mx6_delivery::remote::AddressPreference::HappyEyeballs,
            concurrency: 100,
            destination_concurrency: 10,
            connect_timeout: Duration::from_secs(30),
            mta_sts_port: 443,
            mta_sts: true,
            dane: true,
            ca_file: String::new(),
            tls: mx6_delivery::tls_policy::Level::May,
            tls_policy: Vec::new(),
        }
    }
}

impl DeliveryConfig {
    pub fn remote(&self, hostname: &str) -> mx6_delivery::remote::RemoteConfig {
        let mut r = mx6_delivery::remote::RemoteConfig::new(hostname);
        r.port = self.port;
        r.relayhost = self.relayhost.clone();
        r.auth = (!self.relayhost_username.is_empty()).then(|| (self.relayhost_username.clone(), self.relayhost_password.clone()));
        r.bind_ipv6 = self.bind_ipv6;
        r.bind_ipv4 = self.bind_ipv4;
        r.preference = self.address_preference;
        r.connect_timeout = self.connect_timeout;
        r.tls = self.tls;
        r.dane = self.dane;
        r.tls_policies = self
            .tls_policy
            .iter()
            .filter_map(|e| {
                Some(mx6_delivery::tls_policy::Manual {
                    domain: e.domain.trim_end_matches('.').to_ascii_lowercase(),
                    level: mx6_delivery::tls_policy::Level::parse(&e.level)?,
                    names: e.names.clone(),
                })
            })
            .collect();
        // Without any trust anchor, `verify` defers with a reply that says so.
        if let Ok(c) = mx6_delivery::tls_policy::Connectors::new(&self.ca_file) {
            r.connectors = c;
        }
        r
    }
}

impl DeliveryConfig {
    /// How MTA-STS policies are fetched (`None`: `mta_sts = false`, or no
    /// trust anchor to verify the policy hosts with).
    pub fn mta_sts_fetcher(&self) -> Option<mx6_delivery::mta_sts::Fetcher> {
        if !self.mta_sts {
            return None;
        }
        let tls = mx6_delivery::trust::verifying_client(&self.ca_file, &[b"http/1.1"]).ok()?;
        Some(mx6_delivery::mta_sts::Fetcher { tls, port: self.mta_sts_port, timeout: std::time::Duration::from_secs(10) })
    }
}

fn tls_level<'de, D: Deserializer<'de>>(d: D) -> Result<mx6_delivery::tls_policy::Level, D::Error> {
    let s = String::deserialize(d)?;
    mx6_delivery::tls_policy::Level::parse(&s)
        .filter(|l| !l.dane())
        .ok_or_else(|| de::Error::custom(format!("unknown `{s}`; expected none, may, encrypt or verify")))
}

fn relayhost<'de, D: Deserializer<'de>>(d: D) -> Result<Option<mx6_delivery::remote::Relayhost>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    mx6_delivery::remote::Relayhost::parse(&s).map(Some).map_err(de::Error::custom)
}

fn preference<'de, D: Deserializer<'de>>(d: D) -> Result<mx6_delivery::remote::AddressPreference, D::Error> {
    use mx6_delivery::remote::AddressPreference as P;
    let s = String::deserialize(d)?;
    Ok(match s.as_str() {
        "happy-eyeballs" => P::HappyEyeballs,
        "ipv6-first" => P::Ipv6First,
        "ipv4-first" => P::Ipv4First,
        "ipv6-only" => P::Ipv6Only,
        "ipv4-only" => P::Ipv4Only,
        _ => {
            return Err(de::Error::custom(format!(
                "unknown `{s}`; expected happy-eyeballs, ipv6-first, ipv4-first, ipv6-only or ipv4-only"
            )))
        }
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    #[serde(deserialize_with = "duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// A "delayed" DSN (RFC 3464) goes to the sender once a message has been
    /// queued this long (Postfix's `delay_warning_time`); zero = never.
    #[serde(deserialize_with = "duration")]
    pub delay_warning: Duration,
    /// Free space kept on data_dir's filesystem; below it MAIL gets 452 4.3.1
    /// (Postfix's `queue_minfree`). Unset: 100 MiB, or twice
    /// `limits.message_size` when that is larger ([`QueueConfig::min_free`]).
    #[serde(rename = "min_free", deserialize_with = "optional_size")]
    pub min_free_set: Option<usize>,
    /// Messages loaded for delivery at once; the rest wait on disk.
    pub active_limit: usize,
    /// A spool segment file is closed and a new one started past this size.
    #[serde(deserialize_with = "size")]
    pub segment_size: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            min_free_set: None,
            active_limit: 20_000,
            segment_size: 64 << 20,
        }
    }
}

impl QueueConfig {
    /// The free-space reserve in force for messages up to `message_size`.
    pub fn min_free(&self, message_size: usize) -> u64 {
        self.min_free_set.unwrap_or_else(|| (100usize << 20).max(message_size.saturating_mul(2))) as u64
    }
}
