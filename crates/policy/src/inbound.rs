//! Inbound authentication policy: pure decisions over facts gathered
//! elsewhere (reverse DNS, SPF, DKIM, DMARC, DNSBL), one function per stage.
//!
//! - MAIL: reverse DNS (RFC 8601 §3 `iprev`; RFC 7372 x.7.25), DNSBL score
//!   (RFC 5782), SPF `fail` of the MAIL FROM identity, or of the HELO identity
//!   for the null sender (RFC 7208 §2.4, §8.4; RFC 7372 x.7.23).
//! - end of data: DMARC (RFC 7489 §6.6: `p`, `sp`, `pct`, applied by the
//!   gatherer) and "SPF or DKIM must pass" (RFC 7372 x.7.26).
//!
//! Defaults are strict for IPv6 and permissive for IPv4 (`[policy.ipv6]`,
//! `[policy.ipv4]`). Clients in `mynetworks`, allowlisted networks or sender
//! domains and authenticated sessions skip these checks. A lookup that failed
//! (`TempError`) never refuses: it defers, and only when the check it belongs
//! to is enforced and could have refused (Postfix `defer_if_reject`).
//!
//! Reason tokens: `no_ptr`, `fcrdns_mismatch`, `spf_fail`, `auth_required`,
//! `dmarc_reject`, `dmarc_quarantine`, `dnsbl`, `dns_temperror`.

use std::net::IpAddr;

use ipnet::IpNet;
use mx6_smtp::reply::{self, Reply};

use crate::dnsbl;
use crate::prefix::{contains_any, Family};
use crate::recipient::normalize_domain;

/// An RFC 8601 result value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    #[default]
    None,
    TempError,
    PermError,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }
}

/// Per-family requirements (`[policy.ipv6]`, `[policy.ipv4]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyRules {
    pub require_ptr: bool,
    pub require_fcrdns: bool,
    pub require_spf_or_dkim: bool,
}

impl FamilyRules {
    pub const STRICT: FamilyRules = FamilyRules { require_ptr: true, require_fcrdns: true, require_spf_or_dkim: true };
    pub const PERMISSIVE: FamilyRules = FamilyRules { require_ptr: false, require_fcrdns: false, require_spf_or_dkim: false };
}

/// The whole inbound policy.
#[derive(Debug, Clone)]
pub struct InboundPolicy {
    pub ipv6: FamilyRules,
    pub ipv4: FamilyRules,
    /// Refuse SPF `fail` (RFC 7208 §8.4 permits it).
    pub reject_spf_fail: bool,
    /// Apply the DMARC policy the domain publishes.
    pub enforce_dmarc: bool,
    /// DNSBL score at or above which the client is refused.
    pub dnsbl_threshold: i32,
    /// Clients in these networks skip the checks.
    pub allow_networks: Vec<IpNet>,
    /// Senders in these domains (or their subdomains) skip the checks.
    pub allow_sender_domains: Vec<String>,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        InboundPolicy {
            ipv6: FamilyRules::STRICT,
            ipv4: FamilyRules::PERMISSIVE,
            reject_spf_fail: true,
            enforce_dmarc: true,
            dnsbl_threshold: 1,
            allow_networks: Vec::new(),
            allow_sender_domains: Vec::new(),
        }
    }
}

/// What is known about the client once it connected.
#[derive(Debug, Clone, Default)]
pub struct ClientFacts {
    /// RFC 8601 `iprev`: pass (FCrDNS), fail (PTR names do not resolve back),
    /// permerror (no PTR), temperror (lookup failed).
    pub iprev: AuthResult,
    /// The PTR names looked at.
    pub ptr_names: Vec<String>,
    /// The forward-confirmed name, when `iprev` passed.
    pub confirmed_name: Option<String>,
    pub dnsbl: dnsbl::Score,
}

/// SPF results of one transaction.
#[derive(Debug, Clone, Default)]
pub struct SpfFacts {
    /// The identity that counts: MAIL FROM, or HELO for the null sender.
    pub result: AuthResult,
    /// The domain checked for `result`.
    pub domain: String,
    pub helo: AuthResult,
}

