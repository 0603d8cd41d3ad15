//! The admin HTTP endpoint on `metrics.listen`: `GET /metrics` (Prometheus text
//! format) and `GET /healthz`. A deliberately small HTTP/1.1 responder: one
//! request per connection, request head bounded to 8 KiB, 10 s to send it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::metrics::Metrics;

/// For `mx6 policyd` and `mx6 milter`: serve `/metrics` on `metrics.listen`
/// (`bound` is its listener) unless another process (`mx6 serve` with the
/// same config) has it, which is logged, not fatal.
pub fn serve_unless_taken(
    addr: std::net::SocketAddr,
    bound: std::io::Result<TcpListener>,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    match bound {
        Ok(l) => {
            tracing::info!(listen = %addr, "metrics on /metrics, health on /healthz");
            tokio::spawn(serve(l, metrics, shutdown));
        }
        Err(e) => tracing::warn!(listen = %addr, error = %e, "metrics.listen is taken (by mx6 serve?); metrics not served here"),
    }
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = shutdown.changed() => return,
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, m)).await;
        });
    }
}

async fn handle(mut s: TcpStream, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The request head ends at an empty line (RFC 9112 §2.1).
    while buf.is_empty() || mx6_message::header_end(&buf) == buf.len() {
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "method not allowed\n".to_string()),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}
