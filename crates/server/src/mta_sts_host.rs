//! Hosting our MTA-STS policy (RFC 8461 §3.3): HTTPS on `[mta_sts] listen`,
//! `GET /.well-known/mta-sts.txt` with `Host: mta-sts.<domain>` for each of
//! `[mta_sts] domains` (default: the `[local] domains`) answers the policy
//! (`text/plain`, [`mx6_policy::mta_sts::policy_text`]); anything else is
//! 404, a method other than GET or HEAD 405. The certificate is chosen by SNI
//! from the same set as SMTP ([`crate::net::tls`]: give `mta-sts.<domain>` a
//! `[[tls.certificate]]`, or let `[acme]` obtain it), so it reloads the same
//! way; a handshake for ALPN `acme-tls/1` answers a TLS-ALPN-01 challenge
//! (RFC 8737) and is closed. HTTP/1.1 by hyper, one
//! request per connection, the request head within 10 s and 8 KiB, at most
//! 256 connections at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// What is served.
pub struct Site {
    pub domains: Vec<String>,
    pub policy: String,
}

impl Site {
    pub fn new(cfg: &mx6_config::Config) -> Site {
        Site { domains: cfg.mta_sts_domains(), policy: cfg.mta_sts_policy() }
    }

    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).or(req.uri().host()).unwrap_or("");
        let status =
            if req.uri().path() != "/.well-known/mta-sts.txt" || mx6_policy::mta_sts::domain_for_host(host, &self.domains).is_none() {
                StatusCode::NOT_FOUND
            } else if req.method() != Method::GET && req.method() != Method::HEAD {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::OK
            };
        let body = match status {
            StatusCode::OK => self.policy.clone(),
            s => format!("{}\n", s.canonical_reason().unwrap_or("error")),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
        r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        r
    }
}

/// Serve `site` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, site: Arc<Site>, mut shutdown: watch::Receiver<bool>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(256));
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (acceptor, site) = (acceptor.clone(), site.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let served = async {
                let tls = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
                if tls.get_ref().1.alpn_protocol() == Some(crate::net::tls::ACME_TLS_ALPN) {
                    tracing::info!(client = %peer, "ACME TLS-ALPN-01 validation handshake");
                    return Ok(());
                }
                let svc = hyper::service::service_fn(move |req| {
                    let r = site.answer(&req);
                    tracing::debug!(client = %peer, path = %req.uri().path(), status = r.status().as_u16(), "MTA-STS policy request");
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(8192)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), served).await {
                tracing::debug!(client = %peer, error = %e, "MTA-STS connection ended");
            }
        });
    }
}