/// DKIM and DMARC results of one message.
#[derive(Debug, Clone, Default)]
pub struct MessageFacts {
    /// Pass if any signature passed; otherwise TempError if any lookup failed;
    /// otherwise Fail if a signature failed; None without signatures.
    pub dkim: AuthResult,
    pub dmarc: AuthResult,
    /// The RFC5322.From domain DMARC looked at.
    pub dmarc_domain: String,
    /// The policy to apply after `sp` and `pct` (RFC 7489 §6.6.4).
    pub dmarc_policy: DmarcPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcPolicy {
    #[default]
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
    /// RFC 7489 §6.6.4: a message not selected by `pct` gets the next weaker policy.
    pub fn apply_pct(self, pct: u8, sample: u8) -> DmarcPolicy {
        if sample < pct.min(100) {
            return self;
        }
        match self {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        }
    }
}

/// Who the client is, for exemptions.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub authenticated: bool,
    pub mynetworks: bool,
    /// Envelope sender domain, `None` for the null sender.
    pub sender_domain: Option<&'a str>,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Deliver, but marked and into the Junk folder.
    Quarantine {
        reason: &'static str,
    },
    Refuse {
        reason: &'static str,
        reply: Reply,
    },
}

impl InboundPolicy {
    fn rules(&self, ip: IpAddr) -> FamilyRules {
        match Family::of(ip) {
            Family::Ipv6 => self.ipv6,
            Family::Ipv4 => self.ipv4,
        }
    }

    /// Whether the client skips the checks without looking at the sender.
    pub fn exempt_client(&self, ip: IpAddr, authenticated: bool, mynetworks: bool) -> bool {
        authenticated || mynetworks || contains_any(&self.allow_networks, ip)
    }

    /// Whether the client skips the checks.
    pub fn exempt(&self, c: &Client<'_>) -> bool {
        self.exempt_client(c.ip, c.authenticated, c.mynetworks)
            || c.sender_domain.is_some_and(|d| {
                let d = normalize_domain(d);
                self.allow_sender_domains.iter().any(|a| d == *a || d.ends_with(&format!(".{a}")))
            })
    }

    /// Whether the connect-time lookups are worth doing for this client.
    pub fn wants_client_facts(&self, ip: IpAddr) -> bool {
        !contains_any(&self.allow_networks, ip)
    }

    /// At MAIL FROM: reverse DNS, DNSBL, SPF fail.
    pub fn decide_mail(&self, c: &Client<'_>, client: &ClientFacts, spf: &SpfFacts) -> Verdict {
        if self.exempt(c) {
            return Verdict::Pass;
        }
        let ip = c.ip.to_string();
        let rules = self.rules(c.ip);
        let d = &client.dnsbl;
        if d.score >= self.dnsbl_threshold {
            return Verdict::Refuse { reason: "dnsbl", reply: reply::dnsbl(&ip, &d.listed.join(", ")) };
        }
        if !d.allowlisted && d.score + d.unknown_weight >= self.dnsbl_threshold {
            return Verdict::Refuse { reason: "dns_temperror", reply: reply::dnsbl_temp(&ip) };
        }
        if d.allowlisted {
            return Verdict::Pass;
        }
        match client.iprev {
            AuthResult::TempError if rules.require_ptr || rules.require_fcrdns => {
                return Verdict::Refuse { reason: "dns_temperror", reply: reply::reverse_dns_temp(&ip) };
            }
            AuthResult::PermError | AuthResult::None if rules.require_ptr || rules.require_fcrdns => {
                return Verdict::Refuse { reason: "no_ptr", reply: reply::no_ptr(&ip) };
            }
            AuthResult::Fail if rules.require_fcrdns => {
                return Verdict::Refuse { reason: "fcrdns_mismatch", reply: reply::fcrdns_mismatch(&ip) };
            }
            _ => {}
        }
        if self.reject_spf_fail && spf.result == AuthResult::Fail {
            return Verdict::Refuse { reason: "spf_fail", reply: reply::spf_fail(&spf.domain, &ip) };
        }
        Verdict::Pass
    }

