//! Greylisting at RCPT (`[greylist]`): the triplet of the client's identity
//! (SPF-authorised sender domain, else FCrDNS registered domain, else its
//! /64 or /24), the normalised sender and the recipient goes to the state
//! store ([`mx6_policy::greylist`] has the rules). The caller decides the
//! exemptions (mynetworks, authenticated, allowlists, DNSWL, good reputation).

use std::net::IpAddr;

use mx6_policy::greylist::{normalize_sender, Identity, Outcome, Times};

use mx6_config::GreylistConfig;

use crate::checks::state::{State, Unavailable};

pub struct Greylisting {
    pub enabled: bool,
    times: Times,
    v6: u8,
    v4: u8,
    auto_allowlist: u64,
}

/// What the client presented, for its identity.
pub struct Presented<'a> {
    pub ip: IpAddr,
    /// The MAIL FROM (or HELO) domain when SPF passed.
    pub spf_pass_domain: Option<&'a str>,
    /// The forward-confirmed PTR name.
    pub confirmed_name: Option<&'a str>,
    pub sender: &'a str,
    pub rcpt: &'a str,
}

impl Greylisting {
    pub fn new(g: &GreylistConfig) -> Greylisting {
        Greylisting { enabled: g.enabled, times: g.times(), v6: g.ipv6_prefix, v4: g.ipv4_prefix, auto_allowlist: g.auto_allowlist }
    }

    /// The 451 for an outcome that refuses (new, early), with the retry hint.
    pub fn refusal(outcome: Outcome) -> Option<mx6_smtp::reply::Reply> {
        match outcome {
            Outcome::New { retry_in } | Outcome::Early { retry_in } => Some(mx6_smtp::reply::greylisted(retry_in.div_ceil(1000))),
            _ => None,
        }
    }

    /// One attempt; returns the outcome and the identity that decided.
    pub async fn check(&self, state: &State, p: &Presented<'_>) -> Result<(Outcome, Identity), Unavailable> {
        let id = Identity::of(p.ip, p.spf_pass_domain, p.confirmed_name, self.v6, self.v4);
        let triplet = format!("gl|{id}|{}|{}", normalize_sender(p.sender), p.rcpt.to_ascii_lowercase());
        let client = format!("gla|{id}");
        let o = state.greylist(&triplet, &client, mx6_store::now_ms(), &self.times, self.auto_allowlist).await?;
        Ok((o, id))
    }
}
