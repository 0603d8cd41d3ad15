//! Address families and prefixes. An IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, RFC 4291 §2.5.5.2) is an IPv4 client everywhere.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match canonical(ip) {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
    /// The label value used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address with IPv4-mapped IPv6 turned into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    mx6_smtp::address::canonical_ip(ip)
}

/// Whether `ip` (canonicalised) is inside any of `nets`.
pub fn contains_any(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// The prefix a client is counted on: its /`v6_len` for IPv6, /`v4_len` for IPv4.
pub fn client_prefix(ip: IpAddr, v6_len: u8, v4_len: u8) -> IpNet {
    let ip = canonical(ip);
    let len = if ip.is_ipv6() { v6_len.min(128) } else { v4_len.min(32) };
    IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip))
}

/// A prefix level a client is counted on: a family and a length, written
/// `ipv6/64` or `ipv4/24` in the config. An IPv6 spammer owns a /64 at least
/// and often a /56 or /48 (RIPE-690), so counts are kept on such levels, never
/// on single IPv6 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Level {
    pub family: Family,
    pub len: u8,
}

impl Level {
    pub const fn v6(len: u8) -> Level {
        Level { family: Family::Ipv6, len }
    }
    pub const fn v4(len: u8) -> Level {
        Level { family: Family::Ipv4, len }
    }

    /// The prefix of `ip` at this level, when `ip` is of this family.
    pub fn of(self, ip: IpAddr) -> Option<IpNet> {
        let ip = canonical(ip);
        (Family::of(ip) == self.family).then(|| IpNet::new(ip, self.len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip)))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.family, self.len)
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        let bad = || format!("`{s}` is not a prefix level; use ipv6/N (N 1..=128) or ipv4/N (N 1..=32), e.g. \"ipv6/64\"");
        let (fam, len) = s.split_once('/').ok_or_else(bad)?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        match fam {
            "ipv6" if (1..=128).contains(&len) => Ok(Level::v6(len)),
            "ipv4" if (1..=32).contains(&len) => Ok(Level::v4(len)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let l: Level = "ipv6/48".parse().unwrap();
        assert_eq!(l.of("2001:db8:1:2::9".parse().unwrap()).unwrap().to_string(), "2001:db8:1::/48");
        assert_eq!(l.of("192.0.2.1".parse().unwrap()), None);
        let l: Level = "ipv4/24".parse().unwrap();
        assert_eq!(l.of("::ffff:192.0.2.9".parse().unwrap()).unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(l.to_string(), "ipv4/24");
        for bad in ["ipv6/0", "ipv4/33", "v6/64", "ipv6", "ipv6/x"] {
            assert!(bad.parse::<Level>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mapped_is_ipv4() {
        assert_eq!(Family::of("::ffff:10.0.0.1".parse().unwrap()), Family::Ipv4);
        assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::Ipv6);
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(contains_any(&nets, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!contains_any(&nets, "::1".parse().unwrap()));
        assert_eq!(client_prefix("2001:db8:1:2:3::9".parse().unwrap(), 64, 32).to_string(), "2001:db8:1:2::/64");
        assert_eq!(client_prefix("::ffff:192.0.2.9".parse().unwrap(), 64, 24).to_string(), "192.0.2.0/24");
    }
}
