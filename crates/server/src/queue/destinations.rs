//! Where queued mail goes besides local Maildirs, and how many sessions may
//! carry it at once: the resolver and client settings for remote delivery
//! (MX, or the relayhost), LMTP for local recipients when configured, a
//! global and a per-destination limit on sessions, and which domains are
//! ours (bounces to them are delivered locally).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mx6_delivery::remote::{LmtpTarget, RemoteConfig};
use mx6_dns::Resolver;
use mx6_queue::Recipient;
use tokio::sync::Semaphore;

pub struct Destinations {
    pub resolver: Resolver,
    pub remote: RemoteConfig,
    global: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    destination_limit: usize,
    /// Local domains (comparable form), for routing bounces.
    local_domains: Vec<String>,
    /// Local recipients go over LMTP.
    pub lmtp: Option<LmtpTarget>,
}

impl Destinations {
    pub fn new(
        resolver: Resolver,
        remote: RemoteConfig,
        concurrency: usize,
        destination_limit: usize,
        local_domains: Vec<String>,
        lmtp: Option<LmtpTarget>,
    ) -> Destinations {
        Destinations {
            resolver,
            remote,
            global: Arc::new(Semaphore::new(concurrency.max(1))),
            per_destination: Mutex::new(HashMap::new()),
            destination_limit: destination_limit.max(1),
            local_domains,
            lmtp,
        }
    }

    /// A session slot to any destination.
    pub fn global(&self) -> Arc<Semaphore> {
        self.global.clone()
    }

    /// The session slots of one destination (a domain, the relayhost, the LMTP target).
    pub fn destination(&self, key: &str) -> Arc<Semaphore> {
        let mut m = self.per_destination.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, s| s.available_permits() < self.destination_limit);
        }
        m.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.destination_limit))).clone()
    }

    /// Whether recipient `r` goes out over SMTP or LMTP rather than into a
    /// Maildir here.
    pub fn outbound(&self, r: &Recipient) -> bool {
        r.local.is_none() || self.lmtp.is_some()
    }

    /// Where a bounce to `addr` goes.
    pub fn route(&self, addr: &str) -> Recipient {
        let (user, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
        let d = mx6_policy::normalize_domain(domain);
        Recipient {
            address: addr.to_string(),
            local: self.local_domains.contains(&d).then(|| (user.to_lowercase(), d)),
            ..Default::default()
        }
    }
}
