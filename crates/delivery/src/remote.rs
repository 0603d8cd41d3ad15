//! Remote delivery: where a domain's mail goes (relayhost, or MX per RFC 5321
//! §5.1 with null MX per RFC 7505), how to reach it (AAAA and A of every host;
//! Happy Eyeballs, RFC 8305 adapted to SMTP), and one SMTP session per attempt
//! driven over TCP or TLS with the sans-IO client of `mx6-smtp`.
//!
//! IPv6 first without waiting for it: the IPv6 connection starts, the IPv4 one
//! 250 ms later if IPv6 has not connected, and the first to connect is used. A
//! receiver that takes the IPv6 connection but refuses the sender for an IPv6
//! reason (no PTR, unauthenticated, "IPv6 sending guidelines") is retried over
//! IPv4 at once instead of bouncing.
//!
//! Defends against: hanging hosts (connect and per-reply timeouts), endless MX
//! lists (at most [`MAX_HOSTS`] hosts and [`MAX_ADDRESSES`] addresses per attempt).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mx6_dns::{Lookup, Resolver};
use mx6_smtp::client::{Action, Client, ClientConfig, Outcome, RcptResult, ServerReply, TlsPolicy, Transaction};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dane::HostDane;
use crate::tls_policy::{client_tls, Connectors, Level, Manual, Requirement, SessionTls, Source, TlsResult};

pub const MAX_HOSTS: usize = 5;
pub const MAX_ADDRESSES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPreference {
    HappyEyeballs,
    Ipv6First,
    Ipv4First,
    Ipv6Only,
    Ipv4Only,
}

/// `delivery.relayhost`: `host:port` (MX lookup of host), `[host]:port` (no MX
/// lookup) or `[2001:db8::1]:587`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayhost {
    pub host: String,
    pub port: u16,
    pub mx_lookup: bool,
}

impl Relayhost {
    pub fn parse(s: &str) -> Result<Relayhost, String> {
        let s = s.trim();
        let (host, port, bracketed) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| format!("`{s}`: missing `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("`{s}`: bad port"))?,
                None if after.is_empty() => 25,
                None => return Err(format!("`{s}`: expected `[host]:port`")),
            };
            (h.trim_start_matches("ipv6:").trim_start_matches("IPv6:").to_string(), port, true)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().map_err(|_| format!("`{s}`: bad port"))?, false),
                _ if s.contains(':') => return Err(format!("`{s}`: write IPv6 addresses in brackets, e.g. [2001:db8::1]:587")),
                _ => (s.to_string(), 25, false),
            }
        };
        if host.is_empty() {
            return Err(format!("`{s}`: empty host"));
        }
        let literal = host.parse::<IpAddr>().is_ok();
        Ok(Relayhost { host, port, mx_lookup: !bracketed && !literal })
    }
}

/// `local.delivery = "lmtp://[::1]:24"` or `"lmtp:unix:/run/dovecot/lmtp"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpTarget {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl LmtpTarget {
    pub fn parse(s: &str) -> Result<LmtpTarget, String> {
        if let Some(p) = s.strip_prefix("lmtp:unix:") {
            if p.is_empty() {
                return Err(format!("`{s}`: empty socket path"));
            }
            return Ok(LmtpTarget::Unix(p.into()));
        }
        if let Some(a) = s.strip_prefix("lmtp://") {
            let a = a.trim_end_matches('/');
            return a.parse().map(LmtpTarget::Tcp).map_err(|_| format!("`{s}`: expected lmtp://[v6]:port or lmtp://v4:port"));
        }
        Err(format!("`{s}`: expected lmtp://[v6]:port, lmtp://v4:port or lmtp:unix:/path"))
    }
}

impl std::fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpTarget::Tcp(a) => write!(f, "lmtp://{a}"),
            LmtpTarget::Unix(p) => write!(f, "lmtp:unix:{}", p.display()),
        }
    }
}

