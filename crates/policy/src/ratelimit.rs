//! Rate-limit rules and escalation, as pure data and decisions. Each rule
//! counts one kind of event on one prefix level (`ipv6/64`, `ipv6/48`,
//! `ipv4/32`, …) for one kind of client; the counting itself lives in the
//! state store.
//!
//! Escalation: when `children` distinct child prefixes (IPv6 /64, IPv4 /32)
//! inside one aggregate (IPv6 /48, IPv4 /24) hit any limit within `window`,
//! the aggregate is limited as one client for `duration`, so hopping across
//! /64s buys nothing, while a neighbour in another aggregate is untouched.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::prefix::{Family, Level};

/// What a rule counts, with the reply its hit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Concurrent connections (421 4.7.0 at connect).
    Connections,
    /// New connections per window (421 4.7.0 at connect).
    ConnectionRate,
    /// MAIL transactions per window (451 4.7.1 at MAIL).
    Messages,
    /// Accepted recipients per window (451 4.7.1 at RCPT).
    Recipients,
    /// Failed AUTH attempts per window (454 4.7.0 at AUTH).
    AuthFailures,
    /// New TLS sessions per window (454 4.7.0 at STARTTLS; close on implicit TLS).
    TlsSessions,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Connections, Kind::ConnectionRate, Kind::Messages, Kind::Recipients, Kind::AuthFailures, Kind::TlsSessions];

    /// The config value and the `limit` label of `mx6_ratelimit_hits_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connections => "connections",
            Kind::ConnectionRate => "connection_rate",
            Kind::Messages => "messages",
            Kind::Recipients => "recipients",
            Kind::AuthFailures => "auth_failures",
            Kind::TlsSessions => "tls_sessions",
        }
    }

    /// Counted on the session's connect (the client is not yet known to be
    /// authenticated there).
    pub fn at_connect(self) -> bool {
        matches!(self, Kind::Connections | Kind::ConnectionRate)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("`{s}` is not a rate-limit kind; use connections, connection_rate, messages, recipients, auth_failures or tls_sessions")
        })
    }
}

/// Which clients a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Unauthenticated clients outside mynetworks (the default).
    Strangers,
    /// Authenticated sessions (also from mynetworks); for connect-time
    /// kinds, clients of the submission listeners.
    Authenticated,
    /// Clients in relay.mynetworks (authenticated or not).
    Mynetworks,
    /// Everyone.
    All,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "strangers" => Ok(Scope::Strangers),
            "authenticated" => Ok(Scope::Authenticated),
            "mynetworks" => Ok(Scope::Mynetworks),
            "all" => Ok(Scope::All),
            _ => Err(format!("`{s}` is not a scope; use strangers, authenticated, mynetworks or all")),
        }
    }
}

/// What a client is, for choosing its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub mynetworks: bool,
    /// Authenticated, or (before AUTH) connected to a submission listener.
    pub authenticated: bool,
}

impl Scope {
    pub fn covers(self, s: Standing) -> bool {
        match self {
            Scope::All => true,
            Scope::Mynetworks => s.mynetworks,
            Scope::Authenticated => s.authenticated,
            Scope::Strangers => !s.authenticated && !s.mynetworks,
        }
    }
}

/// One `[[ratelimit]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: Kind,
    pub level: Level,
    pub limit: u64,
    /// For rates; unused for concurrent connections.
    pub window: Duration,
    pub scope: Scope,
    /// When set, a hit is answered only after this delay (the client's
    /// connection is held, slowing its sending loop).
    pub tarpit: Duration,
}

impl Rule {
    /// The prefix this rule counts `ip` on, when the rule applies to it.
    pub fn key(&self, ip: IpAddr, s: Standing) -> Option<IpNet> {
        if !self.scope.covers(s) {
            return None;
        }
        self.level.of(ip)
    }

    /// The limit in force: tightened for a prefix with a bad reputation.
    pub fn limit_for(&self, bad: bool, factor: f64) -> u64 {
        if bad {
            ((self.limit as f64 * factor).floor() as u64).max(1)
        } else {
            self.limit
        }
    }
}

/// `[ratelimit_escalation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Distinct child prefixes that must hit a limit; 0 = off.
    pub children: u64,
    pub window: Duration,
    pub duration: Duration,
    /// The aggregate and child lengths per family.
    pub ipv6: (u8, u8),
    pub ipv4: (u8, u8),
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation { children: 4, window: Duration::from_secs(600), duration: Duration::from_secs(3600), ipv6: (48, 64), ipv4: (24, 32) }
    }
}

impl Escalation {
    /// The aggregate and child prefixes of `ip`.
    pub fn prefixes(&self, ip: IpAddr) -> (IpNet, IpNet) {
        let (agg, child) = match Family::of(ip) {
            Family::Ipv6 => (Level::v6(self.ipv6.0), Level::v6(self.ipv6.1)),
            Family::Ipv4 => (Level::v4(self.ipv4.0), Level::v4(self.ipv4.1)),
        };
        (agg.of(ip).expect("family matches"), child.of(ip).expect("family matches"))
    }

    pub fn enabled(&self) -> bool {
        self.children > 0
    }
}

/// The prefix levels state is kept on: every rule's level, the greylist
/// client level and the escalation aggregates, per family, finest first.
pub fn levels(rules: &[Rule], extra: &[Level]) -> Vec<Level> {
    let mut v: Vec<Level> = rules.iter().map(|r| r.level).chain(extra.iter().copied()).collect();
    v.sort_by(|a, b| a.family.cmp(&b.family).then(b.len.cmp(&a.len)));
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: Kind, level: &str, scope: Scope) -> Rule {
        Rule { kind, level: level.parse().unwrap(), limit: 10, window: Duration::from_secs(60), scope, tarpit: Duration::ZERO }
    }

    #[test]
    fn keys_follow_level_and_scope() {
        let stranger = Standing { mynetworks: false, authenticated: false };
        let user = Standing { mynetworks: false, authenticated: true };
        let r = rule(Kind::Messages, "ipv6/48", Scope::Strangers);
        let ip: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        assert_eq!(r.key(ip, stranger).unwrap().to_string(), "2001:db8:1::/48");
        assert_eq!(r.key(ip, user), None);
        assert_eq!(r.key("192.0.2.1".parse().unwrap(), stranger), None);
        let r = rule(Kind::Messages, "ipv4/24", Scope::Authenticated);
        assert_eq!(r.key("192.0.2.1".parse().unwrap(), user).unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(r.limit_for(true, 0.5), 5);
        assert_eq!(r.limit_for(false, 0.5), 10);
        assert_eq!("auth_failures".parse::<Kind>().unwrap(), Kind::AuthFailures);
        assert!("bogus".parse::<Kind>().is_err());
    }

    #[test]
    fn escalation_prefixes_and_levels() {
        let e = Escalation::default();
        let (agg, child) = e.prefixes("2001:db8:7:8::1".parse().unwrap());
        assert_eq!((agg.to_string(), child.to_string()), ("2001:db8:7::/48".into(), "2001:db8:7:8::/64".into()));
        let (agg, child) = e.prefixes("192.0.2.77".parse().unwrap());
        assert_eq!((agg.to_string(), child.to_string()), ("192.0.2.0/24".into(), "192.0.2.77/32".into()));
        let rules = [rule(Kind::Messages, "ipv6/48", Scope::All), rule(Kind::Connections, "ipv6/64", Scope::All)];
        let l = levels(&rules, &[Level::v6(64), Level::v4(24)]);
        assert_eq!(l.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["ipv4/24", "ipv6/64", "ipv6/48"]);
    }
}
