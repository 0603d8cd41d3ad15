//! `[reports]`: the DMARC aggregate reports (RFC 7489 §7.2) and TLS-RPT
//! reports (RFC 8460) mx6 sends about the mail it received and delivered,
//! and the addresses whose incoming reports about our own domains it reads.

use std::time::Duration;

use serde::Deserialize;

use crate::units::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Count DMARC evaluations and send aggregate reports to each domain's `rua`.
    pub dmarc: bool,
    /// Send TLS-RPT reports to each policy domain's `_smtp._tls` `rua`.
    pub tls: bool,
    /// The sender of reports; empty = `postmaster@<hostname>`.
    pub from: String,
    /// `org_name` / `organization-name`; empty = the hostname.
    pub org_name: String,
    /// The DMARC reporting period, aligned to UTC midnight (TLS-RPT is daily).
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Addresses whose incoming reports are parsed and kept.
    pub receive: Vec<String>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            dmarc: true,
            tls: true,
            from: String::new(),
            org_name: String::new(),
            interval: Duration::from_secs(86_400),
            receive: Vec::new(),
        }
    }
}

impl ReportsConfig {
    /// `from`, or postmaster at `hostname`.
    pub fn sender(&self, hostname: &str) -> String {
        if self.from.is_empty() {
            format!("postmaster@{hostname}")
        } else {
            self.from.clone()
        }
    }

    /// `org_name`, or `hostname`.
    pub fn organization(&self, hostname: &str) -> String {
        if self.org_name.is_empty() {
            hostname.to_string()
        } else {
            self.org_name.clone()
        }
    }

    /// Whether `addr` is one of the `receive` addresses (case-insensitive).
    pub fn receives(&self, addr: &str) -> bool {
        self.receive.iter().any(|r| r.eq_ignore_ascii_case(addr))
    }
}
