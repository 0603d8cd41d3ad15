//! `mx6 check DOMAIN`: a deployment audit of a domain's mail DNS and its MX
//! servers, with IPv6 first.
//!
//! Checks, each finding ok / warning / error:
//! - MX (RFC 5321 §5.1; null MX, RFC 7505), AAAA and A of every MX host — a
//!   domain none of whose MX hosts has an AAAA cannot receive over IPv6;
//! - PTR and forward confirmation of every MX address (RFC 8601 `iprev`, what
//!   receivers such as Gmail demand of IPv6 senders);
//! - SPF (RFC 7208): one record, at most 10 DNS-querying terms (§4.6.4, counted
//!   through include and redirect), and it authorises every MX address and every
//!   `--ip`;
//! - DMARC (RFC 7489) and its policy; DKIM keys (RFC 6376) at the given and the
//!   common selectors; TLS-RPT (RFC 8460) record;
//! - MTA-STS (RFC 8461): the `_mta-sts` record and its `id`, the policy file
//!   fetched over each address family with a verified certificate (§3.3),
//!   parsed strictly, and whether its `mx` patterns cover every MX host
//!   (§4.1); for a domain whose policy this config serves, whether the served
//!   policy and the published `id` still belong together (§3.1);
//! - DANE (RFC 7672): whether the MX records are DNSSEC-secure (the AD bit of
//!   the resolvers), each host's usable TLSA records, and whether the
//!   certificate each MX address presents matches them;
//! - the ACME certificate of this config (`[acme]`): its expiry and whether
//!   the last renewal failed;
//! - SMTP on every MX address: banner, EHLO, STARTTLS (RFC 3207), and the
//!   certificate's names and expiry.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::BoxFuture;
use mx6_dns::{Lookup, Resolver};
use mx6_policy::inbound::AuthResult;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Selectors tried besides the ones given.
pub const COMMON_SELECTORS: &[&str] = &["mx6", "default", "dkim", "mail", "selector1", "selector2", "google", "k1", "s1", "s2"];
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
const SPF_LOOKUP_LIMIT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The group: mx, address, ptr, spf, dmarc, dkim, mta-sts, tls-rpt, dane, smtp.
    pub check: &'static str,
    pub level: Level,
    /// What the finding is about (a host, an address, a record name).
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub domain: String,
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
}

pub struct Options {
    pub domain: String,
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub dkim_selectors: Vec<String>,
    /// Our name for EHLO.
    pub hostname: String,
    /// Port of the MTA-STS policy host (`[delivery] mta_sts_port`).
    pub mta_sts_port: u16,
    /// Extra trust anchors (`[delivery] ca_file`).
    pub ca_file: String,
    /// The policy this config serves for the domain, if it serves one.
    pub served_policy: Option<String>,
    /// The ACME client's last status, when `[acme]` is on.
    pub acme: Option<mx6_config::acme::RenewalStatus>,
}

const GROUPS: &[(&str, &str)] = &[
    ("mx", "MX records"),
    ("address", "MX host addresses"),
    ("ptr", "Reverse DNS of MX addresses"),
    ("spf", "SPF"),
    ("dmarc", "DMARC"),
    ("dkim", "DKIM"),
    ("mta-sts", "MTA-STS"),
    ("tls-rpt", "TLS-RPT"),
    ("dane", "DANE (TLSA)"),
    ("smtp", "SMTP on port 25 (or --port)"),
    ("acme", "ACME certificate"),
];

impl Report {
    /// The human-readable report, grouped by check.
    pub fn text(&self) -> String {
        let mut s = format!("mx6 check {}\n", self.domain);
        for (g, title) in GROUPS {
            let f: Vec<&Finding> = self.findings.iter().filter(|f| f.check == *g).collect();
            if f.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\n{title}");
            for f in f {
                let l = match f.level {
                    Level::Ok => "ok",
                    Level::Warning => "warning",
                    Level::Error => "error",
                };
                let _ = writeln!(s, "  {l:<8} {}: {}", f.subject, f.message);
            }
        }
        let _ = writeln!(s, "\n{} errors, {} warnings", self.errors, self.warnings);
        s
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, check: &'static str, level: Level, subject: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding { check, level, subject: subject.into(), message: message.into() });
    }
}

