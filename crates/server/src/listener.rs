//! Listening sockets: one per `[[listener]]`. IPv6 sockets are IPv6-only
//! (IPV6_V6ONLY), so `[::]:25` and `0.0.0.0:25` are two sockets and every
//! connection is clearly IPv4 or IPv6. Per connection: the PROXY header when the
//! listener expects one, the `allow` list, and the global session cap.

use std::net::SocketAddr;
use std::sync::Arc;

use mx6_policy::prefix::contains_any;
use mx6_policy::Family;
use mx6_smtp::reply;
use socket2::{Domain, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

// Listener kinds: smtp (25), submission (587, STARTTLS + AUTH), submissions (465,
// implicit TLS + AUTH). The TLS handshake of an implicit-TLS listener happens
// here, before the session starts.

use crate::config::{ListenerConfig, ListenerKind};
use crate::session_driver::Conn;
use crate::Shared;

/// Bind one listening socket (IPv6 sockets IPv6-only).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accept connections until shutdown.
pub async fn serve(listener: TcpListener, cfg: ListenerConfig, shared: Arc<Shared>) {
    let local = cfg.address;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %local, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move { connection(stream, peer, cfg, shared).await });
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, cfg: ListenerConfig, shared: Arc<Shared>) {
    let client = if cfg.proxy_protocol {
        match crate::proxy::read_header(&mut stream, peer).await {
            Ok(x) => x,
            Err(e) => {
                tracing::info!(peer = %peer, listener = %cfg.address, error = %e, "connection dropped: PROXY header");
                return;
            }
        }
    } else {
        peer
    };
    let ip = mx6_smtp::address::canonical_ip(client.ip());
    let family = Family::of(ip).as_str();
    let listener = cfg.address.to_string();
    shared.metrics.connections.with_label_values(&[family, &listener]).inc();
    if !cfg.allow.is_empty() && !contains_any(&cfg.allow, ip) {
        tracing::info!(client = %ip, family = Family::of(ip).as_str(), listener = %cfg.address, stage = "connect", reason = "not_allowed", "reject: client not in listener allow list");
        shared.metrics.reject(family, "connect", "not_allowed");
        let _ = stream.write_all(&reply::access_denied().to_bytes()).await;
        return;
    }
    let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
        tracing::warn!(client = %ip, family = Family::of(ip).as_str(), listener = %cfg.address, stage = "connect", reason = "too_many_sessions", "reject: session limit reached");
        shared.metrics.reject(family, "connect", "too_many_sessions");
        let _ = stream.write_all(&reply::too_many_sessions(&shared.cfg.hostname).to_bytes()).await;
        return;
    };
    let conn = if cfg.kind == ListenerKind::Submissions {
        // RFC 8314: TLS first, then SMTP.
        let Some(tls) = shared.tls.clone() else { return };
        match tokio::time::timeout(std::time::Duration::from_secs(60), tokio_rustls::TlsAcceptor::from(tls).accept(stream)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
            Ok(Err(e)) => {
                tracing::info!(client = %ip, family = Family::of(ip).as_str(), listener = %cfg.address, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Conn::Plain(stream)
    };
    let active = shared.metrics.sessions_active.with_label_values(&[family, &listener]);
    active.inc();
    crate::session_driver::run(conn, SocketAddr::new(ip, client.port()), &cfg, shared).await;
    active.dec();
    drop(permit);
}
