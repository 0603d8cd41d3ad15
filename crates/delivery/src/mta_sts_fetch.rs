//! Fetching a domain's MTA-STS policy file (RFC 8461 §3.3):
//! `GET https://mta-sts.<domain>/.well-known/mta-sts.txt` over TLS verified
//! for that name ([`crate::trust`]), HTTP/1.1 by hyper, no redirects (§3.3:
//! "MUST NOT follow HTTP redirects"), a 2xx status, at most 64 KiB, and short
//! timeouts; the text is for [`mx6_policy::mta_sts::parse_policy`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use crate::https_client::OpenError;

/// RFC 8461 §3.3 suggests a limit of 64 KiB.
pub const MAX_POLICY: usize = 64 * 1024;

/// Why a policy could not be fetched (TLS-RPT `sts-policy-fetch-error`, or
/// `sts-webpki-invalid` for [`FetchError::Tls`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("HTTP status {0}{1}")]
    Status(u16, String),
    #[error("the policy is larger than 64 KiB")]
    TooLarge,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the policy is not UTF-8")]
    Encoding,
}

impl FetchError {
    /// Whether the certificate was the problem (TLS-RPT `sts-webpki-invalid`).
    pub fn certificate(&self) -> bool {
        matches!(self, FetchError::Tls(..))
    }
}

/// The policy host of `domain`.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Fetch the policy of `domain` from `addr` (an address of its policy host),
/// verifying the certificate with `tls`, within `timeout` in all.
pub async fn fetch(addr: SocketAddr, domain: &str, tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, fetch_inner(addr, domain, tls)).await.map_err(|_| FetchError::Timeout(timeout))?
}

async fn fetch_inner(addr: SocketAddr, domain: &str, tls: Arc<rustls::ClientConfig>) -> Result<String, FetchError> {
    let host = policy_host(domain);
    let mut conn = crate::https_client::open(addr, &host, tls).await.map_err(|e| match e {
        OpenError::Connect(a, e) => FetchError::Connect(a, e),
        OpenError::Tls(h, e) => FetchError::Tls(h, e),
        OpenError::Http(e) => FetchError::Http(e),
    })?;
    let req = hyper::Request::get("/.well-known/mta-sts.txt")
        .header(hyper::header::HOST, host.as_str())
        .header(hyper::header::USER_AGENT, "mx6")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = conn.sender.send_request(req).await.map_err(|e| FetchError::Http(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| format!(", a redirect to {l} (not followed)"));
        return Err(FetchError::Status(status.as_u16(), location.unwrap_or_default()));
    }
    let body = Limited::new(resp.into_body(), MAX_POLICY).collect().await;
    let body =
        body.map_err(|e| if e.is::<http_body_util::LengthLimitError>() { FetchError::TooLarge } else { FetchError::Http(e.to_string()) })?;
    String::from_utf8(body.to_bytes().to_vec()).map_err(|_| FetchError::Encoding)
}