/// Run every check.
pub async fn run(resolver: &Resolver, opts: &Options) -> Report {
    let domain = opts.domain.trim_end_matches('.').to_lowercase();
    let mut f = Findings(Vec::new());
    let hosts = mx(resolver, &domain, &mut f).await;
    let mut addrs: Vec<(String, IpAddr)> = Vec::new();
    let mut any_v6 = false;
    for host in &hosts {
        let (v6, v4) = tokio::join!(resolver.aaaa(host), resolver.a(host));
        match &v6 {
            Lookup::Found(a) => {
                any_v6 = true;
                for ip in a {
                    f.add("address", Level::Ok, host, format!("AAAA {ip}"));
                    addrs.push((host.clone(), IpAddr::V6(*ip)));
                }
            }
            Lookup::NotFound => f.add("address", Level::Warning, host, "no AAAA record: this host cannot receive over IPv6"),
            Lookup::TempFail(e) => f.add("address", Level::Error, host, format!("AAAA lookup failed: {e}")),
        }
        match &v4 {
            Lookup::Found(a) => {
                for ip in a {
                    f.add("address", Level::Ok, host, format!("A {ip}"));
                    addrs.push((host.clone(), IpAddr::V4(*ip)));
                }
            }
            Lookup::NotFound => f.add("address", Level::Warning, host, "no A record: IPv4-only senders cannot reach this host"),
            Lookup::TempFail(e) => f.add("address", Level::Error, host, format!("A lookup failed: {e}")),
        }
        if v6.found().is_empty() && v4.found().is_empty() {
            f.add("address", Level::Error, host, "the MX host has no address");
        }
    }
    if !hosts.is_empty() && !any_v6 {
        f.add("address", Level::Error, &domain, "no MX host has an AAAA record: the domain cannot receive mail over IPv6");
    }
    for (host, ip) in &addrs {
        ptr(resolver, host, *ip, &mut f).await;
    }
    spf(resolver, &domain, &opts.hostname, &addrs, &opts.ips, &mut f).await;
    dmarc(resolver, &domain, &mut f).await;
    dkim(resolver, &domain, &opts.dkim_selectors, &mut f).await;
    mta_sts(resolver, opts, &domain, &hosts, &mut f).await;
    tagged_record(resolver, &format!("_smtp._tls.{domain}"), "v=TLSRPTv1", "tls-rpt", "TLS-RPT (RFC 8460)", &mut f).await;
    let tlsa = dane(resolver, &domain, &hosts, opts.port, &mut f).await;
    for (host, ip) in &addrs {
        let records = tlsa.get(host).map(Vec::as_slice).unwrap_or(&[]);
        smtp(host, SocketAddr::new(*ip, opts.port), &opts.hostname, records, &mut f).await;
    }
    if let Some(status) = &opts.acme {
        acme(status, &mut f);
    }
    let errors = f.0.iter().filter(|x| x.level == Level::Error).count();
    let warnings = f.0.iter().filter(|x| x.level == Level::Warning).count();
    Report { domain, findings: f.0, errors, warnings }
}

async fn mx(resolver: &Resolver, domain: &str, f: &mut Findings) -> Vec<String> {
    match resolver.mx(domain).await {
        Lookup::Found(mut v) => {
            if v.len() == 1 && v[0].1.is_empty() {
                f.add("mx", Level::Warning, domain, "null MX (RFC 7505): the domain accepts no mail");
                return Vec::new();
            }
            v.sort();
            for (pref, host) in &v {
                f.add("mx", Level::Ok, host, format!("preference {pref}"));
            }
            v.into_iter().map(|(_, h)| h).collect()
        }
        Lookup::NotFound => {
            f.add("mx", Level::Warning, domain, "no MX record: senders use the domain's own address (implicit MX, RFC 5321 §5.1)");
            vec![domain.to_string()]
        }
        Lookup::TempFail(e) => {
            f.add("mx", Level::Error, domain, format!("MX lookup failed: {e}"));
            Vec::new()
        }
    }
}