    /// At end of data: DMARC, then "SPF or DKIM must pass".
    pub fn decide_data(&self, c: &Client<'_>, client: &ClientFacts, spf: &SpfFacts, m: &MessageFacts) -> Verdict {
        if self.exempt(c) || client.dnsbl.allowlisted {
            return Verdict::Pass;
        }
        let ip = c.ip.to_string();
        if self.enforce_dmarc {
            match (m.dmarc, m.dmarc_policy) {
                (AuthResult::Fail, DmarcPolicy::Reject) => {
                    return Verdict::Refuse { reason: "dmarc_reject", reply: reply::dmarc_reject(&m.dmarc_domain) };
                }
                (AuthResult::TempError, DmarcPolicy::Reject | DmarcPolicy::Quarantine) => {
                    return Verdict::Refuse { reason: "dns_temperror", reply: reply::dmarc_temp(&m.dmarc_domain) };
                }
                _ => {}
            }
        }
        if self.rules(c.ip).require_spf_or_dkim && spf.result != AuthResult::Pass && m.dkim != AuthResult::Pass {
            if spf.result == AuthResult::TempError || m.dkim == AuthResult::TempError {
                return Verdict::Refuse { reason: "dns_temperror", reply: reply::auth_temp() };
            }
            return Verdict::Refuse { reason: "auth_required", reply: reply::spf_or_dkim_required(&ip) };
        }
        if self.enforce_dmarc && m.dmarc == AuthResult::Fail && m.dmarc_policy == DmarcPolicy::Quarantine {
            return Verdict::Quarantine { reason: "dmarc_quarantine" };
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client<'static> {
        Client { ip: ip.parse().unwrap(), authenticated: false, mynetworks: false, sender_domain: Some("example.com") }
    }

    fn facts(iprev: AuthResult) -> ClientFacts {
        ClientFacts { iprev, ..Default::default() }
    }

    fn reason(v: Verdict) -> &'static str {
        match v {
            Verdict::Pass => "pass",
            Verdict::Quarantine { reason } => reason,
            Verdict::Refuse { reason, .. } => reason,
        }
    }

    #[test]
    fn ipv6_needs_fcrdns_ipv4_does_not() {
        let p = InboundPolicy::default();
        let spf = SpfFacts::default();
        assert_eq!(reason(p.decide_mail(&client("2001:db8::1"), &facts(AuthResult::PermError), &spf)), "no_ptr");
        assert_eq!(reason(p.decide_mail(&client("2001:db8::1"), &facts(AuthResult::Fail), &spf)), "fcrdns_mismatch");
        assert_eq!(reason(p.decide_mail(&client("2001:db8::1"), &facts(AuthResult::Pass), &spf)), "pass");
        assert_eq!(reason(p.decide_mail(&client("192.0.2.1"), &facts(AuthResult::PermError), &spf)), "pass");
        assert_eq!(reason(p.decide_mail(&client("::ffff:192.0.2.1"), &facts(AuthResult::Fail), &spf)), "pass");
    }

    #[test]
    fn lookup_failures_defer_never_refuse() {
        let p = InboundPolicy::default();
        let v = p.decide_mail(&client("2001:db8::1"), &facts(AuthResult::TempError), &SpfFacts::default());
        let Verdict::Refuse { reason, reply } = v else { panic!() };
        assert_eq!((reason, reply.code), ("dns_temperror", 451));
        // IPv4 does not require rDNS: a failed lookup changes nothing.
        assert_eq!(reason_of(p.decide_mail(&client("192.0.2.1"), &facts(AuthResult::TempError), &SpfFacts::default())), "pass");
        let spf = SpfFacts { result: AuthResult::TempError, ..Default::default() };
        let v = p.decide_data(&client("2001:db8::1"), &facts(AuthResult::Pass), &spf, &MessageFacts::default());
        let Verdict::Refuse { reply, .. } = v else { panic!() };
        assert_eq!(reply.code, 451);
    }

