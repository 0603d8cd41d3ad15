//! TLS-RPT reports by HTTPS (RFC 8460 §3, §5.2): `POST` of the gzip
//! report to an `https:` `rua` URI with `Content-Type:
//! application/tlsrpt+gzip`, over TLS verified for the URI's host
//! ([`crate::trust`]), HTTP/1.1 by hyper, trying the host's IPv6 addresses
//! before its IPv4 ones, with a timeout; a 2xx is success, anything else an
//! error (no redirects are followed).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::https_client::OpenError;

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("`{0}` is not an https:// URL")]
    Url(String),
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// `https://host[:port]/path` → (host, port, path).
pub fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("HTTPS://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    (!host.is_empty()).then_some((host, port, path))
}

/// POST `body` to `url`.
pub async fn post(
    url: &str,
    body: Vec<u8>,
    resolver: &mx6_dns::Resolver,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(), PostError> {
    tokio::time::timeout(timeout, post_inner(url, body, resolver, tls)).await.map_err(|_| PostError::Timeout(timeout))?
}

async fn post_inner(url: &str, body: Vec<u8>, resolver: &mx6_dns::Resolver, tls: Arc<rustls::ClientConfig>) -> Result<(), PostError> {
    let (host, port, path) = split_url(url).ok_or_else(|| PostError::Url(url.to_string()))?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    match host.parse::<IpAddr>() {
        Ok(ip) => addrs.push(ip),
        Err(_) => {
            addrs.extend(resolver.aaaa(&host).await.found().iter().map(|a| IpAddr::V6(*a)));
            addrs.extend(resolver.a(&host).await.found().iter().map(|a| IpAddr::V4(*a)));
        }
    }
    let mut last = PostError::NoAddress(host.clone());
    for ip in addrs {
        let mut conn = match crate::https_client::open(SocketAddr::new(ip, port), &host, tls.clone()).await {
            Ok(c) => c,
            Err(OpenError::Connect(a, e)) => {
                last = PostError::Connect(a, e);
                continue;
            }
            Err(OpenError::Tls(h, e)) => return Err(PostError::Tls(h, e)),
            Err(OpenError::Http(e)) => return Err(PostError::Http(e)),
        };
        let req = hyper::Request::post(path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::USER_AGENT, "mx6")
            .header(hyper::header::CONTENT_TYPE, "application/tlsrpt+gzip")
            .header(hyper::header::CONNECTION, "close")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Http(e.to_string()))?;
        let resp = conn.sender.send_request(req).await.map_err(|e| PostError::Http(e.to_string()));
        return match resp {
            Ok(r) if r.status().is_success() => {
                let _ = r.into_body().collect().await;
                Ok(())
            }
            Ok(r) => Err(PostError::Status(r.status().as_u16())),
            Err(e) => Err(e),
        };
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(split_url("https://tlsrpt.example.net/v1"), Some(("tlsrpt.example.net".into(), 443, "/v1".into())));
        assert_eq!(split_url("https://r.example:8443"), Some(("r.example".into(), 8443, "/".into())));
        assert_eq!(split_url("https://[2001:db8::1]:8443/x"), Some(("2001:db8::1".into(), 8443, "/x".into())));
        assert_eq!(split_url("http://r.example/"), None);
    }
}
