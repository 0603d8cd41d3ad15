//! Failed SMTP AUTH attempts counted per client prefix (IPv6 /64, IPv4 /32), so
//! a password guesser that rotates addresses inside its /64 gains nothing. Past
//! `limit` failures within `window` the prefix gets 454 4.7.0 until the oldest
//! failure ages out. (The abuse-defense work generalises this into rate limits
//! over the shared state store.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use mx6_policy::prefix::client_prefix;

pub struct AuthThrottle {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpNet, Vec<Instant>>>,
}

impl AuthThrottle {
    pub fn new(limit: u32, window: Duration) -> AuthThrottle {
        AuthThrottle { limit, window, failures: Mutex::new(HashMap::new()) }
    }

    fn key(ip: IpAddr) -> IpNet {
        client_prefix(ip, 64, 32)
    }

    /// Is this client's prefix over the limit now?
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut map) = self.failures.lock() else { return false };
        let key = Self::key(ip);
        let Some(v) = map.get_mut(&key) else { return false };
        v.retain(|t| now.duration_since(*t) < self.window);
        if v.is_empty() {
            map.remove(&key);
            return false;
        }
        v.len() as u32 >= self.limit
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let Ok(mut map) = self.failures.lock() else { return };
        // Bounded: forget prefixes whose failures all aged out.
        if map.len() > 100_000 {
            map.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < self.window));
        }
        let v = map.entry(Self::key(ip)).or_default();
        v.push(now);
        if v.len() > self.limit as usize * 2 {
            v.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_prefix() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for i in 1..=3 {
            let ip: IpAddr = format!("2001:db8:1:2::{i}").parse().unwrap();
            assert!(!t.blocked(ip, now));
            t.failed(ip, now);
        }
        // Another address in the same /64 is blocked; another /64 is not.
        assert!(t.blocked("2001:db8:1:2::99".parse().unwrap(), now));
        assert!(!t.blocked("2001:db8:1:3::1".parse().unwrap(), now));
        assert!(!t.blocked("2001:db8:1:2::99".parse().unwrap(), now + Duration::from_secs(61)));
    }
}
