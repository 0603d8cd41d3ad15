//! Retry schedule: the first retry after `initial`, doubling up to `max` between
//! attempts; after `max_age` in the queue the message is returned (RFC 5321
//! §4.5.4.1 asks for at least 30 minutes between attempts and 4-5 days in all).

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub initial: Duration,
    pub max: Duration,
    pub max_age: Duration,
}

impl Schedule {
    /// Delay before the next attempt after `failed` failed attempts (1 = first failure).
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32.checked_shl(failed.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }

    /// Whether a message that has been queued for `age` must be given up.
    pub fn expired(&self, age: Duration) -> bool {
        age >= self.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max() {
        let s = Schedule { initial: Duration::from_secs(300), max: Duration::from_secs(4 * 3600), max_age: Duration::from_secs(5 * 86400) };
        let d: Vec<u64> = (1..=8).map(|n| s.delay(n).as_secs()).collect();
        assert_eq!(d, [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]);
        assert_eq!(s.delay(1000).as_secs(), 14400);
        assert!(s.expired(Duration::from_secs(5 * 86400)));
        assert!(!s.expired(Duration::from_secs(86400)));
    }
}