async fn ptr(resolver: &Resolver, host: &str, ip: IpAddr, f: &mut Findings) {
    let subject = ip.to_string();
    let (result, names, confirmed) = resolver.iprev(ip).await;
    match result {
        AuthResult::Pass => {
            let name = confirmed.unwrap_or_default();
            if name.eq_ignore_ascii_case(host) {
                f.add("ptr", Level::Ok, subject, format!("PTR {name}, which resolves back to it"));
            } else {
                f.add("ptr", Level::Ok, subject, format!("PTR {name}, which resolves back to it (the MX name is {host})"));
            }
        }
        AuthResult::PermError => {
            f.add("ptr", Level::Error, subject, "no PTR record: receivers refuse mail from such addresses (Gmail 550 5.7.25)")
        }
        AuthResult::Fail => f.add("ptr", Level::Error, subject, format!("PTR {} does not resolve back to this address", names.join(", "))),
        _ => f.add("ptr", Level::Error, subject, "reverse DNS lookup failed (timeout or SERVFAIL)"),
    }
}

/// SPF records among TXT records.
fn spf_records(txt: &[String]) -> Vec<&String> {
    txt.iter().filter(|t| t.trim() == "v=spf1" || t.to_ascii_lowercase().starts_with("v=spf1 ")).collect()
}

/// DNS-querying terms of the SPF record at `domain`, through include and
/// redirect (RFC 7208 §4.6.4); `None` when a lookup fails.
fn count_lookups<'a>(resolver: &'a Resolver, domain: String, depth: usize) -> BoxFuture<'a, Result<usize, String>> {
    Box::pin(async move {
        if depth > 10 {
            return Ok(SPF_LOOKUP_LIMIT + 1);
        }
        let txt = match resolver.txt(&domain).await {
            Lookup::Found(t) => t,
            Lookup::NotFound => return Ok(0),
            Lookup::TempFail(e) => return Err(e),
        };
        let Some(rec) = spf_records(&txt).first().map(|s| s.to_string()) else { return Ok(0) };
        let mut n = 0;
        for term in rec.split_whitespace().skip(1) {
            let t = term.trim_start_matches(['+', '-', '~', '?']).to_ascii_lowercase();
            let (name, arg) = match t.split_once([':', '=']) {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (t.split('/').next().unwrap_or("").to_string(), None),
            };
            match name.as_str() {
                "a" | "mx" | "ptr" | "exists" => n += 1,
                "include" | "redirect" => {
                    n += 1;
                    if let Some(target) = arg.filter(|a| !a.contains('%')) {
                        n += count_lookups(resolver, target, depth + 1).await?;
                    }
                }
                _ => {}
            }
            if n > SPF_LOOKUP_LIMIT {
                break;
            }
        }
        Ok(n)
    })
}

async fn spf(resolver: &Resolver, domain: &str, hostname: &str, addrs: &[(String, IpAddr)], ips: &[IpAddr], f: &mut Findings) {
    let txt = match resolver.txt(domain).await {
        Lookup::Found(t) => t,
        Lookup::NotFound => Vec::new(),
        Lookup::TempFail(e) => {
            f.add("spf", Level::Error, domain, format!("TXT lookup failed: {e}"));
            return;
        }
    };
    let recs = spf_records(&txt);
    match recs.len() {
        0 => {
            f.add("spf", Level::Error, domain, "no SPF record (v=spf1): receivers that require SPF or DKIM refuse the domain's mail");
            return;
        }
        1 => f.add("spf", Level::Ok, domain, recs[0].clone()),
        n => {
            f.add("spf", Level::Error, domain, format!("{n} SPF records: SPF gives permerror (RFC 7208 §4.5)"));
            return;
        }
    }
    match count_lookups(resolver, domain.to_string(), 0).await {
        Ok(n) if n > SPF_LOOKUP_LIMIT => f.add(
            "spf",
            Level::Error,
            domain,
            format!("the record needs more than {SPF_LOOKUP_LIMIT} DNS lookups ({n} counted): SPF gives permerror (RFC 7208 §4.6.4)"),
        ),
        Ok(n) => f.add("spf", Level::Ok, domain, format!("{n} DNS lookups (limit {SPF_LOOKUP_LIMIT})")),
        Err(e) => f.add("spf", Level::Error, domain, format!("a lookup failed while counting: {e}")),
    }
    let auth = mx6_auth::Authenticator::new(resolver, hostname);
    let sender = format!("postmaster@{domain}");
    let mut seen = Vec::new();
    for ip in addrs.iter().map(|(_, ip)| *ip).chain(ips.iter().copied()) {
        if seen.contains(&ip) {
            continue;
        }
        seen.push(ip);
        let r = auth.spf(ip, domain, &sender).await.facts.result;
        if r == AuthResult::Pass {
            f.add("spf", Level::Ok, ip.to_string(), "authorised");
        } else {
            f.add("spf", Level::Error, ip.to_string(), format!("not authorised by SPF (result {}); add ip6:/ip4: for it", r.as_str()));
        }
    }
}