/// Deliver `txn` over LMTP (RFC 2033): one result per recipient.
pub async fn lmtp(target: &LmtpTarget, hostname: &str, txn: &Transaction, body: &[u8], timeout: Duration) -> Delivery {
    let client = Client::new(
        ClientConfig { hostname: hostname.to_string(), tls: TlsPolicy::Off, auth: None, lmtp: true },
        txn.clone(),
        body.to_vec(),
    );
    let name = rustls_pki_types::ServerName::IpAddress(IpAddr::from(Ipv6Addr::LOCALHOST).into());
    let fail = |e: std::io::Error| Delivery {
        rcpts: all(txn.rcpts.len(), RcptResult::Deferred(local(451, &format!("4.4.1 LMTP {target}: {e}")))),
        peer: None,
        tls: false,
        dsn: false,
        tls_source: Source::None,
        tls_result: None,
        tls_sessions: Vec::new(),
    };
    let o = match target {
        LmtpTarget::Tcp(a) => match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => session(s, client, name, &unverified(), timeout).await.0,
            Ok(Err(e)) => return fail(e),
            Err(_) => return fail(std::io::ErrorKind::TimedOut.into()),
        },
        LmtpTarget::Unix(p) => match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(p)).await {
            Ok(Ok(s)) => session(s, client, name, &unverified(), timeout).await.0,
            Ok(Err(e)) => return fail(e),
            Err(_) => return fail(std::io::ErrorKind::TimedOut.into()),
        },
    };
    Delivery { rcpts: o.rcpts, peer: None, tls: false, dsn: o.dsn, tls_source: Source::None, tls_result: None, tls_sessions: Vec::new() }
}

fn unverified() -> SessionTls {
    SessionTls { config: client_tls(), observed: None }
}

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub hostname: String,
    pub port: u16,
    pub relayhost: Option<Relayhost>,
    pub auth: Option<(String, String)>,
    pub bind_ipv6: Option<Ipv6Addr>,
    pub bind_ipv4: Option<Ipv4Addr>,
    pub preference: AddressPreference,
    /// RFC 8305 §5 connection attempt delay.
    pub attempt_delay: Duration,
    pub connect_timeout: Duration,
    /// Waiting for one reply (RFC 5321 §4.5.3.2 suggests minutes).
    pub reply_timeout: Duration,
    /// The level of domains no `tls_policies` entry names.
    pub tls: Level,
    /// `[[delivery.tls_policy]]`.
    pub tls_policies: Vec<Manual>,
    /// Obey TLSA records of DNSSEC-secure MX hosts (RFC 7672).
    pub dane: bool,
    pub connectors: Connectors,
}

impl RemoteConfig {
    pub fn new(hostname: &str) -> RemoteConfig {
        RemoteConfig {
            hostname: hostname.to_string(),
            port: 25,
            relayhost: None,
            auth: None,
            bind_ipv6: None,
            bind_ipv4: None,
            preference: AddressPreference::HappyEyeballs,
            attempt_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(300),
            tls: Level::May,
            tls_policies: Vec::new(),
            dane: false,
            connectors: Connectors::unverified(),
        }
    }
}

/// What one delivery attempt to a destination achieved.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// One per recipient, in order.
    pub rcpts: Vec<RcptResult>,
    /// The host and address that gave the answers, when a session happened.
    pub peer: Option<(String, SocketAddr)>,
    pub tls: bool,
    /// The peer offered DSN (RFC 3461), so the sender's DSN parameters went on with the message.
    pub dsn: bool,
    /// The policy that set this destination's TLS level.
    pub tls_source: Source,
    /// How TLS went with the peer that answered (none without a session).
    pub tls_result: Option<TlsResult>,
    /// Every session's TLS outcome in this attempt, and a policy that could
    /// not be obtained (for TLS-RPT, RFC 8460).
    pub tls_sessions: Vec<TlsSession>,
}

/// How TLS went in one session (or why a policy failed, with no session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    pub result: TlsResult,
    /// The MX host, when a host was involved.
    pub mx: String,
    pub receiving: Option<IpAddr>,
    pub sending: Option<IpAddr>,
    /// What went wrong, for the report's failure details.
    pub detail: String,
}

