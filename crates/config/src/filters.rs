//! `[content_filter]` (SpamAssassin's spamd) and `[[milter]]` (Sendmail milter
//! protocol) sections, and the filter address forms they take.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::units::{duration, size};

/// Where a content filter listens: TCP (an IP address and port) or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for FilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterAddress::Tcp(a) => write!(f, "{a}"),
            FilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FilterAddress {
    /// `[v6]:port`, `v4:port`, `unix:/path`; for milters also Sendmail's and
    /// Postfix's `inet:[v6]:port`, `inet:v4:port`, `inet:port@host`,
    /// `inet6:port@host`, `local:/path`.
    pub fn parse(s: &str) -> Result<FilterAddress, String> {
        let bad = || format!("`{s}` is not a filter address; use \"[::1]:8891\", \"127.0.0.1:783\", \"inet:[::1]:8891\" or \"unix:/path\"");
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return if p.is_empty() { Err(bad()) } else { Ok(FilterAddress::Unix(PathBuf::from(p))) };
        }
        let rest = s.strip_prefix("inet6:").or_else(|| s.strip_prefix("inet:")).unwrap_or(s);
        if let Some((port, host)) = rest.split_once('@') {
            let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(FilterAddress::Tcp(SocketAddr::new(ip, port)));
        }
        rest.parse().map(FilterAddress::Tcp).map_err(|_| bad())
    }
}

fn filter_address<'de, D: Deserializer<'de>>(d: D) -> Result<FilterAddress, D::Error> {
    FilterAddress::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn optional_filter_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FilterAddress>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    FilterAddress::parse(&s).map(Some).map_err(de::Error::custom)
}

/// `[content_filter]`: SpamAssassin's spamd at end of data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentFilterConfig {
    /// `""` = off.
    #[serde(deserialize_with = "optional_filter_address")]
    pub spamd: Option<FilterAddress>,
    /// At or above: delivered marked (`X-Spam-Flag: YES`, Junk folder).
    pub mark_score: f64,
    /// At or above: 550 5.7.1.
    pub reject_score: f64,
    /// spamd down or too slow: tempfail (451) or accept unscanned.
    pub on_failure: SpamdFailure,
    /// Larger messages are not scanned (as spamc's 500 KB default).
    #[serde(deserialize_with = "size")]
    pub max_size: usize,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for ContentFilterConfig {
    fn default() -> Self {
        ContentFilterConfig {
            spamd: None,
            mark_score: 5.0,
            reject_score: 10.0,
            on_failure: SpamdFailure::Tempfail,
            max_size: 512 << 10,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpamdFailure {
    Tempfail,
    Accept,
}

/// `mx6 milter`: the milter server a Postfix (`smtpd_milters`) talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilterServerConfig {
    /// `inet:[v6]:port`, `inet:v4:port`, `inet:port@host` or `unix:/path`.
    #[serde(deserialize_with = "filter_address")]
    pub listen: FilterAddress,
}

impl Default for MilterServerConfig {
    fn default() -> Self {
        MilterServerConfig { listen: FilterAddress::Tcp(std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8893))) }
    }
}

/// One `[[milter]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterConfig {
    #[serde(deserialize_with = "filter_address")]
    pub address: FilterAddress,
    /// Connecting, and each reply at connect, HELO, MAIL, RCPT and DATA
    /// (Postfix's `milter_connect_timeout` and `milter_command_timeout`).
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Each reply to the message content: headers, body chunks and end of
    /// message, where a milter scans or signs (`milter_content_timeout`).
    #[serde(default = "five_minutes", deserialize_with = "duration")]
    pub content_timeout: Duration,
    #[serde(default = "milter_tempfail")]
    pub on_failure: MilterFailure,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

fn milter_tempfail() -> MilterFailure {
    MilterFailure::Tempfail
}

/// A milter that cannot be reached or breaks the protocol: 451, skip it, or 550.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MilterFailure {
    Tempfail,
    Accept,
    Reject,
}