async fn dmarc(resolver: &Resolver, domain: &str, f: &mut Findings) {
    let name = format!("_dmarc.{domain}");
    let rec = match resolver.txt(&name).await {
        Lookup::Found(t) => t.into_iter().find(|t| t.trim_start().starts_with("v=DMARC1")),
        Lookup::NotFound => None,
        Lookup::TempFail(e) => {
            f.add("dmarc", Level::Error, name, format!("lookup failed: {e}"));
            return;
        }
    };
    let Some(rec) = rec else {
        f.add("dmarc", Level::Error, name, "no DMARC record: receivers cannot tell forged From: addresses of this domain");
        return;
    };
    match mx6_auth::record_tag(&rec, "p").map(str::to_ascii_lowercase).as_deref() {
        Some("reject") | Some("quarantine") => f.add("dmarc", Level::Ok, name, rec.clone()),
        Some("none") => f.add("dmarc", Level::Warning, name, format!("{rec} (p=none: monitoring only, forged mail is not refused)")),
        _ => f.add("dmarc", Level::Error, name, format!("{rec} (no valid p= tag)")),
    }
}

async fn dkim(resolver: &Resolver, domain: &str, given: &[String], f: &mut Findings) {
    let mut found = 0;
    for sel in given {
        let name = format!("{sel}._domainkey.{domain}");
        match resolver.txt(&name).await {
            Lookup::Found(t) if t.iter().any(|r| r.contains("p=")) => {
                found += 1;
                f.add("dkim", Level::Ok, name, "key published");
            }
            Lookup::TempFail(e) => f.add("dkim", Level::Error, name, format!("lookup failed: {e}")),
            _ => f.add("dkim", Level::Error, name, "no DKIM key at this selector"),
        }
    }
    for sel in COMMON_SELECTORS.iter().filter(|s| !given.iter().any(|g| g == *s)) {
        let name = format!("{sel}._domainkey.{domain}");
        if let Lookup::Found(t) = resolver.txt(&name).await {
            if t.iter().any(|r| r.contains("p=")) {
                found += 1;
                f.add("dkim", Level::Ok, name, "key published");
            }
        }
    }
    if found == 0 && given.is_empty() {
        f.add("dkim", Level::Warning, domain, "no DKIM key at the common selectors; name yours with --dkim-selector");
    }
}

async fn tagged_record(resolver: &Resolver, name: &str, prefix: &str, check: &'static str, what: &str, f: &mut Findings) {
    match resolver.txt(name).await {
        Lookup::Found(t) if t.iter().any(|r| r.starts_with(prefix)) => {
            f.add(check, Level::Ok, name, t.into_iter().find(|r| r.starts_with(prefix)).unwrap_or_default())
        }
        Lookup::TempFail(e) => f.add(check, Level::Error, name, format!("lookup failed: {e}")),
        _ => f.add(check, Level::Warning, name, format!("no {what} record")),
    }
}

