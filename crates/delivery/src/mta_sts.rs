//! Outbound MTA-STS (RFC 8461 §3–§5): which policy a recipient domain
//! publishes, kept in the state store so it survives a restart and is shared
//! by every node on Redis (`sts|<domain>`).
//!
//! Discovery (§3.3, §5.1): the `_mta-sts.<domain>` TXT record is read on
//! each attempt; a new `id`, no cached policy, or a cached one past half its
//! `max_age` fetches the policy file ([`crate::mta_sts_fetch`]) over verified
//! TLS. A failed fetch keeps the cached policy while it lasts (and is not
//! tried again for [`FETCH_BACKOFF`]); without one the domain is treated as
//! having no policy (§3.3). A missing TXT record does not end a cached policy
//! before its `max_age` (§3.2, §5.1). A policy of mode `none` is cached too,
//! and applies nothing (§5: "forget" the policy).
//!
//! Every failure to obtain a policy is an RFC 8460 result
//! (`sts-policy-fetch-error`, `sts-policy-invalid`, `sts-webpki-invalid`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mx6_dns::{Lookup, Resolver};
use mx6_policy::mta_sts::{parse_policy, record_id, Mode, Policy};
use mx6_store::StateStore;
use serde::{Deserialize, Serialize};

use crate::tls_policy::TlsResult;

/// A policy fetch that failed is not tried again this soon.
pub const FETCH_BACKOFF: Duration = Duration::from_secs(300);
/// §3.2: `max_age` at most 31557600 s.
const MAX_AGE: u64 = 31_557_600;

/// A policy as it is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The TXT `id` it was fetched for.
    pub id: String,
    /// The policy file as served (TLS-RPT reports quote it).
    pub text: String,
    /// Unix ms.
    pub fetched: u64,
}

impl Cached {
    pub fn policy(&self) -> Option<Policy> {
        parse_policy(&self.text).ok()
    }
}

/// What discovery found for one domain.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The policy in force (never mode `none`).
    pub policy: Option<Policy>,
    /// Why a policy could not be obtained this time, with the detail.
    pub failure: Option<(TlsResult, String)>,
}

/// How policies are fetched.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Verifies the policy host's certificate (system roots plus `ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
    /// `[delivery] mta_sts_port`.
    pub port: u16,
    pub timeout: Duration,
}

fn key(domain: &str) -> String {
    format!("sts|{domain}")
}

fn fail_key(domain: &str) -> String {
    format!("sts-fail|{domain}")
}

/// The `id` of the domain's single STSv1 TXT record; `Ok(None)` when it
/// publishes none (or several, §3.1), `Err` when DNS failed.
async fn txt_id(resolver: &Resolver, domain: &str) -> Result<Option<String>, String> {
    match resolver.txt(&format!("_mta-sts.{domain}")).await {
        Lookup::Found(t) => {
            let v: Vec<&String> = t.iter().filter(|r| r.starts_with("v=STSv1")).collect();
            Ok(match v[..] {
                [one] => record_id(one).map(str::to_string),
                _ => None,
            })
        }
        Lookup::NotFound => Ok(None),
        Lookup::TempFail(e) => Err(e.to_string()),
    }
}

/// Fetch and parse the policy from the policy host's addresses, IPv6 first.
async fn fetch(resolver: &Resolver, f: &Fetcher, domain: &str) -> Result<(String, Policy), (TlsResult, String)> {
    let host = crate::mta_sts_fetch::policy_host(domain);
    let (v6, v4) = tokio::join!(resolver.aaaa(&host), resolver.a(&host));
    let addrs: Vec<IpAddr> = v6.found().iter().map(|a| IpAddr::V6(*a)).chain(v4.found().iter().map(|a| IpAddr::V4(*a))).collect();
    if addrs.is_empty() {
        return Err((TlsResult::StsPolicyFetchError, format!("{host} has no address")));
    }
    let mut last = (TlsResult::StsPolicyFetchError, String::new());
    for ip in addrs.into_iter().take(4) {
        match crate::mta_sts_fetch::fetch(SocketAddr::new(ip, f.port), domain, f.tls.clone(), f.timeout).await {
            Ok(text) => {
                return parse_policy(&text)
                    .map(|p| (text, p))
                    .map_err(|e| (TlsResult::StsPolicyInvalid, format!("https://{host}/.well-known/mta-sts.txt: {e}")));
            }
            Err(e) => {
                let r = if e.certificate() { TlsResult::StsWebpkiInvalid } else { TlsResult::StsPolicyFetchError };
                last = (r, format!("https://{host}/.well-known/mta-sts.txt from {ip}: {e}"));
            }
        }
    }
    Err(last)
}

/// The MTA-STS policy `domain` (comparable form) has now.
pub async fn discover<S: StateStore>(resolver: &Resolver, store: &S, f: &Fetcher, domain: &str, now: u64) -> Discovered {
    let cached: Option<Cached> = store.get(&key(domain), now).await.ok().flatten().and_then(|s| serde_json::from_str(&s).ok());
    let id = txt_id(resolver, domain).await;
    let stale = |c: &Cached| {
        let age = c.policy().map(|p| p.max_age.min(MAX_AGE)).unwrap_or(0) * 1000;
        now.saturating_sub(c.fetched) >= age / 2
    };
    let refetch = match (&id, &cached) {
        (Ok(Some(id)), Some(c)) => *id != c.id || stale(c),
        (Ok(Some(_)), None) => true,
        _ => false,
    };
    let mut failure = None;
    let mut current = cached;
    if refetch && !matches!(store.flag(&fail_key(domain), now).await, Ok(Some(_))) {
        match fetch(resolver, f, domain).await {
            Ok((text, p)) => {
                let c = Cached { id: id.clone().ok().flatten().unwrap_or_default(), text, fetched: now };
                let ttl = p.max_age.min(MAX_AGE) * 1000;
                if let Ok(json) = serde_json::to_string(&c) {
                    if let Err(e) = store.put(&key(domain), &json, now, ttl.max(1000)).await {
                        tracing::warn!(domain, error = %e, "the MTA-STS policy could not be cached");
                    }
                }
                current = Some(c);
            }
            Err((r, detail)) => {
                let _ = store.set_flag(&fail_key(domain), now, FETCH_BACKOFF.as_millis() as u64).await;
                tracing::warn!(domain, result = r.as_str(), error = %detail, cached = current.is_some(), "MTA-STS policy not fetched");
                failure = Some((r, detail));
            }
        }
    }
    let policy = current.and_then(|c| c.policy()).filter(|p| p.mode != Mode::None);
    Discovered { policy, failure }
}
