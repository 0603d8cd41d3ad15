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

    /// For a message that had been deferred before a restart and is now
    /// `age` old: the attempts it would have had if every one since arrival
    /// failed on this schedule, and how long until the next one. A restart so
    /// spreads deferred messages over their schedule instead of trying them
    /// all at once.
    pub fn after_restart(&self, age: Duration) -> (u32, Duration) {
        let mut at = Duration::ZERO;
        let mut attempts = 1u32;
        loop {
            let step = self.delay(attempts).max(Duration::from_secs(1));
            let target = age.min(self.max_age);
            if step >= self.max.max(Duration::from_secs(1)) && at < target {
                // At the cap the rest is arithmetic, however small the steps.
                let k = ((target - at).as_secs_f64() / step.as_secs_f64()).floor() as u32;
                at = at.saturating_add(step.saturating_mul(k));
                attempts = attempts.saturating_add(k);
            }
            at = at.saturating_add(step);
            if at > age || at >= self.max_age {
                return (attempts, at.saturating_sub(age));
            }
            attempts = attempts.saturating_add(1);
        }
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
        // Attempts at 0, 5m, 15m, 35m, …: a message 20 minutes old had three
        // and is next tried at 35 minutes.
        assert_eq!(s.after_restart(Duration::from_secs(1200)), (3, Duration::from_secs(900)));
        assert_eq!(s.after_restart(Duration::from_secs(10)), (1, Duration::from_secs(290)));
        let (n, d) = s.after_restart(Duration::from_secs(6 * 86400));
        assert!(n > 30 && d.is_zero(), "past max_age: due now ({n}, {d:?})");
        // Steps at the cap are counted, not walked.
        let tiny = Schedule { initial: Duration::from_secs(1), max: Duration::from_secs(1), max_age: Duration::from_secs(60 * 86400) };
        let t = std::time::Instant::now();
        assert_eq!(tiny.after_restart(Duration::from_millis(59 * 86400 * 1000 + 500)), (59 * 86400 + 1, Duration::from_millis(500)));
        assert!(t.elapsed() < Duration::from_millis(50));
        // The same answer as walking, at the cap.
        assert_eq!(s.after_restart(Duration::from_secs(86400)), walk(&s, Duration::from_secs(86400)));
    }

    fn walk(s: &Schedule, age: Duration) -> (u32, Duration) {
        let (mut at, mut n) = (Duration::ZERO, 1u32);
        loop {
            at += s.delay(n).max(Duration::from_secs(1));
            if at > age || at >= s.max_age {
                return (n, at - age);
            }
            n += 1;
        }
    }
}
