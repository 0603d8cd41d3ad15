//! Units and value forms shared by every section: durations (`"300s"`,
//! `"5m"`, `"4h"`, `"5d"`), sizes (`"25MiB"`), optional addresses, CIDR lists
//! and domain names, as serde deserializers whose errors say what was expected.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// `"300s"`, `"5m"`, `"4h"`, `"5d"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration `{s}`; use a number and a unit: \"300s\", \"5m\", \"4h\", \"5d\""))?;
    let secs = match unit {
        "ms" if n <= MAX_DURATION.as_millis() as u64 => return Ok(Duration::from_millis(n)),
        "ms" => return Err(format!("duration `{s}` is too long: at most 3650d")),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("invalid duration unit in `{s}`; use ms, s, m, h, d or w")),
    };
    let d = Duration::from_secs(n.saturating_mul(secs));
    if d > MAX_DURATION {
        return Err(format!("duration `{s}` is too long: at most 3650d"));
    }
    Ok(d)
}

/// No duration in the file may exceed ten years (the keys have tighter bounds;
/// this one keeps any arithmetic on it safe).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86400);

/// `"25MiB"`, `"10MB"`, `"512KiB"`, `"1024"` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("invalid size `{s}`; use e.g. \"25MiB\""))?;
    let mul: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("invalid size unit in `{s}`; use B, KiB, MiB, GiB, KB, MB or GB")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("size `{s}` is too large"))
}

/// A string parsed with `FromStr`, its error message kept.
pub(crate) fn parsed<'de, D: Deserializer<'de>, T: std::str::FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        N(u64),
        S(String),
    }
    match S::deserialize(d)? {
        S::N(n) => Ok(n as usize),
        S::S(s) => parse_size(&s).map_err(de::Error::custom),
    }
}

/// A size, or absent.
pub(crate) fn optional_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    size(d).map(Some)
}

/// An address with a port, or `""` for none.
/// `""` = none; otherwise parsed as `T`, the error naming what was expected.
pub(crate) fn optional<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D, what: &str) -> Result<Option<T>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| de::Error::custom(format!("`{s}` is not {what}")))
}

pub(crate) fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    optional(d, "an address with a port, e.g. \"[::1]:9325\"")
}

pub(crate) fn optional_ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::Ipv6Addr>, D::Error> {
    optional(d, "an IPv6 address")
}

pub(crate) fn optional_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::Ipv4Addr>, D::Error> {
    optional(d, "an IPv4 address")
}

/// `"127.0.0.2"` or `"127.0.0.0/24"`.
pub(crate) fn v4_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::Ipv4Net>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.into_iter()
        .map(|s| {
            s.parse::<ipnet::Ipv4Net>()
                .or_else(|_| s.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
                .map_err(|_| de::Error::custom(format!("`{s}` is not an IPv4 address or CIDR")))
        })
        .collect()
}

pub(crate) fn domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.into_iter()
        .map(|s| match mx6_smtp::address::parse_domain(&s, true) {
            Ok(mx6_smtp::address::Domain::Name(n)) => Ok(n),
            _ => Err(de::Error::custom(format!("`{s}` is not a domain name"))),
        })
        .collect()
}

/// `hostname` is written into the banner, EHLO and Received: an LDH domain
/// name (RFC 1035 §2.3.1, RFC 5321 §2.3.5) or an address literal.
pub fn hostname_problem(h: &str) -> Option<String> {
    if h.chars().any(|c| c.is_control()) {
        return Some("contains control characters (it is written into SMTP replies)".into());
    }
    if let Some(lit) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip = lit.strip_prefix("IPv6:").unwrap_or(lit);
        return ip.parse::<std::net::IpAddr>().is_err().then(|| format!("`{h}` is not an address literal"));
    }
    if h.is_empty() || h.len() > 253 {
        return Some("must be a domain name of 1 to 253 octets".into());
    }
    for label in h.split('.') {
        let ldh = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ldh || label.starts_with('-') || label.ends_with('-') {
            return Some(format!("`{h}` is not a domain name (labels of letters, digits and hyphens, 1 to 63 octets)"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert!(parse_size("1TB").is_err());
    }
}
