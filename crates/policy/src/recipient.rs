//! Recipient routing and relay control (RFC 5321 §3.6, §4.1.1.3): is the
//! recipient ours (and does the mailbox exist), may it be relayed, or is it
//! refused — decided once, here.
//!
//! Relaying is allowed for authenticated sessions, clients in `mynetworks`
//! (IPv4-mapped IPv6 counts as IPv4) and domains in `relay.domains`; nothing else.
//!
//! Defends against open-relay tricks: the percent hack (`u%other@ours`), bang
//! paths (`other!u@ours`) and quoted local parts holding `@`, `%` or `!` are
//! refused, because their final destination can not be decided; source routes
//! are ignored (RFC 5321 §4.1.1.3) so the final mailbox decides; address literals,
//! subdomains and `u@other@ours` are never local. Domains compare in their
//! A-label (punycode) form, so the IDN and punycode spellings of a local domain
//! are the same domain (RFC 5890).
//!
//! Reason tokens: `unknown_user`, `relay_denied`, `unroutable_address`.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use mx6_smtp::address::{Domain, Mailbox};
use mx6_smtp::reply::{self, Reply};

use crate::prefix::contains_any;

/// Which local mailboxes exist.
#[derive(Debug, Clone)]
pub enum LocalUsers {
    /// No users file: every local part of a local domain is accepted.
    CatchAll,
    /// Full addresses, lower-cased.
    Listed(HashSet<String>),
}