fn all(rcpts: usize, r: RcptResult) -> Vec<RcptResult> {
    vec![r; rcpts]
}

fn local(code: u16, text: &str) -> ServerReply {
    ServerReply { code, lines: vec![text.to_string()] }
}

/// The hosts to try, best first (RFC 5321 §5.1; RFC 7505 null MX).
async fn route(resolver: &Resolver, cfg: &RemoteConfig, domain: &str) -> Result<Vec<String>, RcptResult> {
    let name = match &cfg.relayhost {
        Some(r) if !r.mx_lookup => return Ok(vec![r.host.clone()]),
        Some(r) => r.host.clone(),
        None => domain.to_string(),
    };
    match resolver.mx(&name).await {
        Lookup::Found(mut v) => {
            if v.len() == 1 && v[0].1.is_empty() {
                return Err(RcptResult::Failed(local(556, "5.1.10 the domain accepts no mail (null MX, RFC 7505)")));
            }
            // RFC 5321 §5.1: a backup MX only tries hosts more preferred than itself.
            if let Some(own) = v.iter().filter(|(_, h)| h.eq_ignore_ascii_case(&cfg.hostname)).map(|(p, _)| *p).min() {
                v.retain(|(p, _)| *p < own);
                if v.is_empty() {
                    return Err(RcptResult::Failed(local(554, &format!("5.4.6 mail for {name} loops back to myself"))));
                }
            }
            // Preference order, random among equals.
            v.sort_by_key(|(p, h)| (*p, shuffle_key(h)));
            Ok(v.into_iter().map(|(_, h)| h).filter(|h| !h.is_empty()).take(MAX_HOSTS).collect())
        }
        Lookup::NotFound => Ok(vec![name]), // implicit MX
        Lookup::TempFail(e) => Err(RcptResult::Deferred(local(451, &format!("4.4.3 MX lookup for {name} failed: {e}")))),
    }
}

fn shuffle_key(h: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut x = std::collections::hash_map::RandomState::new().build_hasher();
    x.write(h.as_bytes());
    x.finish()
}

/// Addresses of `host` in the configured order; Happy Eyeballs interleaves
/// the families, IPv6 first (RFC 8305 §4).
async fn addresses(resolver: &Resolver, cfg: &RemoteConfig, host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let want6 = cfg.preference != AddressPreference::Ipv4Only;
    let want4 = cfg.preference != AddressPreference::Ipv6Only;
    let (v6, v4) = tokio::join!(
        async {
            if want6 {
                resolver.aaaa(host).await
            } else {
                Lookup::NotFound
            }
        },
        async {
            if want4 {
                resolver.a(host).await
            } else {
                Lookup::NotFound
            }
        }
    );
    if let (Lookup::TempFail(e), Lookup::TempFail(_) | Lookup::NotFound) | (Lookup::NotFound, Lookup::TempFail(e)) = (&v6, &v4) {
        return Err(format!("address lookup for {host} failed: {e}"));
    }
    let v6: Vec<IpAddr> = v6.found().iter().map(|a| IpAddr::V6(*a)).collect();
    let v4: Vec<IpAddr> = v4.found().iter().map(|a| IpAddr::V4(*a)).collect();
    Ok(match cfg.preference {
        AddressPreference::HappyEyeballs => {
            let mut out = Vec::new();
            for i in 0..v6.len().max(v4.len()) {
                out.extend(v6.get(i));
                out.extend(v4.get(i));
            }
            out
        }
        AddressPreference::Ipv4First => v4.into_iter().chain(v6).collect(),
        _ => v6.into_iter().chain(v4).collect(),
    })
}

