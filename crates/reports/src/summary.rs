//! `mx6 report summary DOMAIN`: what the reports received about a domain
//! say, per reporter and per source network, with IPv6 sources grouped by
//! /64 and /48 and IPv4 sources by /24, so an operator sees which of their
//! own networks fail DMARC alignment (DMARC reports: the sending sources)
//! or TLS (TLS-RPT reports: the receiving addresses of failed sessions).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::received::Received;

/// Passes and failures of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
}

impl Tally {
    fn add(&mut self, pass: bool, n: u64) {
        if pass {
            self.pass += n
        } else {
            self.fail += n
        }
    }
}

/// One kind of report (DMARC or TLS-RPT) summarised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindSummary {
    pub reports: usize,
    pub total: Tally,
    pub by_reporter: BTreeMap<String, Tally>,
    /// Keyed by network (`2001:db8:1:2::/64`, `2001:db8:1::/48`, `192.0.2.0/24`).
    pub by_network: BTreeMap<String, Tally>,
    /// Failures by what failed (`dkim,spf`, `certificate-expired`, …).
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub domain: String,
    pub days: u64,
    pub dmarc: KindSummary,
    pub tls: KindSummary,
}

/// The networks an address is counted in.
pub fn networks(ip: IpAddr) -> Vec<String> {
    let net = |len| IpNet::new(ip, len).map(|n| n.trunc().to_string()).unwrap_or_default();
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            vec![IpNet::new(IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)), 24)
                .map(|n| n.trunc().to_string())
                .unwrap_or_default()]
        }
        IpAddr::V6(_) => vec![net(64), net(48)],
        IpAddr::V4(_) => vec![net(24)],
    }
}

pub fn summarise(domain: &str, days: u64, reports: &[Received]) -> Summary {
    let mut s = Summary { domain: domain.to_string(), days, dmarc: KindSummary::default(), tls: KindSummary::default() };
    for r in reports {
        let k = if r.kind == "tls" { &mut s.tls } else { &mut s.dmarc };
        k.reports += 1;
        for row in &r.rows {
            k.total.add(row.pass, row.count);
            k.by_reporter.entry(r.reporter.clone()).or_default().add(row.pass, row.count);
            if let Some(ip) = row.ip {
                for n in networks(ip) {
                    k.by_network.entry(n).or_default().add(row.pass, row.count);
                }
            }
            if !row.pass {
                *k.failures.entry(if row.what.is_empty() { "unspecified".into() } else { row.what.clone() }).or_default() += row.count;
            }
        }
    }
    s
}

fn section(out: &mut String, title: &str, unit: &str, k: &KindSummary) {
    use std::fmt::Write;
    let _ = writeln!(out, "{title}: {} reports, {} {unit} passed, {} failed", k.reports, k.total.pass, k.total.fail);
    if k.reports == 0 {
        return;
    }
    let _ = writeln!(out, "  by reporter:");
    for (name, t) in &k.by_reporter {
        let _ = writeln!(out, "    {name:<40} pass {:>8}  fail {:>8}", t.pass, t.fail);
    }
    if !k.by_network.is_empty() {
        let _ = writeln!(out, "  by network:");
        for (net, t) in &k.by_network {
            let _ = writeln!(out, "    {net:<40} pass {:>8}  fail {:>8}", t.pass, t.fail);
        }
    }
    if !k.failures.is_empty() {
        let _ = writeln!(out, "  failures:");
        for (what, n) in &k.failures {
            let _ = writeln!(out, "    {what:<40} {n:>8}");
        }
    }
}

/// The summary as `mx6 report summary` prints it.
pub fn text(s: &Summary) -> String {
    let mut out = format!("Reports about {} over the last {} days\n", s.domain, s.days);
    section(&mut out, "DMARC", "messages", &s.dmarc);
    section(&mut out, "TLS-RPT", "sessions", &s.tls);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::received::Row;

    #[test]
    fn sources_are_grouped_by_network() {
        assert_eq!(networks("2001:db8:1:2::25".parse().unwrap()), vec!["2001:db8:1:2::/64", "2001:db8:1::/48"]);
        assert_eq!(networks("192.0.2.77".parse().unwrap()), vec!["192.0.2.0/24"]);
        let r = |reporter: &str, ip: &str, pass: bool, n: u64| Received {
            kind: "dmarc".into(),
            reporter: reporter.into(),
            report_id: "1".into(),
            domain: "example.org".into(),
            begin: 0,
            end: 1,
            rows: vec![Row { ip: Some(ip.parse().unwrap()), count: n, pass, what: if pass { String::new() } else { "dkim,spf".into() } }],
        };
        let s = summarise(
            "example.org",
            7,
            &[
                r("google.com", "2001:db8:1:2::25", true, 10),
                r("google.com", "2001:db8:1:3::25", false, 2),
                r("yahoo", "192.0.2.9", false, 1),
            ],
        );
        assert_eq!(s.dmarc.reports, 3);
        assert_eq!(s.dmarc.total, Tally { pass: 10, fail: 3 });
        assert_eq!(s.dmarc.by_network["2001:db8:1::/48"], Tally { pass: 10, fail: 2 });
        assert_eq!(s.dmarc.by_network["2001:db8:1:3::/64"], Tally { pass: 0, fail: 2 });
        assert_eq!(s.dmarc.by_reporter["yahoo"], Tally { pass: 0, fail: 1 });
        assert_eq!(s.dmarc.failures["dkim,spf"], 3);
        let t = text(&s);
        assert!(t.contains("DMARC: 3 reports, 10 messages passed, 3 failed"), "{t}");
    }
}