#[derive(Debug, Clone)]
pub struct Routing {
    /// Local domains in their comparable form ([`normalize_domain`]).
    pub local_domains: Vec<String>,
    pub relay_domains: Vec<String>,
    pub mynetworks: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver to the local mailbox `user@domain` (both lower-cased).
    Local { user: String, domain: String },
    /// Queue for onward delivery.
    Relay,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientVerdict {
    Accept(Route),
    Reject { reason: &'static str, reply: Reply },
}

/// The comparable form of a domain name: lower-case A-labels, no trailing dot.
pub fn normalize_domain(name: &str) -> String {
    let name = name.trim_end_matches('.');
    idna::domain_to_ascii(name).unwrap_or_else(|_| name.to_lowercase())
}

impl Routing {
    /// Build with every domain in its comparable form.
    pub fn new(local_domains: &[String], relay_domains: &[String], mynetworks: Vec<IpNet>) -> Routing {
        Routing {
            local_domains: local_domains.iter().map(|d| normalize_domain(d)).collect(),
            relay_domains: relay_domains.iter().map(|d| normalize_domain(d)).collect(),
            mynetworks,
        }
    }

    /// The local domain `d` is, in its comparable form.
    pub fn local_domain(&self, d: &Domain) -> Option<String> {
        match d {
            Domain::Name(n) => {
                let n = normalize_domain(n);
                self.local_domains.contains(&n).then_some(n)
            }
            Domain::Literal(_) => None,
        }
    }

    pub fn is_local_domain(&self, d: &Domain) -> bool {
        self.local_domain(d).is_some()
    }

    /// May this client relay (send to domains that are not ours)?
    pub fn may_relay(&self, client: IpAddr, authenticated: bool) -> bool {
        authenticated || contains_any(&self.mynetworks, client)
    }
}

/// Decide one recipient for a client at `client`.
pub fn decide_recipient(r: &Routing, users: &LocalUsers, client: IpAddr, authenticated: bool, to: &Mailbox) -> RecipientVerdict {
    if to.local.contains(['%', '!', '@']) {
        return if r.may_relay(client, authenticated) {
            RecipientVerdict::Reject { reason: "unroutable_address", reply: reply::unroutable_address() }
        } else {
            RecipientVerdict::Reject { reason: "relay_denied", reply: reply::relay_denied() }
        };
    }
    if let Some(domain) = r.local_domain(&to.domain) {
        let user = to.local.to_lowercase();
        let exists = match users {
            LocalUsers::CatchAll => true,
            LocalUsers::Listed(set) => user == "postmaster" || set.contains(&format!("{user}@{domain}")),
        };
        return if exists {
            RecipientVerdict::Accept(Route::Local { user, domain })
        } else {
            RecipientVerdict::Reject { reason: "unknown_user", reply: reply::unknown_user() }
        };
    }
    let relay_domain = matches!(&to.domain, Domain::Name(n) if r.relay_domains.contains(&normalize_domain(n)));
    if relay_domain || r.may_relay(client, authenticated) {
        RecipientVerdict::Accept(Route::Relay)
    } else {
        RecipientVerdict::Reject { reason: "relay_denied", reply: reply::relay_denied() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx6_smtp::address::parse_mailbox;

    fn routing(_users: LocalUsers) -> Routing {
        Routing::new(
            &["example.org".into(), "bücher.example".into()],
            &["backup.test".into()],
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        )
    }

    fn rcpt(s: &str) -> Mailbox {
        parse_mailbox(s, true).unwrap().0
    }

    #[test]
    fn local_catch_all_and_listed() {
        let ip: IpAddr = "2001:db8::9".parse().unwrap();
        let u = LocalUsers::CatchAll;
        let r = routing(LocalUsers::CatchAll);
        assert_eq!(
            decide_recipient(&r, &u, ip, false, &rcpt("Anyone@Example.ORG.")),
            RecipientVerdict::Accept(Route::Local { user: "anyone".into(), domain: "example.org".into() })
        );
        let u = LocalUsers::Listed(["alice@example.org".to_string()].into());
        let r = routing(u.clone());
        assert!(matches!(decide_recipient(&r, &u, ip, false, &rcpt("alice@example.org")), RecipientVerdict::Accept(_)));
        assert!(matches!(decide_recipient(&r, &u, ip, false, &rcpt("postmaster@example.org")), RecipientVerdict::Accept(_)));
        assert!(matches!(
            decide_recipient(&r, &u, ip, false, &rcpt("bob@example.org")),
            RecipientVerdict::Reject { reason: "unknown_user", .. }
        ));
    }

    #[test]
    fn relay_only_for_mynetworks_and_relay_domains() {
        let u = LocalUsers::CatchAll;
        let r = routing(LocalUsers::CatchAll);
        let stranger: IpAddr = "2001:db8::9".parse().unwrap();
        assert!(matches!(
            decide_recipient(&r, &u, stranger, false, &rcpt("x@other.test")),
            RecipientVerdict::Reject { reason: "relay_denied", .. }
        ));
        assert!(matches!(
            decide_recipient(&r, &u, stranger, false, &rcpt("x@[192.0.2.1]")),
            RecipientVerdict::Reject { reason: "relay_denied", .. }
        ));
        assert_eq!(decide_recipient(&r, &u, stranger, false, &rcpt("x@backup.test")), RecipientVerdict::Accept(Route::Relay));
        assert_eq!(decide_recipient(&r, &u, "::1".parse().unwrap(), false, &rcpt("x@other.test")), RecipientVerdict::Accept(Route::Relay));
        assert_eq!(
            decide_recipient(&r, &u, "::ffff:127.0.0.1".parse().unwrap(), false, &rcpt("x@other.test")),
            RecipientVerdict::Accept(Route::Relay)
        );
    }

    #[test]
    fn address_tricks_never_relay() {
        let u = LocalUsers::CatchAll;
        let r = routing(LocalUsers::CatchAll);
        let stranger: IpAddr = "2001:db8::9".parse().unwrap();
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        for client in [stranger, v4] {
            for trick in [
                "user%other.test@example.org",
                "other.test!user@example.org",
                "\"user@other.test\"@example.org",
                "\"user%other.test\"@example.org",
                "user@[192.0.2.1]",
                "user@[IPv6:2001:db8::1]",
                "user@sub.example.org",
                "user@other.test.",
                "user@example.org.other.test",
            ] {
                let (m, _) = parse_mailbox(trick, true).unwrap();
                assert!(
                    matches!(decide_recipient(&r, &u, client, false, &m), RecipientVerdict::Reject { reason: "relay_denied", .. }),
                    "{trick} from {client}"
                );
            }
        }
        // Spellings of a local domain stay local.
        for ok in ["User@EXAMPLE.org.", "u@xn--bcher-kva.example", "u@BÜCHER.example", "u@bücher.example"] {
            let (m, _) = parse_mailbox(ok, true).unwrap();
            assert!(matches!(decide_recipient(&r, &u, stranger, false, &m), RecipientVerdict::Accept(Route::Local { .. })), "{ok}");
        }
        // Authenticated users relay, but still can not use routing characters.
        let (m, _) = parse_mailbox("x@other.test", true).unwrap();
        assert_eq!(decide_recipient(&r, &u, stranger, true, &m), RecipientVerdict::Accept(Route::Relay));
        let (m, _) = parse_mailbox("user%other.test@example.org", true).unwrap();
        assert!(matches!(decide_recipient(&r, &u, stranger, true, &m), RecipientVerdict::Reject { reason: "unroutable_address", .. }));
    }
}
