//! The HTTP-01 responder (RFC 8555 §8.3) on `[acme] http_listen`: `GET
//! /.well-known/acme-challenge/<token>` answers the key authorization of a
//! pending challenge; everything else is 404, with no redirect. HTTP/1.1 by
//! hyper, one request per connection, the request head within 10 s and 8 KiB,
//! at most 256 connections at once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens of pending HTTP-01 challenges and their key authorizations.
#[derive(Debug, Default)]
pub struct Tokens(RwLock<Vec<(String, String)>>);

impl Tokens {
    pub fn add(&self, token: &str, key_authorization: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).push((token.to_string(), key_authorization.to_string()));
    }

    pub fn clear(&self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The answer to `method` `path`: status and body.
    pub fn answer(&self, method: &Method, path: &str) -> (StatusCode, String) {
        let found = path
            .strip_prefix(PREFIX)
            .and_then(|t| self.0.read().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| k == t).map(|(_, v)| v.clone()));
        match found {
            Some(v) if method == Method::GET || method == Method::HEAD => (StatusCode::OK, v),
            Some(_) => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()),
            None => (StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

/// Serve `tokens` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, tokens: Arc<Tokens>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(256));
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, body) = tokens.answer(req.method(), req.uri().path());
                tracing::info!(client = %peer, path = %req.uri().path(), status = status.as_u16(), "ACME HTTP-01 request");
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(8192)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_tokens_are_answered() {
        let t = Tokens::default();
        t.add("abc", "abc.thumb");
        assert_eq!(t.answer(&Method::GET, "/.well-known/acme-challenge/abc"), (StatusCode::OK, "abc.thumb".into()));
        assert_eq!(t.answer(&Method::GET, "/.well-known/acme-challenge/abd").0, StatusCode::NOT_FOUND);
        assert_eq!(t.answer(&Method::GET, "/").0, StatusCode::NOT_FOUND);
        assert_eq!(t.answer(&Method::POST, "/.well-known/acme-challenge/abc").0, StatusCode::METHOD_NOT_ALLOWED);
        t.clear();
        assert_eq!(t.answer(&Method::GET, "/.well-known/acme-challenge/abc").0, StatusCode::NOT_FOUND);
    }
}