async fn connect_one(cfg: &RemoteConfig, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match addr {
        SocketAddr::V6(_) => {
            let s = tokio::net::TcpSocket::new_v6()?;
            if let Some(b) = cfg.bind_ipv6 {
                s.bind(SocketAddr::new(IpAddr::V6(b), 0))?;
            }
            s
        }
        SocketAddr::V4(_) => {
            let s = tokio::net::TcpSocket::new_v4()?;
            if let Some(b) = cfg.bind_ipv4 {
                s.bind(SocketAddr::new(IpAddr::V4(b), 0))?;
            }
            s
        }
    };
    match tokio::time::timeout(cfg.connect_timeout, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")),
    }
}

/// Connect to the first address that answers. With Happy Eyeballs the next
/// attempt starts `attempt_delay` after the previous one (or at once when it
/// failed); otherwise one after the other.
pub async fn connect(cfg: &RemoteConfig, addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    if addrs.is_empty() {
        return Err("no addresses".into());
    }
    let race = cfg.preference == AddressPreference::HappyEyeballs;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut next = 0;
    let mut last_err = String::new();
    loop {
        if next < addrs.len() && (pending.is_empty() || race) {
            let a = addrs[next];
            next += 1;
            pending.push(async move { (a, connect_one(cfg, a).await) });
        }
        let delay = tokio::time::sleep(if race && next < addrs.len() { cfg.attempt_delay } else { Duration::from_secs(86400) });
        tokio::select! {
            r = futures_util::StreamExt::next(&mut pending) => match r {
                Some((a, Ok(s))) => return Ok((s, a)),
                Some((a, Err(e))) => {
                    last_err = format!("{a}: {e}");
                    if pending.is_empty() && next >= addrs.len() {
                        return Err(last_err);
                    }
                }
                None if next >= addrs.len() => return Err(last_err),
                None => {}
            },
            _ = delay => {}
        }
    }
}

enum Conn<S> {
    Plain(S),
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(b).await,
            Conn::Tls(s) => s.write_all(b).await,
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    async fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(b).await,
            Conn::Tls(s) => s.read(b).await,
            Conn::Gone => Ok(0),
        }
    }
    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
    }
}

/// Run one SMTP/LMTP session over `stream`.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    mut client: Client,
    tls_name: rustls_pki_types::ServerName<'static>,
    tls: &SessionTls,
    reply_timeout: Duration,
) -> (Outcome, Option<TlsResult>) {
    let mut conn = Conn::Plain(stream);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(a) = client.poll() {
            match a {
                Action::Send(b) => {
                    if conn.write_all(&b).await.is_err() {
                        return (client.abort("connection lost while sending"), None);
                    }
                }
                Action::StartTls => {
                    let Conn::Plain(s) = std::mem::replace(&mut conn, Conn::Gone) else { return (client.abort("TLS state"), None) };
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    match tokio::time::timeout(reply_timeout, connector.connect(tls_name.clone(), s)).await {
                        Ok(Ok(t)) => {
                            conn = Conn::Tls(Box::new(t));
                            client.tls_established();
                        }
                        Ok(Err(e)) => {
                            let r = TlsResult::of_handshake(&e);
                            let text = format!("4.7.5 TLS with the server failed ({}): {e}", r.as_str());
                            return (client.refuse(ServerReply { code: 451, lines: vec![text] }), Some(r));
                        }
                        Err(_) => return (client.abort("TLS handshake timeout"), Some(TlsResult::ValidationFailure)),
                    }
                }
                Action::Done(o) => {
                    // Let QUIT go out, then close.
                    while let Some(Action::Send(b)) = client.poll() {
                        let _ = conn.write_all(&b).await;
                    }
                    conn.shutdown().await;
                    return (o, None);
                }
            }
        }
        match tokio::time::timeout(reply_timeout, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (client.abort("connection closed by the server"), None),
            Ok(Ok(n)) => client.receive(&buf[..n]),
            Err(_) => return (client.abort("timeout waiting for the server"), None),
        }
    }
}

