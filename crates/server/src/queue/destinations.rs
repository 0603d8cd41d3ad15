//! Where queued mail goes besides local Maildirs, and how many sessions may
//! carry it at once: the resolver and client settings for remote delivery
//! (MX, or the relayhost), LMTP for local recipients when configured, a
//! global and a per-destination limit on sessions, which domains are ours
//! (bounces to them are delivered locally), and the MTA-STS policies of the
//! others ([`mx6_delivery::mta_sts`], cached in the state store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mx6_delivery::mta_sts::{Discovered, Fetcher};
use mx6_delivery::remote::{Delivery, LmtpTarget, RemoteConfig};
use mx6_delivery::tls_record::{self, Tuple};
use mx6_dns::Resolver;
use mx6_queue::Recipient;
use tokio::sync::Semaphore;

use crate::checks::state::State;

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
    /// MTA-STS discovery (`[delivery] mta_sts`).
    sts: Option<Fetcher>,
    /// Where policies are cached and TLS outcomes counted.
    state: Option<Arc<State>>,
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
            sts: None,
            state: None,
        }
    }

    /// Obey MTA-STS policies fetched with `f` (if any), cache them and
    /// count TLS outcomes in `state`.
    pub fn with_state(mut self, f: Option<Fetcher>, state: Arc<State>) -> Destinations {
        (self.sts, self.state) = (f, Some(state));
        self
    }

    /// The MTA-STS policy of `domain`, unless none applies (discovery off,
    /// the relayhost, a `[[delivery.tls_policy]]` entry for it).
    pub async fn mta_sts(&self, domain: &str) -> Discovered {
        let (Some(f), Some(state)) = (&self.sts, &self.state) else { return Discovered::default() };
        let r = &self.remote;
        if r.relayhost.is_some() || mx6_delivery::tls_policy::entry(&r.tls_policies, domain, false).is_some() {
            return Discovered::default();
        }
        mx6_delivery::mta_sts::discover(&self.resolver, state.store(), f, domain, mx6_store::now_ms()).await
    }

    /// Count the TLS outcomes of one delivery to `domain` for TLS-RPT.
    pub async fn record_tls(&self, domain: &str, d: &Delivery) {
        let Some(state) = &self.state else { return };
        if self.remote.relayhost.is_some() {
            return; // the relayhost is not the domain's MX: nothing to report to it
        }
        let now = mx6_store::now_ms();
        let policy = tls_record::policy_type(d.tls_source);
        for s in &d.tls_sessions {
            let t = Tuple {
                domain: domain.to_string(),
                day: tls_record::day(now),
                policy,
                result: s.result,
                mx: s.mx.clone(),
                receiving: s.receiving,
                sending: s.sending,
            };
            tls_record::record(state.store(), &t, &s.detail, now).await;
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
