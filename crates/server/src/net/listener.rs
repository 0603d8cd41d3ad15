//! Listening sockets: one per `[[listener]]`. IPv6 sockets are IPv6-only
//! (IPV6_V6ONLY), so `[::]:25` and `0.0.0.0:25` are two sockets and every
//! connection is clearly IPv4 or IPv6. Per connection, before any session:
//! the `allow` list (on a PROXY listener: of the proxies, checked before the
//! header is read; elsewhere: of the clients), the PROXY header when the
//! listener expects one, the global session cap, and the TLS handshake of an implicit-TLS listener
//! (RFC 8314: TLS first, then SMTP). What happens next is the handler's.
//!
//! Defends against: accept errors (EMFILE) spinning the loop, handshakes that
//! never finish (60 s), more sessions than `limits.sessions`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::{ListenerConfig, ListenerKind};
use mx6_policy::prefix::contains_any;
use mx6_policy::Family;
use mx6_smtp::reply;
use socket2::{Domain, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::admin::metrics::Metrics;
use crate::net::conn::Conn;

/// Bind one listening socket (IPv6 sockets IPv6-only).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Room for a burst of connections (the kernel caps it at
    // net.core.somaxconn): a connection the queue has no room for is
    // established on the client's side only and waits for a greeting that
    // never comes.
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// What every listener shares.
pub struct Gate {
    /// The server's TLS configuration, for implicit-TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// One permit per session, all listeners together (`limits.sessions`).
    pub sessions: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub hostname: String,
    pub shutdown: watch::Receiver<bool>,
}

/// An admitted connection: the transport, the client (from the PROXY header
/// when there is one) and the listener it came in on.
pub struct Accepted {
    pub conn: Conn<TcpStream>,
    pub client: SocketAddr,
    /// Our end of the connection.
    pub local: SocketAddr,
    pub listener: ListenerConfig,
}

/// Accept connections until shutdown; run `handler` for each admitted one.
pub async fn serve<H, F>(listener: TcpListener, cfg: ListenerConfig, gate: Arc<Gate>, handler: H)
where
    H: Fn(Accepted) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let local = cfg.address;
    let mut shutdown = gate.shutdown.clone();
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
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (gate, cfg, handler) = (gate.clone(), cfg.clone(), handler.clone());
        tokio::spawn(async move { connection(stream, peer, cfg, gate, handler).await });
    }
}

async fn connection<H, F>(mut stream: TcpStream, peer: SocketAddr, cfg: ListenerConfig, gate: Arc<Gate>, handler: H)
where
    H: Fn(Accepted) -> F,
    F: Future<Output = ()>,
{
    // On a PROXY listener `allow` names the proxies: anyone else could claim
    // any client address in the header, mynetworks included.
    if cfg.proxy_protocol && !contains_any(&cfg.allow, mx6_smtp::address::canonical_ip(peer.ip())) {
        let ip = mx6_smtp::address::canonical_ip(peer.ip());
        let family = Family::of(ip).as_str();
        tracing::info!(peer = %peer, family, listener = %cfg.address, stage = "connect", reason = "not_allowed", "reject: not one of the listener's proxies (allow)");
        gate.metrics.connections.with_label_values(&[family, &cfg.address.to_string()]).inc();
        gate.metrics.reject(family, "connect", "not_allowed");
        let _ = stream.write_all(&reply::access_denied().to_bytes()).await;
        return;
    }
    let client = if cfg.proxy_protocol {
        match crate::net::proxy::read_header(&mut stream, peer).await {
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
    gate.metrics.connections.with_label_values(&[family, &listener]).inc();
    if !cfg.proxy_protocol && !cfg.allow.is_empty() && !contains_any(&cfg.allow, ip) {
        tracing::info!(client = %ip, family, listener = %cfg.address, stage = "connect", reason = "not_allowed", "reject: client not in listener allow list");
        gate.metrics.reject(family, "connect", "not_allowed");
        let _ = stream.write_all(&reply::access_denied().to_bytes()).await;
        return;
    }
    let Ok(permit) = gate.sessions.clone().try_acquire_owned() else {
        tracing::warn!(client = %ip, family, listener = %cfg.address, stage = "connect", reason = "too_many_sessions", "reject: session limit reached");
        gate.metrics.reject(family, "connect", "too_many_sessions");
        let _ = stream.write_all(&reply::too_many_sessions(&gate.hostname).to_bytes()).await;
        return;
    };
    let local = stream.local_addr().unwrap_or(cfg.address);
    let conn = if cfg.kind == ListenerKind::Submissions {
        let Some(tls) = gate.tls.clone() else { return };
        match tokio::time::timeout(Duration::from_secs(60), tokio_rustls::TlsAcceptor::from(tls).accept(stream)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
            Ok(Err(e)) => {
                tracing::info!(client = %ip, family, listener = %cfg.address, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Conn::Plain(stream)
    };
    let active = gate.metrics.sessions_active.with_label_values(&[family, &listener]);
    active.inc();
    handler(Accepted { conn, client: SocketAddr::new(ip, client.port()), local, listener: cfg }).await;
    active.dec();
    drop(permit);
}
