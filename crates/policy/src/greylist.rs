//! Greylisting (as postgrey, after Harris' 2003 paper): a triplet of client,
//! envelope sender and recipient is refused with 451 4.7.1 on first sight and
//! passes when retried after `delay` and within `retry_window`; a passed
//! triplet stays passed for `lifetime` after its last use.
//!
//! The client part is the sender's identity when there is one, so a sender
//! that retries from another address or over the other family still passes:
//! the SPF-authorised MAIL FROM domain, else the registered domain (public
//! suffix list) of the forward-confirmed PTR name, else the client's prefix
//! (/64 and /24 by default). The sender is normalised so that per-message tags
//! (SRS, BATV, VERP, numbers) do not make every retry a new triplet.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::inbound::{Client, InboundPolicy};
use crate::reputation::Standing;

/// Whether greylisting looks at this client at all: authenticated clients
/// and `mynetworks` send their own mail and are never greylisted.
pub fn applies(c: &Client<'_>) -> bool {
    !c.authenticated && !c.mynetworks
}

/// Why a client that greylisting applies to is let through without a
/// triplet, if it is: the inbound allowlists (`allowlist`), a DNS allowlist
/// hit (`dnswl`) or a good prefix reputation (`reputation`). The one rule for
/// `mx6 serve` and `mx6 policyd`.
pub fn exemption(policy: &InboundPolicy, c: &Client<'_>, dnswl: bool, standing: Standing) -> Option<&'static str> {
    if policy.exempt(c) {
        Some("allowlist")
    } else if dnswl {
        Some("dnswl")
    } else if standing == Standing::Good {
        Some("reputation")
    } else {
        None
    }
}

/// Timings in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub delay: u64,
    pub retry_window: u64,
    pub lifetime: u64,
}

/// A triplet's state: when it was first seen (or restarted) and last used,
/// and whether it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub first: u64,
    pub last: u64,
    pub passed: bool,
}

/// What one attempt got. The strings are the `result` label of
/// `mx6_greylist_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First sight (or a retry after the window or lifetime): refused.
    New { retry_in: u64 },
    /// Retried before `delay`: refused again.
    Early { retry_in: u64 },
    /// Passes; `first` when this attempt made the triplet pass.
    Passed { first: bool },
    /// Not greylisted: the client is allowlisted (auto-allowlist, reputation).
    Allowlisted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::New { .. } => "new",
            Outcome::Early { .. } => "early",
            Outcome::Passed { .. } => "passed",
            Outcome::Allowlisted => "allowlisted",
        }
    }
    pub fn passes(self) -> bool {
        matches!(self, Outcome::Passed { .. } | Outcome::Allowlisted)
    }
}

/// One attempt at `now` against the stored entry; returns the outcome and the
/// entry to store (kept for `retry_window` while waiting, `lifetime` once passed).
pub fn step(entry: Option<Entry>, now: u64, t: &Times) -> (Outcome, Entry) {
    let fresh = Entry { first: now, last: now, passed: false };
    match entry {
        Some(e) if e.passed && now.saturating_sub(e.last) <= t.lifetime => (Outcome::Passed { first: false }, Entry { last: now, ..e }),
        Some(e) if !e.passed && now.saturating_sub(e.first) <= t.retry_window => {
            let waited = now.saturating_sub(e.first);
            if waited < t.delay {
                (Outcome::Early { retry_in: t.delay - waited }, Entry { last: now, ..e })
            } else {
                (Outcome::Passed { first: true }, Entry { first: e.first, last: now, passed: true })
            }
        }
        _ => (Outcome::New { retry_in: t.delay }, fresh),
    }
}

/// How long to keep an entry after this attempt.
pub fn ttl(e: &Entry, t: &Times) -> u64 {
    if e.passed {
        t.lifetime
    } else {
        t.retry_window
    }
}

/// The envelope sender as greylisting compares it: lowercase, SRS rewriting
/// undone, BATV (`prvs=TAG=`) and VERP/sub-address (`+…`) tags removed,
/// digit runs in the local part replaced by `#` (as postgrey does).
pub fn normalize_sender(sender: &str) -> String {
    let s = sender.trim().to_ascii_lowercase();
    let Some((local, domain)) = s.rsplit_once('@') else { return s };
    let (mut local, mut domain) = (local.to_string(), domain.to_string());
    // SRS1=HASH=forwarder==HASH=TT=domain=local: the part after "==" is SRS0-like.
    if let Some(rest) = local.strip_prefix("srs1=").and_then(|r| r.split_once("==")).map(|(_, r)| r.to_string()) {
        local = format!("srs0={rest}");
    }
    if let Some(rest) = local.strip_prefix("srs0=") {
        // HASH=TT=domain=local (local may itself contain '=').
        let parts: Vec<&str> = rest.splitn(4, '=').collect();
        if parts.len() == 4 {
            domain = parts[2].to_string();
            local = parts[3].to_string();
        }
    }
    // BATV: prvs=TAG=local (RFC draft-levine-smtp-batv) and the reversed form local=prvs=TAG.
    for tag in ["prvs=", "msprvs1=", "btv1="] {
        if let Some(rest) = local.strip_prefix(tag) {
            if let Some((_, l)) = rest.split_once('=') {
                local = l.to_string();
            }
        }
    }
    if let Some(p) = local.find("=prvs=") {
        local.truncate(p);
    }
    if let Some(p) = local.find('+') {
        local.truncate(p);
    }
    let mut out = String::with_capacity(local.len() + domain.len() + 1);
    let mut in_digits = false;
    for c in local.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out.push('@');
    out.push_str(&domain);
    out
}

