//! DNS blocklists and allowlists (RFC 5782) combined into one score, the way
//! Postfix postscreen combines `postscreen_dnsbl_sites` with weights: each site
//! that lists the client adds its weight (negative for allowlists such as
//! DNSWL), and a score at or above the threshold refuses the client.
//!
//! This module is pure: which sites answered what is gathered elsewhere
//! (`mx6-dns`); here the answers are filtered by return code and scored. A
//! site whose lookup failed is `Unknown`: it can never cause a refusal, but it
//! defers when its weight alone could have reached the threshold (Postfix's
//! `defer_if_reject`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// One configured list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The zone the query goes under, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// Added to the score when the client is listed; negative for allowlists.
    pub weight: i32,
    /// Return codes that count (RFC 5782 §2.3 answers are in 127.0.0.0/8);
    /// empty means any 127.0.0.0/8 answer.
    pub codes: Vec<Ipv4Net>,
}

impl Site {
    /// Whether an A answer of this site counts as a listing.
    pub fn matches(&self, answer: Ipv4Addr) -> bool {
        if self.codes.is_empty() {
            answer.octets()[0] == 127
        } else {
            self.codes.iter().any(|n| n.contains(&answer))
        }
    }
}

/// What one site said about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NXDOMAIN or no A record: not listed.
    NotListed,
    /// A records returned (all of them; [`Site::matches`] filters).
    Listed(Vec<Ipv4Addr>),
    /// Timeout or SERVFAIL.
    Unknown,
}

/// The combined outcome over all sites.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    pub score: i32,
    /// Zones whose listing counted (allowlists included).
    pub listed: Vec<String>,
    /// Sum of the positive weights of the sites that did not answer.
    pub unknown_weight: i32,
    /// An allowlist (negative weight) listed the client.
    pub allowlisted: bool,
}

/// Score the answers (`answers[i]` belongs to `sites[i]`).
pub fn score(sites: &[Site], answers: &[Answer]) -> Score {
    let mut s = Score::default();
    for (site, answer) in sites.iter().zip(answers) {
        match answer {
            Answer::Listed(a) if a.iter().any(|ip| site.matches(*ip)) => {
                s.score += site.weight;
                s.listed.push(site.zone.clone());
                s.allowlisted |= site.weight < 0;
            }
            Answer::Unknown if site.weight > 0 => s.unknown_weight += site.weight,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(zone: &str, weight: i32, codes: &[&str]) -> Site {
        Site { zone: zone.into(), weight, codes: codes.iter().map(|c| c.parse().unwrap()).collect() }
    }

    #[test]
    fn weights_add_and_codes_filter() {
        let sites = [site("a.test", 2, &[]), site("b.test", 1, &["127.0.0.2/32"]), site("wl.test", -5, &[])];
        let answers =
            [Answer::Listed(vec!["127.0.0.4".parse().unwrap()]), Answer::Listed(vec!["127.0.0.4".parse().unwrap()]), Answer::NotListed];
        let s = score(&sites, &answers);
        assert_eq!(s.score, 2);
        assert_eq!(s.listed, vec!["a.test".to_string()]);
        let answers =
            [Answer::Unknown, Answer::Listed(vec!["127.0.0.2".parse().unwrap()]), Answer::Listed(vec!["127.0.9.1".parse().unwrap()])];
        let s = score(&sites, &answers);
        assert_eq!((s.score, s.unknown_weight, s.allowlisted), (-4, 2, true));
    }

    #[test]
    fn answers_outside_loopback_never_count_by_default() {
        // A wildcard-hijacking resolver answers with a public address.
        assert!(!site("a.test", 1, &[]).matches("192.0.2.1".parse().unwrap()));
    }
}
