//! Prefix reputation as the server keeps it (`[reputation]`): outcomes of a
//! port-25 client (accepted, refused, greylist passed, DMARC failure,
//! rate-limit hit, early talking) move a decaying score on every prefix
//! level of the client ([`mx6_policy::reputation`]); the standing read at
//! connect makes a good prefix skip greylisting and gives a bad one tighter
//! rate limits. State failures never refuse mail here: an unknown standing is
//! neutral.

use std::net::IpAddr;
use std::sync::Arc;

use mx6_policy::prefix::Level;
use mx6_policy::reputation::{standing, Event, Standing, Thresholds};

use mx6_config::ReputationConfig;
use mx6_store::{Op, Reply};

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

    /// The read of the client's scores, to ask with the other connect-time
    /// questions (`None` when reputation is off).
    pub fn read(&self, ip: IpAddr) -> Option<Op> {
        self.enabled.then(|| Op::Scores { keys: self.keys(ip), half_life: self.half_life })
    }

    /// The client's standing and its scores (finest level first) from the
    /// answer to [`Reputation::read`]; neutral when there is none (off, or
    /// the store failed).
    pub fn standing(&self, answer: Option<&Reply>) -> (Standing, Vec<f64>) {
        match answer {
            Some(Reply::Scores(s)) => (standing(s, self.thresholds), s.clone()),
            _ => (Standing::Neutral, Vec::new()),
        }
    }

    /// The client's standing, asked alone (`mx6 policyd`, `mx6 milter`).
    pub async fn lookup(&self, state: &State, ip: IpAddr) -> (Standing, Vec<f64>) {
        let Some(op) = self.read(ip) else { return (Standing::Neutral, Vec::new()) };
        let answers = state.batch(std::slice::from_ref(&op), mx6_store::now_ms()).await.ok();
        self.standing(answers.as_ref().and_then(|a| a.first()))
    }

    /// Record an outcome on every level of the client. Nothing waits for
    /// the answer: a write that does not finish at once (a Redis round trip)
    /// goes on off the session's path; the embedded store finishes at once
    /// and costs no task.
    pub fn record(&self, state: &Arc<State>, ip: IpAddr, ev: Event) {
        if self.enabled {
            let (state, keys, half_life) = (state.clone(), self.keys(ip), self.half_life);
            crate::checks::state::unwaited(async move {
                let _ = state.add_score(&keys, ev.weight(), mx6_store::now_ms(), half_life, CAP).await;
            });
        }
    }
}