async fn mta_sts(resolver: &Resolver, opts: &Options, domain: &str, hosts: &[String], f: &mut Findings) {
    use mx6_policy::mta_sts::{parse_policy, policy_id, record_id, Mode};
    let name = format!("_mta-sts.{domain}");
    let records: Vec<String> = match resolver.txt(&name).await {
        Lookup::Found(t) => t.into_iter().filter(|r| r.starts_with("v=STSv1")).collect(),
        Lookup::TempFail(e) => return f.add("mta-sts", Level::Error, name, format!("lookup failed: {e}")),
        Lookup::NotFound => Vec::new(),
    };
    let id = match &records[..] {
        [] => return f.add("mta-sts", Level::Warning, name, "no MTA-STS record (RFC 8461): senders may deliver without verified TLS"),
        [one] => match record_id(one) {
            Some(id) => {
                f.add("mta-sts", Level::Ok, &name, one.clone());
                id.to_string()
            }
            None => return f.add("mta-sts", Level::Error, name, format!("`{one}` has no valid id (1 to 32 letters and digits, §3.1)")),
        },
        _ => return f.add("mta-sts", Level::Error, name, "several STSv1 records: senders ignore them all (§3.1)"),
    };
    let host = mx6_delivery::mta_sts_fetch::policy_host(domain);
    let (v6, v4) = tokio::join!(resolver.aaaa(&host), resolver.a(&host));
    let addrs: Vec<IpAddr> = v6.found().iter().map(|a| IpAddr::V6(*a)).chain(v4.found().iter().map(|a| IpAddr::V4(*a))).collect();
    if v6.found().is_empty() {
        f.add("mta-sts", Level::Warning, &host, "no AAAA record: IPv6-only senders cannot fetch the policy");
    }
    if addrs.is_empty() {
        return f.add("mta-sts", Level::Error, host, "the policy host has no address");
    }
    let tls = match mx6_delivery::trust::verifying_client(&opts.ca_file, &[b"http/1.1"]) {
        Ok(t) => t,
        Err(e) => return f.add("mta-sts", Level::Error, host, format!("cannot verify certificates: {e}")),
    };
    let mut texts: Vec<String> = Vec::new();
    for ip in addrs {
        let subject = format!("https://{host}:{} {ip}", opts.mta_sts_port);
        let fetched =
            mx6_delivery::mta_sts_fetch::fetch(SocketAddr::new(ip, opts.mta_sts_port), domain, tls.clone(), Duration::from_secs(10)).await;
        match fetched {
            Err(e) => f.add("mta-sts", Level::Error, subject, format!("policy not fetched: {e}")),
            Ok(text) => match parse_policy(&text) {
                Err(e) => f.add("mta-sts", Level::Error, subject, format!("policy invalid: {e}")),
                Ok(p) => {
                    let mode = match p.mode {
                        Mode::Enforce => "enforce",
                        Mode::Testing => "testing",
                        Mode::None => "none",
                    };
                    f.add("mta-sts", Level::Ok, subject, format!("policy: mode {mode}, mx {}, max_age {}", p.mx.join(" "), p.max_age));
                    if texts.is_empty() {
                        for h in hosts.iter().filter(|h| !p.allows(h)) {
                            let level = if p.mode == Mode::Enforce { Level::Error } else { Level::Warning };
                            f.add(
                                "mta-sts",
                                level,
                                h,
                                "MX host not covered by the policy's mx patterns: senders that enforce it will not deliver here",
                            );
                        }
                    }
                    texts.push(text);
                }
            },
        }
    }
    if texts.windows(2).any(|w| w[0] != w[1]) {
        f.add("mta-sts", Level::Warning, &host, "the addresses serve different policies");
    }
    if let (Some(ours), Some(served)) = (&opts.served_policy, texts.first()) {
        if served != ours {
            f.add(
                "mta-sts",
                Level::Warning,
                &host,
                "the policy served is not the one this config serves (another server, or not restarted?)",
            );
        }
        let want = policy_id(ours);
        if id != want {
            f.add(
                "mta-sts",
                Level::Warning,
                name,
                format!("the policy changed but the id did not: publish `v=STSv1; id={want}` so senders fetch it again (§3.1)"),
            );
        }
    }
}