/// Deliver `txn` for the recipients of one destination domain, under the
/// domain's MTA-STS policy `sts` when it has one ([`crate::mta_sts`]).
pub async fn deliver(
    resolver: &Resolver,
    cfg: &RemoteConfig,
    domain: &str,
    sts: Option<&mx6_policy::mta_sts::Policy>,
    txn: &Transaction,
    body: &[u8],
) -> Delivery {
    let n = txn.rcpts.len();
    let req = crate::tls_policy::requirement(cfg.tls, &cfg.tls_policies, domain, cfg.relayhost.is_some(), cfg.auth.is_some(), sts);
    let hosts = match route(resolver, cfg, domain).await {
        Ok(h) => h,
        Err(r) => {
            let (tls_source, tls_sessions) = (req.source, Vec::new());
            return Delivery { rcpts: all(n, r), peer: None, tls: false, dsn: false, tls_source, tls_result: None, tls_sessions };
        }
    };
    let port = cfg.relayhost.as_ref().map(|r| r.port).unwrap_or(cfg.port);
    // DANE (RFC 7672 §2.2.1): only when the MX RRset is secure (a relayhost
    // named in brackets has none: its own records decide).
    let dane_wanted = req.level.dane() || (cfg.dane && cfg.relayhost.is_none() && req.source != Source::Manual);
    let mx_secure = match (&cfg.relayhost, dane_wanted) {
        (_, false) => Ok(false),
        (Some(r), true) if !r.mx_lookup => Ok(true),
        (Some(r), true) => crate::dane::mx_secure(resolver.secure(), &r.host).await,
        (None, true) => crate::dane::mx_secure(resolver.secure(), domain).await,
    };
    let mut sessions = Vec::new();
    let mut skipped = Vec::new();
    let mut used_source = req.source;
    let mut requiretls_refused = 0;
    let mut last_tls = None;
    let mut last = RcptResult::Deferred(local(451, "4.4.1 no MX host could be reached"));
    // The host that gave `last`, when a server gave it (for Remote-MTA).
    let mut last_peer = None;
    let mut tried = 0;
    for host in &hosts {
        let dane = match &mx_secure {
            Ok(true) => crate::dane::host(resolver.secure(), host, port).await,
            Ok(false) => HostDane::None,
            Err(e) => HostDane::Failed(TlsResult::DnssecInvalid, e.clone()),
        };
        tracing::debug!(domain, host, dane_wanted, mx_secure = ?mx_secure, dane = ?dane, "DANE");
        let req = match host_requirement(&req, dane, host, domain) {
            Ok(r) => r,
            Err((result, text)) => {
                if matches!(result, TlsResult::DnssecInvalid | TlsResult::TlsaInvalid) {
                    used_source = Source::Dane;
                }
                sessions.push(TlsSession { result, mx: host.clone(), receiving: None, sending: None, detail: text.clone() });
                skipped.push(host.clone());
                (last, last_peer, last_tls) = (RcptResult::Deferred(local(451, &text)), None, Some(result));
                continue;
            }
        };
        used_source = req.source;
        // RFC 8689 §4.2.1: REQUIRETLS goes only over a verified path.
        if txn.requiretls && !req.verified() {
            let text = format!("5.7.10 REQUIRETLS: no verified TLS to {host} (neither DANE nor MTA-STS enforce applies)");
            (last, last_peer) = (RcptResult::Deferred(local(451, &text)), None);
            requiretls_refused += 1;
            continue;
        }
        let tls_policy = match req.level {
            Level::None => TlsPolicy::Off,
            Level::May | Level::Dane => TlsPolicy::Opportunistic,
            Level::Encrypt | Level::Verify | Level::DaneOnly => TlsPolicy::Required,
        };
        let addrs = match addresses(resolver, cfg, host).await {
            Ok(a) => a,
            Err(e) => {
                (last, last_peer) = (RcptResult::Deferred(local(451, &format!("4.4.3 {e}"))), None);
                continue;
            }
        };
        if addrs.is_empty() {
            (last, last_peer) = (RcptResult::Deferred(local(451, &format!("4.4.4 {host} has no address"))), None);
            continue;
        }
        let mut addrs: Vec<SocketAddr> =
            addrs.into_iter().take(MAX_ADDRESSES - tried.min(MAX_ADDRESSES - 1)).map(|ip| SocketAddr::new(ip, port)).collect();
        let mut retried_v4 = false;
        loop {
            let (stream, peer) = match connect(cfg, &addrs).await {
                Ok(x) => x,
                Err(e) => {
                    tried += addrs.len();
                    (last, last_peer) = (RcptResult::Deferred(local(451, &format!("4.4.1 connect to {host}: {e}"))), None);
                    break;
                }
            };
            let sending = stream.local_addr().ok().map(|a| a.ip());
            let client = Client::new(
                ClientConfig { hostname: cfg.hostname.clone(), tls: tls_policy, auth: cfg.auth.clone(), lmtp: false },
                txn.clone(),
                body.to_vec(),
            );
            let name =
                rustls_pki_types::ServerName::try_from(host.clone()).unwrap_or(rustls_pki_types::ServerName::IpAddress(peer.ip().into()));
            let tls = match req.tlsa.is_empty() {
                true => cfg.connectors.for_session(&req, host),
                false => crate::dane::client(req.tlsa.clone(), host).map(|config| SessionTls { config, observed: None }),
            };
            let Some(tls) = tls else {
                let text = "4.7.5 certificates must be verified, but no trust anchors are loaded (see delivery.ca_file)";
                (last, last_peer, last_tls) = (RcptResult::Deferred(local(451, text)), None, Some(TlsResult::ValidationFailure));
                break;
            };
            let (o, failed) = session(stream, client, name, &tls, cfg.reply_timeout).await;
            let mut tls_result = tls_result(&req, &o, failed.or(tls.observed()));
            // MTA-STS testing: a host outside the policy is reported, not refused.
            let outside = req.report_only && req.sts.as_ref().is_some_and(|p| !p.allows(host));
            if outside && tls_result == Some(TlsResult::Success) {
                tls_result = Some(TlsResult::ValidationFailure);
            }
            if let Some(r) = tls_result {
                let detail = match r {
                    TlsResult::Success | TlsResult::Plaintext => String::new(),
                    _ if outside => format!("{host} is not in the MTA-STS policy of {domain}"),
                    _ if tls.observed().is_some() => format!("the certificate of {host}: {} (MTA-STS testing)", r.as_str()),
                    _ => o.rcpts.first().map(|r| r.reply().text()).unwrap_or_default(),
                };
                sessions.push(TlsSession { result: r, mx: host.clone(), receiving: Some(peer.ip()), sending, detail });
            }
            // The host refused us for being on IPv6: the same host over IPv4, now.
            let v6_refused = peer.is_ipv6() && o.rcpts.iter().any(|r| !matches!(r, RcptResult::Delivered(_)) && r.reply().refuses_ipv6());
            if v6_refused && !retried_v4 && cfg.preference != AddressPreference::Ipv6Only {
                let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
                if !v4.is_empty() {
                    retried_v4 = true;
                    addrs = v4;
                    continue;
                }
            }
            let session_level = o.rcpts.iter().all(|r| matches!(r, RcptResult::Deferred(_)));
            if txn.requiretls && o.rcpts.first().is_some_and(|r| r.reply().text().contains("4.7.10 REQUIRETLS")) {
                requiretls_refused += 1;
            }
            if session_level && !o.rcpts.is_empty() {
                // Nothing decided here (greeting refused, connection lost): next host.
                last = o.rcpts[0].clone();
                last_peer = Some((host.clone(), peer));
                last_tls = tls_result;
                tried += 1;
                break;
            }
            return Delivery {
                rcpts: o.rcpts,
                peer: Some((host.clone(), peer)),
                tls: o.tls,
                dsn: o.dsn,
                tls_source: req.source,
                tls_result,
                tls_sessions: sessions,
            };
        }
        if tried >= MAX_ADDRESSES {
            break;
        }
    }
    if txn.requiretls && requiretls_refused > 0 && requiretls_refused + skipped.len() >= hosts.len() {
        let text = format!("5.7.10 REQUIRETLS: no MX host of {domain} offers verified TLS with REQUIRETLS");
        last = RcptResult::Failed(local(550, &text));
    } else if !skipped.is_empty() && skipped.len() == hosts.len() && sessions.iter().all(|s| s.result == TlsResult::ValidationFailure) {
        let text = format!("4.7.5 no MX host of {domain} matches its MTA-STS policy ({} refused)", skipped.join(", "));
        last = RcptResult::Deferred(local(451, &text));
    }
    Delivery {
        rcpts: all(n, last),
        peer: last_peer,
        tls: false,
        dsn: false,
        tls_source: used_source,
        tls_result: last_tls,
        tls_sessions: sessions,
    }
}

