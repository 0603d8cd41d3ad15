//! Inbound checks for one session: gathers the facts (reverse DNS and DNSBL
//! at connect, SPF at MAIL, DKIM and DMARC at end of data) and asks the pure
//! policy (`mx6_policy::inbound`) at each stage. Shared by the SMTP session
//! driver and `mx6 policyd`, so both judge alike.
//!
//! Connect-time lookups start in the background as soon as the client
//! connects and are awaited at MAIL, so the banner is never delayed by DNS.

use std::net::IpAddr;

use mx6_auth::{Authenticator, Spf};
use mx6_policy::dnsbl::Site;
use mx6_policy::inbound::{Client, ClientFacts, InboundPolicy, Verdict};
use tokio::task::JoinHandle;

use mx6_config::{DnsConfig, DnsblConfig, PolicyConfig};

/// The inbound engine: policy, lists, resolver.
pub struct Inbound {
    pub policy: InboundPolicy,
    pub sites: Vec<Site>,
    pub resolver: mx6_dns::Resolver,
    pub auth: Authenticator,
}

impl Inbound {
    pub fn new(dns: &DnsConfig, policy: &PolicyConfig, dnsbl: &DnsblConfig, hostname: &str) -> Result<Inbound, mx6_dns::Error> {
        let resolver = mx6_dns::Resolver::new(&dns.settings())?;
        Ok(Inbound { policy: policy.inbound(dnsbl), sites: dnsbl.sites(), auth: Authenticator::new(&resolver, hostname), resolver })
    }
}

/// Connect-time facts: still being gathered, known, or not wanted.
pub enum ClientCheck {
    Skipped,
    Pending(JoinHandle<ClientFacts>),
    Ready(ClientFacts),
}

impl ClientCheck {
    /// Start the lookups for `ip` in the background.
    pub fn start(inbound: &std::sync::Arc<Inbound>, ip: IpAddr) -> ClientCheck {
        if !inbound.policy.wants_client_facts(ip) {
            return ClientCheck::Skipped;
        }
        let i = inbound.clone();
        ClientCheck::Pending(tokio::spawn(async move { i.resolver.client_facts(ip, &i.sites).await }))
    }

    /// The facts, waiting for the lookups if needed; `None` when skipped.
    pub async fn get(&mut self) -> Option<&ClientFacts> {
        if let ClientCheck::Pending(h) = self {
            let facts = h.await.unwrap_or_else(|_| ClientFacts { iprev: mx6_policy::inbound::AuthResult::TempError, ..Default::default() });
            *self = ClientCheck::Ready(facts);
        }
        match self {
            ClientCheck::Ready(f) => Some(f),
            _ => None,
        }
    }
}

/// Facts of the transaction in progress.
pub struct Transaction {
    pub spf: Spf,
    pub sender: String,
}

/// The MAIL-stage decision: gathers SPF, then decides. Returns the verdict and
/// the transaction facts to keep for end of data.
pub async fn check_mail(
    inbound: &Inbound,
    client: &Client<'_>,
    facts: &ClientFacts,
    helo: &str,
    sender: &str,
) -> (Verdict, Option<Transaction>) {
    if inbound.policy.exempt(client) {
        return (Verdict::Pass, None);
    }
    let spf = inbound.auth.spf(client.ip, helo, sender).await;
    let v = inbound.policy.decide_mail(client, facts, &spf.facts);
    (v, Some(Transaction { spf, sender: sender.to_string() }))
}
