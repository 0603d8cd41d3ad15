//! Recipient routing and relay control (RFC 5321 §3.6, §4.1.1.3): is the
//! recipient ours (and does the mailbox exist), may it be relayed, or is it
//! refused — decided once, here.
//!
//! Reason tokens: `unknown_user`, `relay_denied`.

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
    /// Local domains, lower-cased, no trailing dot.
    pub local_domains: Vec<String>,
    pub relay_domains: Vec<String>,
    pub mynetworks: Vec<IpNet>,
    pub users: LocalUsers,
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

impl Routing {
    pub fn is_local_domain(&self, d: &Domain) -> bool {
        matches!(d, Domain::Name(n) if self.local_domains.iter().any(|l| l == n))
    }
}

/// Decide one recipient for a client at `client`.
pub fn decide_recipient(r: &Routing, client: IpAddr, to: &Mailbox) -> RecipientVerdict {
    if r.is_local_domain(&to.domain) {
        let user = to.local.to_lowercase();
        let domain = to.domain.to_string();
        let exists = match &r.users {
            LocalUsers::CatchAll => true,
            LocalUsers::Listed(set) => user == "postmaster" || set.contains(&format!("{user}@{domain}")),
        };
        return if exists {
            RecipientVerdict::Accept(Route::Local { user, domain })
        } else {
            RecipientVerdict::Reject { reason: "unknown_user", reply: reply::unknown_user() }
        };
    }
    let relay_domain = matches!(&to.domain, Domain::Name(n) if r.relay_domains.iter().any(|d| d == n));
    if relay_domain || contains_any(&r.mynetworks, client) {
        RecipientVerdict::Accept(Route::Relay)
    } else {
        RecipientVerdict::Reject { reason: "relay_denied", reply: reply::relay_denied() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx6_smtp::address::parse_mailbox;

    fn routing(users: LocalUsers) -> Routing {
        Routing {
            local_domains: vec!["example.org".into()],
            relay_domains: vec!["backup.test".into()],
            mynetworks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            users,
        }
    }

    fn rcpt(s: &str) -> Mailbox {
        parse_mailbox(s, true).unwrap().0
    }

    #[test]
    fn local_catch_all_and_listed() {
        let ip: IpAddr = "2001:db8::9".parse().unwrap();
        let r = routing(LocalUsers::CatchAll);
        assert_eq!(
            decide_recipient(&r, ip, &rcpt("Anyone@Example.ORG.")),
            RecipientVerdict::Accept(Route::Local { user: "anyone".into(), domain: "example.org".into() })
        );
        let r = routing(LocalUsers::Listed(["alice@example.org".to_string()].into()));
        assert!(matches!(decide_recipient(&r, ip, &rcpt("alice@example.org")), RecipientVerdict::Accept(_)));
        assert!(matches!(decide_recipient(&r, ip, &rcpt("postmaster@example.org")), RecipientVerdict::Accept(_)));
        assert!(matches!(decide_recipient(&r, ip, &rcpt("bob@example.org")), RecipientVerdict::Reject { reason: "unknown_user", .. }));
    }

    #[test]
    fn relay_only_for_mynetworks_and_relay_domains() {
        let r = routing(LocalUsers::CatchAll);
        let stranger: IpAddr = "2001:db8::9".parse().unwrap();
        assert!(matches!(decide_recipient(&r, stranger, &rcpt("x@other.test")), RecipientVerdict::Reject { reason: "relay_denied", .. }));
        assert!(matches!(decide_recipient(&r, stranger, &rcpt("x@[192.0.2.1]")), RecipientVerdict::Reject { reason: "relay_denied", .. }));
        assert_eq!(decide_recipient(&r, stranger, &rcpt("x@backup.test")), RecipientVerdict::Accept(Route::Relay));
        assert_eq!(decide_recipient(&r, "::1".parse().unwrap(), &rcpt("x@other.test")), RecipientVerdict::Accept(Route::Relay));
        assert_eq!(
            decide_recipient(&r, "::ffff:127.0.0.1".parse().unwrap(), &rcpt("x@other.test")),
            RecipientVerdict::Accept(Route::Relay)
        );
    }
}