    fn reason_of(v: Verdict) -> &'static str {
        reason(v)
    }

    #[test]
    fn exemptions() {
        let mut p = InboundPolicy { allow_sender_domains: vec!["partner.example".into()], ..Default::default() };
        p.allow_networks.push("2001:db8:ff::/48".parse().unwrap());
        let f = facts(AuthResult::PermError);
        let spf = SpfFacts::default();
        let mut c = client("2001:db8:ff::1");
        assert_eq!(reason(p.decide_mail(&c, &f, &spf)), "pass");
        c.ip = "2001:db8:1::1".parse().unwrap();
        assert_eq!(reason(p.decide_mail(&c, &f, &spf)), "no_ptr");
        c.sender_domain = Some("mail.Partner.example");
        assert_eq!(reason(p.decide_mail(&c, &f, &spf)), "pass");
        c.sender_domain = Some("notpartner.example");
        assert_eq!(reason(p.decide_mail(&c, &f, &spf)), "no_ptr");
        c.authenticated = true;
        assert_eq!(reason(p.decide_mail(&c, &f, &spf)), "pass");
    }

    #[test]
    fn spf_fail_and_dnsbl() {
        let p = InboundPolicy::default();
        let spf = SpfFacts { result: AuthResult::Fail, domain: "example.com".into(), helo: AuthResult::None };
        let v = p.decide_mail(&client("192.0.2.1"), &facts(AuthResult::Pass), &spf);
        let Verdict::Refuse { reason, reply } = v else { panic!() };
        assert_eq!((reason, &*reply.status), ("spf_fail", "5.7.23"));
        let mut f = facts(AuthResult::Pass);
        f.dnsbl = dnsbl::Score { score: 1, listed: vec!["bl.test".into()], ..Default::default() };
        let Verdict::Refuse { reason, reply } = p.decide_mail(&client("192.0.2.1"), &f, &SpfFacts::default()) else { panic!() };
        assert_eq!((reason, reply.code), ("dnsbl", 554));
        f.dnsbl = dnsbl::Score { unknown_weight: 1, ..Default::default() };
        let Verdict::Refuse { reason, reply } = p.decide_mail(&client("192.0.2.1"), &f, &SpfFacts::default()) else { panic!() };
        assert_eq!((reason, reply.code), ("dns_temperror", 451));
    }

    #[test]
    fn dmarc_and_spf_or_dkim() {
        let p = InboundPolicy::default();
        let f = facts(AuthResult::Pass);
        let spf_pass = SpfFacts { result: AuthResult::Pass, ..Default::default() };
        let m = |dmarc, pol| MessageFacts { dkim: AuthResult::None, dmarc, dmarc_domain: "example.com".into(), dmarc_policy: pol };
        let c = client("2001:db8::1");
        assert_eq!(reason(p.decide_data(&c, &f, &spf_pass, &m(AuthResult::Fail, DmarcPolicy::Reject))), "dmarc_reject");
        assert_eq!(reason(p.decide_data(&c, &f, &spf_pass, &m(AuthResult::Fail, DmarcPolicy::Quarantine))), "dmarc_quarantine");
        assert_eq!(reason(p.decide_data(&c, &f, &spf_pass, &m(AuthResult::Pass, DmarcPolicy::Reject))), "pass");
        let none = SpfFacts::default();
        assert_eq!(reason(p.decide_data(&c, &f, &none, &m(AuthResult::None, DmarcPolicy::None))), "auth_required");
        assert_eq!(reason(p.decide_data(&client("192.0.2.1"), &f, &none, &m(AuthResult::None, DmarcPolicy::None))), "pass");
    }

    #[test]
    fn pct_downgrades_unsampled_messages() {
        assert_eq!(DmarcPolicy::Reject.apply_pct(100, 99), DmarcPolicy::Reject);
        assert_eq!(DmarcPolicy::Reject.apply_pct(20, 50), DmarcPolicy::Quarantine);
        assert_eq!(DmarcPolicy::Quarantine.apply_pct(0, 0), DmarcPolicy::None);
    }
}
