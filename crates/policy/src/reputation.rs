//! Prefix reputation: a score per prefix level that outcomes push up or down
//! and that decays towards zero with a half-life, so an old record fades. A
//! good prefix (at its finest level) skips greylisting; a bad one (at any
//! level) gets tighter rate limits.

/// An outcome that moves a prefix's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A message accepted (250 after end of data).
    Accepted,
    /// A greylisted triplet passed (the client retried like an MTA).
    GreylistPassed,
    /// Refused by the inbound policy (reverse DNS, SPF, DNSBL, …).
    Refused,
    /// DMARC failed for the message.
    DmarcFail,
    /// A rate limit was hit.
    RateLimited,
    /// Spoke before the greeting.
    EarlyTalker,
}

impl Event {
    pub fn weight(self) -> f64 {
        match self {
            Event::Accepted => 1.0,
            Event::GreylistPassed => 2.0,
            Event::Refused => -2.0,
            Event::DmarcFail => -3.0,
            Event::RateLimited => -3.0,
            Event::EarlyTalker => -5.0,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::GreylistPassed => "greylist_passed",
            Event::Refused => "refused",
            Event::DmarcFail => "dmarc_fail",
            Event::RateLimited => "rate_limited",
            Event::EarlyTalker => "early_talker",
        }
    }
}

/// A score as stored: the value at `at` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub value: f64,
    pub at: u64,
}

impl Score {
    /// The value at `now`, decayed with `half_life` seconds.
    pub fn at(self, now: u64, half_life: u64) -> f64 {
        if half_life == 0 {
            return self.value;
        }
        let dt = now.saturating_sub(self.at) as f64;
        self.value * 0.5f64.powf(dt / half_life as f64)
    }

    /// Add `delta` at `now`; the score is bounded to ±`cap` so one busy
    /// sender cannot bank unlimited credit.
    pub fn add(self, delta: f64, now: u64, half_life: u64, cap: f64) -> Score {
        Score { value: (self.at(now, half_life) + delta).clamp(-cap, cap), at: now }
    }
}

/// How a client stands, from its scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Good,
    Neutral,
    Bad,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Good => "good",
            Standing::Neutral => "neutral",
            Standing::Bad => "bad",
        }
    }
}

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub good: f64,
    pub bad: f64,
}

/// `scores` are the decayed values per level, finest first: good when the
/// finest is at or above `good` and no level is bad; bad when any level is at
/// or below `bad`.
pub fn standing(scores: &[f64], t: Thresholds) -> Standing {
    if scores.iter().any(|&s| s <= t.bad) {
        Standing::Bad
    } else if scores.first().is_some_and(|&s| s >= t.good) {
        Standing::Good
    } else {
        Standing::Neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_and_caps() {
        let s = Score::default().add(8.0, 1000, 100, 50.0);
        assert_eq!(s.at(1000, 100), 8.0);
        assert!((s.at(1100, 100) - 4.0).abs() < 1e-9);
        let s = s.add(100.0, 1000, 100, 50.0);
        assert_eq!(s.value, 50.0);
        let t = Thresholds { good: 5.0, bad: -5.0 };
        assert_eq!(standing(&[6.0, 0.0], t), Standing::Good);
        assert_eq!(standing(&[6.0, -5.0], t), Standing::Bad);
        assert_eq!(standing(&[1.0], t), Standing::Neutral);
        assert_eq!(standing(&[], t), Standing::Neutral);
    }
}