fn acme(s: &mx6_config::acme::RenewalStatus, f: &mut Findings) {
    let subject = s.names.join(", ");
    let show = |t: i64| chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if s.not_after == 0 {
        f.add("acme", Level::Error, &subject, "no certificate obtained yet: the default certificate is served");
    } else if s.not_after < now {
        f.add("acme", Level::Error, &subject, format!("the certificate expired {}", show(s.not_after)));
    } else {
        let days = (s.not_after - now) / 86400;
        let level = if days < 14 { Level::Warning } else { Level::Ok };
        f.add(
            "acme",
            level,
            &subject,
            format!("certificate expires {} (in {days} days); next renewal attempt {}", show(s.not_after), show(s.next_attempt)),
        );
    }
    if s.failures > 0 {
        f.add(
            "acme",
            Level::Warning,
            &subject,
            format!(
                "the last {} order(s) failed, the last at {}: {}; the certificate in use stays; next attempt {}",
                s.failures,
                show(s.last_attempt),
                s.last_error,
                show(s.next_attempt)
            ),
        );
    }
}

async fn read_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(SMTP_TIMEOUT, r.read_line(&mut line))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end();
        let (code, more, text) = mx6_smtp::client::parse_line(line).ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        lines.push(text);
        if !more {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err("reply too long".into());
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, cmd: &str) -> Result<(u16, Vec<String>), String> {
    s.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
    read_reply(s).await
}

/// DANE (RFC 7672): whether the MX records are DNSSEC-secure (as the
/// resolvers' AD bit says), and each host's usable TLSA records.
async fn dane(
    resolver: &Resolver,
    domain: &str,
    hosts: &[String],
    port: u16,
    f: &mut Findings,
) -> std::collections::HashMap<String, Vec<mx6_dns::secure::Tlsa>> {
    use mx6_delivery::dane::{host, mx_secure, HostDane};
    let mut out = std::collections::HashMap::new();
    match mx_secure(resolver.secure(), domain).await {
        Err(e) => {
            f.add("dane", Level::Error, domain, format!("bogus DNSSEC answer ({e}): DANE senders defer all mail"));
            return out;
        }
        Ok(false) => {
            f.add("dane", Level::Warning, domain, "the MX records are not DNSSEC-secure (or the resolver does not validate): no DANE");
            return out;
        }
        Ok(true) => f.add("dane", Level::Ok, domain, "the MX records are DNSSEC-secure"),
    }
    for h in hosts {
        let name = format!("_{port}._tcp.{h}");
        match host(resolver.secure(), h, port).await {
            HostDane::Verify(records) => {
                let list: Vec<String> = records.iter().map(|t| format!("{} {} {}", t.usage, t.selector, t.matching)).collect();
                f.add("dane", Level::Ok, &name, format!("secure TLSA records: {}", list.join(", ")));
                out.insert(h.clone(), records);
            }
            HostDane::Encrypt => {
                f.add("dane", Level::Warning, &name, "TLSA records, but none usable for SMTP (only DANE-TA(2) and DANE-EE(3) are)")
            }
            HostDane::Failed(r, e) => f.add("dane", Level::Error, &name, format!("{}: {e}: DANE senders defer mail to {h}", r.as_str())),
            HostDane::None => {
                f.add("dane", Level::Warning, &name, "no secure TLSA records (or insecure addresses): DANE senders fall back")
            }
        }
    }
    out
}

