//! The resolver: hickory over `[dns] nameservers` (or the system resolver),
//! with bounded timeouts; every lookup says whether it failed for good
//! (NXDOMAIN / no data) or only for now (timeout, SERVFAIL); reverse DNS with
//! forward confirmation (RFC 8601 §3 `iprev`) and DNSBL queries (RFC 5782).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use mx6_policy::dnsbl::{self, Site};
use mx6_policy::inbound::{AuthResult, ClientFacts};

/// At most this many PTR names are followed for forward confirmation.
pub const MAX_PTR_NAMES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("resolver setup: {0}")]
    Setup(String),
}

/// The outcome of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(Vec<T>),
    /// NXDOMAIN or no records of this type.
    NotFound,
    /// Timeout, SERVFAIL, network error: try again later.
    TempFail(String),
}

impl<T> Lookup<T> {
    pub fn found(&self) -> &[T] {
        match self {
            Lookup::Found(v) => v,
            _ => &[],
        }
    }
}

/// Resolver settings (`[dns]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Empty: the system resolver (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { nameservers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2 }
    }
}

/// A shared, caching resolver. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// The same resolvers, for DNSSEC-aware questions ([`secure`]).
    secure: crate::secure::SecureResolver,
}

impl Resolver {
    pub fn new(s: &Settings) -> Result<Resolver, Error> {
        let (config, mut opts) = if s.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| Error::Setup(e.to_string()))?
        } else {
            let servers = s
                .nameservers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            (ResolverConfig::from_name_servers(servers), ResolverOpts::default())
        };
        let servers: Vec<SocketAddr> = config
            .name_servers()
            .iter()
            .filter_map(|n| n.connections.first().map(|c| SocketAddr::new(n.ip, if c.port == 0 { 53 } else { c.port })))
            .collect();
        let secure = crate::secure::SecureResolver { servers, timeout: s.timeout };
        opts.timeout = s.timeout;
        opts.attempts = s.attempts.max(1);
        opts.max_active_requests = 4096;
        opts.ndots = 0;
        // Judging clients by /etc/hosts would let a local file vouch for
        // public names: DNS only.
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Resolver { inner, secure })
    }

    /// DNSSEC-aware lookups through the same resolvers.
    pub fn secure(&self) -> &crate::secure::SecureResolver {
        &self.secure
    }

    /// The hickory resolver, for libraries that take one (mail-auth).
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Lookup<RData> {
        let name = match Name::from_str_relaxed(crate::secure::fqdn(name).as_str()) {
            Ok(n) => n,
            Err(_) => return Lookup::NotFound,
        };
        match self.inner.lookup(name, rtype).await {
            Ok(l) => {
                let v: Vec<RData> = l.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
                if v.is_empty() {
                    Lookup::NotFound
                } else {
                    Lookup::Found(v)
                }
            }
            Err(e) => classify(e),
        }
    }

    pub async fn ptr(&self, ip: IpAddr) -> Lookup<String> {
        map(self.lookup(&reverse_name(ip), RecordType::PTR).await, |d| match d {
            RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
    }

    pub async fn a(&self, name: &str) -> Lookup<Ipv4Addr> {
        map(self.lookup(name, RecordType::A).await, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    pub async fn aaaa(&self, name: &str) -> Lookup<Ipv6Addr> {
        map(self.lookup(name, RecordType::AAAA).await, |d| match d {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
    }

    /// MX records as (preference, host), host without the trailing dot.
    pub async fn mx(&self, name: &str) -> Lookup<(u16, String)> {
        map(self.lookup(name, RecordType::MX).await, |d| match d {
            RData::MX(m) => Some((m.preference, m.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase())),
            _ => None,
        })
    }

    /// TXT records, each one's strings joined.
    pub async fn txt(&self, name: &str) -> Lookup<String> {
        map(self.lookup(name, RecordType::TXT).await, |d| match d {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect::<String>()),
            _ => None,
        })
    }

    /// Addresses of `name` in the client's family.
    async fn addresses_like(&self, name: &str, ip: IpAddr) -> Lookup<IpAddr> {
        match ip {
            IpAddr::V4(_) => map(self.a(name).await, |a| Some(IpAddr::V4(a))),
            IpAddr::V6(_) => map(self.aaaa(name).await, |a| Some(IpAddr::V6(a))),
        }
    }

    /// RFC 8601 §3 iprev: PTR names of `ip`, and whether one resolves back to it.
    pub async fn iprev(&self, ip: IpAddr) -> (AuthResult, Vec<String>, Option<String>) {
        let names = match self.ptr(ip).await {
            Lookup::Found(n) => n,
            Lookup::NotFound => return (AuthResult::PermError, Vec::new(), None),
            Lookup::TempFail(_) => return (AuthResult::TempError, Vec::new(), None),
        };
        let names: Vec<String> = names.into_iter().take(MAX_PTR_NAMES).collect();
        let lookups = futures_util::future::join_all(names.iter().map(|n| self.addresses_like(n, ip))).await;
        let mut temp = false;
        for (name, l) in names.iter().zip(&lookups) {
            match l {
                Lookup::Found(addrs) if addrs.contains(&ip) => return (AuthResult::Pass, names.clone(), Some(name.clone())),
                Lookup::TempFail(_) => temp = true,
                _ => {}
            }
        }
        (if temp { AuthResult::TempError } else { AuthResult::Fail }, names, None)
    }

    /// RFC 5782 queries of `ip` on every site, in parallel.
    pub async fn dnsbl(&self, ip: IpAddr, sites: &[Site]) -> Vec<dnsbl::Answer> {
        let base = dnsbl_label(ip);
        futures_util::future::join_all(sites.iter().map(|s| {
            let q = format!("{base}.{}", s.zone.trim_end_matches('.'));
            async move {
                match self.a(&q).await {
                    Lookup::Found(a) => dnsbl::Answer::Listed(a),
                    Lookup::NotFound => dnsbl::Answer::NotListed,
                    Lookup::TempFail(_) => dnsbl::Answer::Unknown,
                }
            }
        }))
        .await
    }

    /// Reverse DNS and DNSBL facts about a client, gathered concurrently.
    pub async fn client_facts(&self, ip: IpAddr, sites: &[Site]) -> ClientFacts {
        let ((iprev, ptr_names, confirmed_name), answers) = tokio::join!(self.iprev(ip), self.dnsbl(ip, sites));
        ClientFacts { iprev, ptr_names, confirmed_name, dnsbl: dnsbl::score(sites, &answers) }
    }
}

fn map<T, U>(l: Lookup<T>, f: impl Fn(T) -> Option<U>) -> Lookup<U> {
    match l {
        Lookup::Found(v) => {
            let v: Vec<U> = v.into_iter().filter_map(f).collect();
            if v.is_empty() {
                Lookup::NotFound
            } else {
                Lookup::Found(v)
            }
        }
        Lookup::NotFound => Lookup::NotFound,
        Lookup::TempFail(e) => Lookup::TempFail(e),
    }
}

fn classify<T>(e: NetError) -> Lookup<T> {
    match &e {
        NetError::Dns(DnsError::NoRecordsFound(_)) => Lookup::NotFound,
        _ => Lookup::TempFail(e.to_string()),
    }
}

/// The `in-addr.arpa` / `ip6.arpa` name of an address.
pub fn reverse_name(ip: IpAddr) -> String {
    let ip = mx6_policy::prefix::canonical(ip);
    format!("{}.{}", dnsbl_label(ip), if ip.is_ipv4() { "in-addr.arpa" } else { "ip6.arpa" })
}

/// RFC 5782 §2.1/§2.4: reversed octets (IPv4) or 32 reversed nibbles (IPv6).
pub fn dnsbl_label(ip: IpAddr) -> String {
    match mx6_policy::prefix::canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
                s.push('.');
            }
            s.pop();
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(dnsbl_label("192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(dnsbl_label("::ffff:192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(dnsbl_label("2001:db8:1:2::ab".parse().unwrap()), "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2");
        assert_eq!(reverse_name("192.0.2.1".parse().unwrap()), "1.2.0.192.in-addr.arpa");
    }
}