/// What one host gets under the destination's requirement `req`, given what
/// DANE says about it: DANE first (RFC 8461 §2), then MTA-STS (only hosts its
/// policy allows), then the rest; `Err` when the host must not be used.
fn host_requirement(req: &Requirement, dane: HostDane, host: &str, domain: &str) -> Result<Requirement, (TlsResult, String)> {
    let with = |level, tlsa| Requirement { level, source: Source::Dane, names: Vec::new(), sts: None, report_only: false, tlsa };
    match dane {
        HostDane::Verify(tlsa) => Ok(with(Level::Verify, tlsa)),
        HostDane::Encrypt => Ok(with(Level::Encrypt, Vec::new())),
        HostDane::Failed(r, e) => Err((r, format!("4.7.5 DANE: {e}"))),
        HostDane::None if req.level == Level::DaneOnly => {
            Err((TlsResult::TlsaInvalid, format!("4.7.5 DANE required for {host}, which has no secure TLSA records")))
        }
        HostDane::None if req.level == Level::Dane => Ok(Requirement { level: Level::May, ..req.clone() }),
        HostDane::None if !req.allows_host(host) => {
            Err((TlsResult::ValidationFailure, format!("4.7.5 no MX host of {domain} matches its MTA-STS policy ({host} refused)")))
        }
        HostDane::None => Ok(req.clone()),
    }
}

