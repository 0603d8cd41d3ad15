//! Prefix reputation as the server keeps it (`[reputation]`): outcomes of a
//! port-25 client (accepted, refused, greylist passed, DMARC failure,
//! rate-limit hit, early talking) move a decaying score on every prefix
//! level of the client ([`mx6_policy::reputation`]); the standing read at
//! connect makes a good prefix skip greylisting and gives a bad one tighter
//! rate limits. State failures never refuse mail here: an unknown standing is
//! neutral.

use std::net::IpAddr;

use mx6_policy::prefix::Level;
use mx6_policy::reputation::{standing, Event, Standing, Thresholds};

use mx6_config::ReputationConfig;

use crate::checks::state::State;

/// Scores are bounded to ±CAP, so credit cannot be banked without end.
const CAP: f64 = 100.0;

pub struct Reputation {
    enabled: bool,
    half_life: u64,
    thresholds: Thresholds,
    pub bad_limit_factor: f64,
    /// Levels scores are kept on, finest first per family.
    levels: Vec<Level>,
}

/// The state key of a prefix's score.
pub fn key(prefix: &ipnet::IpNet) -> String {
    format!("rep|{prefix}")
}

impl Reputation {
    pub fn new(r: &ReputationConfig, levels: Vec<Level>) -> Reputation {
        Reputation {
            enabled: r.enabled,
            half_life: r.half_life.as_millis() as u64,
            thresholds: Thresholds { good: r.good, bad: r.bad },
            bad_limit_factor: r.bad_limit_factor,
            levels,
        }
    }

    pub fn half_life(&self) -> u64 {
        self.half_life
    }

    /// The client's prefixes, finest first.
    pub fn prefixes(&self, ip: IpAddr) -> Vec<ipnet::IpNet> {
        self.levels.iter().filter_map(|l| l.of(ip)).collect()
    }

    fn keys(&self, ip: IpAddr) -> Vec<String> {
        self.prefixes(ip).iter().map(key).collect()
    }

    /// The client's standing and its scores (finest level first).
    pub async fn standing(&self, state: &State, ip: IpAddr) -> (Standing, Vec<f64>) {
        if !self.enabled {
            return (Standing::Neutral, Vec::new());
        }
        match state.scores(&self.keys(ip), mx6_store::now_ms(), self.half_life).await {
            Ok(s) => (standing(&s, self.thresholds), s),
            Err(_) => (Standing::Neutral, Vec::new()),
        }
    }

    /// Record an outcome on every level of the client.
    pub async fn record(&self, state: &State, ip: IpAddr, ev: Event) {
        if self.enabled {
            let _ = state.add_score(&self.keys(ip), ev.weight(), mx6_store::now_ms(), self.half_life, CAP).await;
        }
    }
}
