//! Address families and prefixes. An IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, RFC 4291 §2.5.5.2) is an IPv4 client everywhere.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
