//! When mx6 orders a certificate, and what it does when an order fails.
//!
//! An order is placed at start when `data_dir/acme/` holds no certificate
//! for all the names, and again `[acme] renew_before` ahead of the expiry of
//! the one in use (at most half of the validity it had when it was obtained,
//! so short-lived certificates are not renewed the moment they arrive). A failed order keeps
//! the certificate in use (logged as an error with its expiry, which
//! `mx6_tls_certificate_expiry_seconds` also shows) and is retried after 30 s,
//! then twice as long each time up to 6 h, ±25 % jitter, and at least an
//! hour after a `rateLimited` answer (RFC 8555 §6.7) — never a tight loop.
//! What happened last is kept in `data_dir/acme/status.toml`
//! ([`mx6_config::acme::RenewalStatus`]) for `mx6 check` and across restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mx6_config::acme::RenewalStatus;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::acme::order::Client;
use crate::net::tls;

/// When to renew a certificate obtained at `obtained` and valid until
/// `not_after` (Unix seconds). The time it was obtained, not its
/// `notBefore`, which CAs backdate.
pub fn renew_at(obtained: i64, not_after: i64, renew_before: Duration) -> i64 {
    let lifetime = (not_after - obtained).max(0);
    not_after - i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX).min(lifetime / 2)
}

/// How long to wait after the `failures`-th failure in a row; `jitter` in
/// [0, 1).
pub fn retry_delay(failures: u32, rate_limited: bool, jitter: f64) -> Duration {
    let base = 30.0 * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
    let secs = base.min(6.0 * 3600.0) * (0.75 + 0.5 * jitter.clamp(0.0, 1.0));
    let secs = if rate_limited { secs.max(3600.0) } else { secs };
    Duration::from_secs_f64(secs)
}

/// A number in [0, 1) that differs between calls and processes.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn show(t: i64) -> String {
    match t {
        0 => "never".to_string(),
        t => chrono::DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339()).unwrap_or_default(),
    }
}

/// The certificate in `data_dir/acme/`: when it was written, when it
/// expires, and whether it names all of `names`.
fn current(cert: &Path, names: &[String]) -> Option<(i64, i64, bool)> {
    let written = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let written = i64::try_from(written.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let der = CertificateDer::pem_file_iter(cert).ok()?.next()?.ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let mut has: Vec<String> = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                has.push(d.to_ascii_lowercase());
            }
        }
    }
    let covers = names.iter().all(|n| has.contains(&n.to_ascii_lowercase()));
    Some((written, c.validity().not_after.timestamp(), covers))
}

/// The renewal task.
pub struct Renewal {
    pub client: Client,
    pub renew_before: Duration,
    pub data_dir: PathBuf,
}

impl Renewal {
    fn save(&self, s: &RenewalStatus) {
        let p = RenewalStatus::path(&self.data_dir);
        if let Err(e) = mx6_queue::disk::replace_private(&p, s.to_toml().as_bytes()) {
            tracing::warn!(path = %p.display(), error = %e, "ACME status not saved");
        }
    }

    /// Order and renew until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let names = self.client.names.clone();
        let (cert, _) = tls::acme_paths(&self.data_dir);
        let dir = self.data_dir.join("acme");
        if let Err(e) = mx6_queue::disk::private_dir(&dir) {
            tracing::error!(path = %dir.display(), error = %e, "no ACME directory; ACME is off");
            return;
        }
        let mut status = RenewalStatus::read(&self.data_dir).filter(|s| s.names == names).unwrap_or_default();
        status.names = names.clone();
        loop {
            let have = current(&cert, &names);
            status.not_after = have.map(|h| h.1).unwrap_or(0);
            let next = match have {
                _ if status.failures > 0 => status.next_attempt,
                Some((obtained, until, true)) => renew_at(obtained, until, self.renew_before),
                _ => now(),
            };
            status.next_attempt = next;
            self.save(&status);
            if next > now() {
                tracing::info!(names = ?names, expires = %show(status.not_after), next_attempt = %show(next), "ACME certificate in use");
                let wait = Duration::from_secs(u64::try_from(next - now()).unwrap_or(0));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
            tracing::info!(names = ?names, directory = %self.client.directory, challenge = self.client.challenge.as_str(), "ordering an ACME certificate");
            status.last_attempt = now();
            let result = tokio::select! {
                r = self.client.obtain() => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(()) => {
                    status.failures = 0;
                    status.last_error.clear();
                    let until = current(&cert, &names).map(|h| h.1).unwrap_or(0);
                    tracing::info!(names = ?names, expires = %show(until), "ACME certificate obtained; new handshakes use it");
                }
                Err(e) => {
                    status.failures += 1;
                    status.last_error = e.to_string();
                    let delay = retry_delay(status.failures, e.rate_limited(), jitter());
                    status.next_attempt = now() + i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2);
                    let keeping = if status.not_after > 0 {
                        format!("keeping the certificate in use, which expires {}", show(status.not_after))
                    } else {
                        "no ACME certificate yet: the default certificate stays".to_string()
                    };
                    tracing::error!(names = ?names, error = %e, failures = status.failures, retry_in_secs = delay.as_secs(),
                        "ACME order failed; {keeping}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_ahead_of_expiry_but_not_before_half_the_lifetime() {
        let day = 86400;
        // A 90-day certificate, 30 days ahead: day 60.
        assert_eq!(renew_at(0, 90 * day, Duration::from_secs(30 * day as u64)), 60 * day);
        // A 6-day certificate: at half its life, not at once.
        assert_eq!(renew_at(0, 6 * day, Duration::from_secs(30 * day as u64)), 3 * day);
        // A forced short window.
        assert_eq!(renew_at(1000, 1060, Duration::from_secs(20)), 1040);
    }

    #[test]
    fn retries_back_off_with_jitter_and_respect_rate_limits() {
        assert_eq!(retry_delay(1, false, 0.5), Duration::from_secs(30));
        assert_eq!(retry_delay(2, false, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(3, false, 0.0), Duration::from_secs(90));
        assert_eq!(retry_delay(40, false, 0.5), Duration::from_secs(6 * 3600));
        assert_eq!(retry_delay(1, true, 0.5), Duration::from_secs(3600));
        assert!(retry_delay(1, false, 0.999) < Duration::from_secs(38));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