/// The client part of a triplet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// MAIL FROM domain whose SPF passed for this client.
    Spf(String),
    /// Registered domain of the forward-confirmed PTR name.
    Ptr(String),
    /// The client's prefix.
    Prefix(IpNet),
}

impl Identity {
    /// The identity of a client: SPF pass, else FCrDNS, else its prefix.
    pub fn of(ip: IpAddr, spf_pass_domain: Option<&str>, confirmed_name: Option<&str>, v6_len: u8, v4_len: u8) -> Identity {
        if let Some(d) = spf_pass_domain.filter(|d| !d.is_empty()) {
            return Identity::Spf(d.trim_end_matches('.').to_ascii_lowercase());
        }
        if let Some(d) = confirmed_name.and_then(registered_domain) {
            return Identity::Ptr(d);
        }
        Identity::Prefix(crate::prefix::client_prefix(ip, v6_len, v4_len))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Spf(d) => write!(f, "spf:{d}"),
            Identity::Ptr(d) => write!(f, "ptr:{d}"),
            Identity::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// The registered domain (public suffix plus one label) of a host name:
/// `mail-out.example.co.uk` → `example.co.uk`. `None` for a bare suffix.
pub fn registered_domain(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let d = psl::domain(name.as_bytes())?;
    // Only a suffix the list knows; an unknown TLD gives no identity.
    if !d.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(d.as_bytes()).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemptions() {
        let policy = InboundPolicy { allow_sender_domains: vec!["partner.example".into()], ..Default::default() };
        let c = |d: Option<&'static str>| Client {
            ip: "2001:db8::1".parse().unwrap(),
            authenticated: false,
            mynetworks: false,
            sender_domain: d,
        };
        assert_eq!(exemption(&policy, &c(Some("a.partner.example")), false, Standing::Neutral), Some("allowlist"));
        assert_eq!(exemption(&policy, &c(Some("x.example")), true, Standing::Bad), Some("dnswl"));
        assert_eq!(exemption(&policy, &c(Some("x.example")), false, Standing::Good), Some("reputation"));
        assert_eq!(exemption(&policy, &c(None), false, Standing::Neutral), None);
        assert!(!applies(&Client { authenticated: true, ..c(None) }) && applies(&c(None)));
    }

    const T: Times = Times { delay: 300, retry_window: 3600, lifetime: 86400 };

    #[test]
    fn lifecycle() {
        let (o, e) = step(None, 1000, &T);
        assert_eq!(o, Outcome::New { retry_in: 300 });
        let (o, e) = step(Some(e), 1100, &T);
        assert_eq!(o, Outcome::Early { retry_in: 200 });
        assert_eq!(e.first, 1000, "an early retry does not restart the delay");
        let (o, e) = step(Some(e), 1300, &T);
        assert_eq!(o, Outcome::Passed { first: true });
        let (o, e) = step(Some(e), 1300 + 80000, &T);
        assert_eq!(o, Outcome::Passed { first: false });
        // Unused for longer than the lifetime: starts over.
        let (o, _) = step(Some(e), 1300 + 80000 + 86401, &T);
        assert!(matches!(o, Outcome::New { .. }));
        // A retry after the window starts over.
        let (_, e) = step(None, 0, &T);
        let (o, e) = step(Some(e), 3601, &T);
        assert!(matches!(o, Outcome::New { .. }));
        assert_eq!(e.first, 3601);
        assert_eq!(ttl(&e, &T), 3600);
    }

    #[test]
    fn sender_normalisation() {
        assert_eq!(normalize_sender("User@Example.ORG"), "user@example.org");
        assert_eq!(normalize_sender("SRS0=HHH=TT=orig.example=alice@fwd.example"), "alice@orig.example");
        assert_eq!(normalize_sender("SRS1=HHH=fwd1.example==HHH=TT=orig.example=alice@fwd2.example"), "alice@orig.example");
        assert_eq!(normalize_sender("prvs=1234abcd56=bob@example.com"), "bob@example.com");
        assert_eq!(normalize_sender("bob=prvs=1234abcd56@example.com"), "bob@example.com");
        assert_eq!(normalize_sender("list-bounces+carol=example.net@lists.example"), "list-bounces@lists.example");
        assert_eq!(normalize_sender("bounce-12345-678@news.example"), "bounce-#-#@news.example");
        assert_eq!(normalize_sender(""), "");
    }

    #[test]
    fn identities() {
        let ip: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        assert_eq!(Identity::of(ip, Some("Example.ORG"), Some("mx.example.net"), 64, 24).to_string(), "spf:example.org");
        assert_eq!(Identity::of(ip, None, Some("mx1.out.example.co.uk."), 64, 24).to_string(), "ptr:example.co.uk");
        assert_eq!(Identity::of(ip, None, None, 64, 24).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Identity::of("192.0.2.9".parse().unwrap(), None, Some("co.uk"), 64, 24).to_string(), "192.0.2.0/24");
    }
}
