//! Inbound sections: `[local]` (final destination), `[relay]`, `[dns]`,
//! `[policy]` (reverse DNS, SPF, DKIM, DMARC requirements per family) and
//! `[dnsbl]`.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::units::{domains, duration, v4_nets};

/// Inbound authentication policy (`[policy]`, `[policy.ipv6]`, `[policy.ipv4]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub ipv6: FamilyPolicyConfig,
    pub ipv4: FamilyPolicyConfig,
    /// Refuse mail whose SPF result is `fail` (550 5.7.23).
    pub reject_spf_fail: bool,
    /// Apply DMARC `p=reject` (550 5.7.1) and `p=quarantine` (Junk).
    pub enforce_dmarc: bool,
    /// Clients in these networks skip the inbound checks.
    pub allow_networks: Vec<IpNet>,
    /// Envelope senders in these domains (and their subdomains) skip them.
    #[serde(deserialize_with = "domains")]
    pub allow_sender_domains: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            ipv6: FamilyPolicyConfig::strict(),
            ipv4: FamilyPolicyConfig::default(),
            reject_spf_fail: true,
            enforce_dmarc: true,
            allow_networks: Vec::new(),
            allow_sender_domains: Vec::new(),
        }
    }
}

/// Requirements for one address family. IPv4 defaults: all false.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FamilyPolicyConfig {
    pub require_ptr: bool,
    pub require_fcrdns: bool,
    pub require_spf_or_dkim: bool,
}

impl FamilyPolicyConfig {
    fn strict() -> Self {
        FamilyPolicyConfig { require_ptr: true, require_fcrdns: true, require_spf_or_dkim: true }
    }
}

/// DNS blocklists and allowlists (`[dnsbl]`, `[[dnsbl.sites]]`), scored like
/// Postfix postscreen's `postscreen_dnsbl_sites`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsblConfig {
    /// Score at or above which a client is refused (554 5.7.1).
    pub threshold: i32,
    pub sites: Vec<DnsblSiteConfig>,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig { threshold: 1, sites: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblSiteConfig {
    pub zone: String,
    /// Negative for allowlists (DNSWL).
    #[serde(default = "one")]
    pub weight: i32,
    /// Return codes that count, as addresses or CIDRs; empty = any 127.0.0.0/8.
    #[serde(default, deserialize_with = "v4_nets")]
    pub codes: Vec<ipnet::Ipv4Net>,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    #[serde(deserialize_with = "domains")]
    pub domains: Vec<String>,
    pub users_file: String,
    pub delivery: LocalDelivery,
    pub maildir: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocalDelivery {
    #[default]
    Maildir,
    /// LMTP (RFC 2033) to Dovecot or another local delivery agent.
    Lmtp(mx6_delivery::remote::LmtpTarget),
}

impl<'de> Deserialize<'de> for LocalDelivery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "maildir" => Ok(LocalDelivery::Maildir),
            s if s.starts_with("lmtp:") => mx6_delivery::remote::LmtpTarget::parse(s).map(LocalDelivery::Lmtp).map_err(de::Error::custom),
            _ => {
                Err(de::Error::custom(format!("unknown delivery `{s}`; expected \"maildir\", \"lmtp://[::1]:24\" or \"lmtp:unix:/path\"")))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub mynetworks: Vec<IpNet>,
    #[serde(deserialize_with = "domains")]
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Empty: the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Per query; a lookup that gets no answer is a temporary failure (4xx).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub attempts: usize,
    /// How an answer is known to be DNSSEC-secure (for DANE): `trust-ad`
    /// believes the AD bit of `nameservers`, `off` never does.
    pub dnssec: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { nameservers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2, dnssec: "trust-ad".into() }
    }
}

impl DnsConfig {
    pub fn settings(&self) -> mx6_dns::Settings {
        mx6_dns::Settings { nameservers: self.nameservers.clone(), timeout: self.timeout, attempts: self.attempts }
    }
}

impl PolicyConfig {
    /// The pure policy this configures.
    pub fn inbound(&self, dnsbl: &DnsblConfig) -> mx6_policy::inbound::InboundPolicy {
        let rules = |f: &FamilyPolicyConfig| mx6_policy::inbound::FamilyRules {
            require_ptr: f.require_ptr,
            require_fcrdns: f.require_fcrdns,
            require_spf_or_dkim: f.require_spf_or_dkim,
        };
        mx6_policy::inbound::InboundPolicy {
            ipv6: rules(&self.ipv6),
            ipv4: rules(&self.ipv4),
            reject_spf_fail: self.reject_spf_fail,
            enforce_dmarc: self.enforce_dmarc,
            dnsbl_threshold: dnsbl.threshold,
            allow_networks: self.allow_networks.clone(),
            allow_sender_domains: self.allow_sender_domains.iter().map(|d| mx6_policy::normalize_domain(d)).collect(),
        }
    }
}

impl DnsblConfig {
    pub fn sites(&self) -> Vec<mx6_policy::dnsbl::Site> {
        self.sites
            .iter()
            .map(|s| mx6_policy::dnsbl::Site {
                zone: s.zone.trim_end_matches('.').to_lowercase(),
                weight: s.weight,
                codes: s.codes.clone(),
            })
            .collect()
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            domains: Vec::new(),
            users_file: "users.toml".into(),
            delivery: LocalDelivery::Maildir,
            maildir: "mail/{domain}/{user}".into(),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { mynetworks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()], domains: Vec::new() }
    }
}
