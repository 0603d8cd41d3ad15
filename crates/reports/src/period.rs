//! Reporting periods. DMARC aggregate reports cover the configured
//! `[reports] interval` (default 24 h) or a domain's shorter `ri` where it
//! divides the day (RFC 7489 §6.3, §7.2: "reports … aligned to UTC
//! midnight"); TLS-RPT reports cover one UTC day (RFC 8460 §4.1).

pub const DAY: u64 = 86_400;
/// The shortest period we honour: an hour (RFC 7489 §7.2 asks receivers to
/// support at least daily, and allows hourly).
pub const MIN: u64 = 3_600;

/// Whether `secs` is an interval mx6 can align to UTC midnight.
pub fn valid(secs: u64) -> bool {
    (MIN..=7 * DAY).contains(&secs) && (DAY.is_multiple_of(secs) || secs.is_multiple_of(DAY))
}

/// The interval for a domain: ours, or its `ri` when that is shorter and
/// divides the day.
pub fn interval(ours: u64, ri: Option<u64>) -> u64 {
    match ri {
        Some(ri) if ri < ours && ri >= MIN && DAY.is_multiple_of(ri) => ri,
        _ => ours,
    }
}

/// The period (begin, end) of `interval` seconds that holds `now` (Unix
/// seconds); periods start at multiples of the interval since the epoch,
/// which for every [`valid`] interval is a UTC midnight or an hour that
/// divides the day evenly.
pub fn containing(now: u64, interval: u64) -> (u64, u64) {
    let i = interval.max(1);
    let begin = now - now % i;
    (begin, begin + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_align_to_utc_midnight() {
        // 2026-12-04T13:20:00Z
        let now = 1_796_342_400 + 13 * 3600 + 20 * 60;
        assert_eq!(containing(now, DAY), (1_796_342_400, 1_796_342_400 + DAY));
        assert_eq!(containing(now, 6 * 3600), (1_796_342_400 + 12 * 3600, 1_796_342_400 + 18 * 3600));
        assert_eq!(interval(DAY, Some(3600)), 3600);
        assert_eq!(interval(DAY, Some(7 * 3600)), DAY, "7 h does not divide the day");
        assert_eq!(interval(DAY, Some(60)), DAY, "below an hour");
        assert_eq!(interval(3600, Some(DAY)), 3600, "ri only shortens");
        assert!(valid(DAY) && valid(3600) && valid(2 * DAY) && !valid(7 * 3600) && !valid(60));
    }
}