async fn smtp(host: &str, addr: SocketAddr, hostname: &str, tlsa: &[mx6_dns::secure::Tlsa], f: &mut Findings) {
    let subject = format!("{host} {addr}");
    let tcp = match tokio::time::timeout(SMTP_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return f.add("smtp", Level::Error, subject, format!("cannot connect: {e}")),
        Err(_) => return f.add("smtp", Level::Error, subject, "cannot connect: timeout"),
    };
    let mut s = BufReader::new(tcp);
    match read_reply(&mut s).await {
        Ok((220, l)) => f.add("smtp", Level::Ok, &subject, format!("banner: 220 {}", l.first().map(String::as_str).unwrap_or(""))),
        Ok((c, l)) => return f.add("smtp", Level::Error, subject, format!("banner: {c} {}", l.join(" "))),
        Err(e) => return f.add("smtp", Level::Error, subject, format!("no banner: {e}")),
    }
    let ext = match command(&mut s, &format!("EHLO {hostname}")).await {
        Ok((250, l)) => l,
        Ok((c, l)) => return f.add("smtp", Level::Error, subject, format!("EHLO refused: {c} {}", l.join(" "))),
        Err(e) => return f.add("smtp", Level::Error, subject, format!("EHLO: {e}")),
    };
    if !ext.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS")) {
        let _ = command(&mut s, "QUIT").await;
        return f.add("smtp", Level::Error, subject, "no STARTTLS: mail to this host travels in clear text");
    }
    match command(&mut s, "STARTTLS").await {
        Ok((220, _)) => {}
        Ok((c, l)) => return f.add("smtp", Level::Error, subject, format!("STARTTLS refused: {c} {}", l.join(" "))),
        Err(e) => return f.add("smtp", Level::Error, subject, format!("STARTTLS: {e}")),
    }
    // The audit inspects certificates instead of trusting them.
    let config = mx6_delivery::tls_policy::client_tls();
    let name =
        rustls_pki_types::ServerName::try_from(host.to_string()).unwrap_or(rustls_pki_types::ServerName::IpAddress(addr.ip().into()));
    let tls = tokio::time::timeout(SMTP_TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(name, s.into_inner())).await;
    let tls = match tls {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return f.add("smtp", Level::Error, subject, format!("TLS handshake failed: {e}")),
        Err(_) => return f.add("smtp", Level::Error, subject, "TLS handshake timeout"),
    };
    let (_, conn) = tls.get_ref();
    let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    f.add("smtp", Level::Ok, &subject, format!("STARTTLS: {version}"));
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return f.add("smtp", Level::Error, subject, "no certificate");
    };
    certificate(host, &subject, cert.as_ref(), f);
    if !tlsa.is_empty() {
        let chain = conn.peer_certificates().unwrap_or_default();
        let hit = tlsa.iter().find(|t| match t.usage {
            3 => mx6_delivery::dane::matches(t, cert.as_ref()),
            _ => chain.iter().any(|c| mx6_delivery::dane::matches(t, c.as_ref())),
        });
        match hit {
            Some(t) => {
                f.add("dane", Level::Ok, &subject, format!("the certificate matches TLSA {} {} {}", t.usage, t.selector, t.matching))
            }
            None => f.add("dane", Level::Error, &subject, "the certificate matches none of the TLSA records: DANE senders defer"),
        }
    }
    let mut s = BufReader::new(tls);
    let _ = command(&mut s, "QUIT").await;
}

fn certificate(host: &str, subject: &str, der: &[u8], f: &mut Findings) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return f.add("smtp", Level::Error, subject, "the certificate cannot be parsed");
    };
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).map(str::to_lowercase));
    }
    let host = host.to_lowercase();
    let covered = names
        .iter()
        .any(|n| *n == host || n.strip_prefix("*.").is_some_and(|base| host.split_once('.').is_some_and(|(_, rest)| rest == base)));
    let not_after = cert.validity().not_after.timestamp();
    let now = chrono::Utc::now().timestamp();
    let expiry = chrono::DateTime::from_timestamp(not_after, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
    let days = (not_after - now) / 86400;
    let what = format!("certificate for {} expires {expiry}", names.join(", "));
    if not_after < now {
        f.add("smtp", Level::Error, subject, format!("{what}: expired"));
    } else if days < 14 {
        f.add("smtp", Level::Warning, subject, format!("{what}: in {days} days"));
    } else {
        f.add("smtp", Level::Ok, subject, format!("{what} (in {days} days)"));
    }
    if !covered {
        f.add(
            "smtp",
            Level::Warning,
            subject,
            format!("the certificate does not name {host} (fine for opportunistic TLS, fails MTA-STS and DANE-less verification)"),
        );
    }
}
