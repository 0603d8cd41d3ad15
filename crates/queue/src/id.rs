//! Queue ids: 16 lower-case hex digits of `microseconds since the epoch << 12 |
//! sequence`. Ids are unique within a process (monotonic even
//! when the clock steps back) and sort by arrival time, so `ls` of the spool and
//! the logs read in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicU64 = AtomicU64::new(0);

/// A new queue id.
pub fn next() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let candidate = micros << 12;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return format!("{next:016x}"),
            Err(l) => last = l,
        }
    }
}

/// A queue id as a number (the index key).
pub type Id = u64;

/// A queue id (16 hex digits) as a number.
pub fn parse_id(id: &str) -> Option<Id> {
    (id.len() == 16).then(|| u64::from_str_radix(id, 16).ok()).flatten()
}

pub fn format_id(id: Id) -> String {
    format!("{id:016x}")
}

/// The arrival time (unix microseconds) encoded in an id.
pub fn micros(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..16)?, 16).ok().map(|v| v >> 12)
}

/// How long ago the message with this id arrived (zero if the id says nothing).
pub fn age(id: &str) -> std::time::Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    std::time::Duration::from_micros(micros(id).map_or(0, |t| now.saturating_sub(t)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_and_sorted() {
        let ids: Vec<String> = (0..10_000).map(|_| super::next()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|i| i.len() == 16));
        assert!(super::micros(&ids[0]).unwrap() > 1_700_000_000_000_000);
    }
}