/// How TLS went in one session under `req` (`None`: the session ended
/// before TLS was decided, e.g. a refused greeting).
fn tls_result(req: &Requirement, o: &Outcome, failed: Option<TlsResult>) -> Option<TlsResult> {
    if failed.is_some() {
        return failed;
    }
    if o.tls {
        return Some(TlsResult::Success);
    }
    if !o.starttls_offered && !o.server_name.is_empty() && req.level >= Level::May {
        return Some(TlsResult::StarttlsNotSupported);
    }
    (req.level == Level::None || o.starttls_offered).then_some(TlsResult::Plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayhost_forms() {
        assert_eq!(Relayhost::parse("[2001:db8::1]:587").unwrap(), Relayhost { host: "2001:db8::1".into(), port: 587, mx_lookup: false });
        assert_eq!(
            Relayhost::parse("[smtp.example.net]:587").unwrap(),
            Relayhost { host: "smtp.example.net".into(), port: 587, mx_lookup: false }
        );
        assert_eq!(
            Relayhost::parse("relay.example.net").unwrap(),
            Relayhost { host: "relay.example.net".into(), port: 25, mx_lookup: true }
        );
        assert_eq!(Relayhost::parse("192.0.2.1:2525").unwrap(), Relayhost { host: "192.0.2.1".into(), port: 2525, mx_lookup: false });
        assert!(Relayhost::parse("2001:db8::1:587").is_err());
        assert!(Relayhost::parse("[::1").is_err());
    }

    #[tokio::test]
    async fn a_refused_ipv6_connection_falls_to_ipv4_at_once() {
        let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v4addr = v4.local_addr().unwrap();
        let mut cfg = RemoteConfig::new("me.test");
        cfg.attempt_delay = Duration::from_millis(50);
        let closed = std::net::TcpListener::bind("[::1]:0").unwrap();
        let v6addr = closed.local_addr().unwrap();
        drop(closed);
        let (_, peer) = connect(&cfg, &[v6addr, v4addr]).await.unwrap();
        assert_eq!(peer, v4addr);
    }
}
