//! Streams over TCP or a unix socket (`inet:…` / `unix:/path`): connecting
//! to a content filter, and serving the Postfix-facing protocols
//! (`mx6 policyd`, `mx6 milter`) one task per connection.

use std::future::Future;
use std::time::Duration;

use mx6_config::FilterAddress;
use tokio::io::{AsyncRead, AsyncWrite};

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub async fn open(addr: &FilterAddress) -> std::io::Result<Box<dyn Stream>> {
    Ok(match addr {
        FilterAddress::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
        FilterAddress::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
    })
}

/// Bind `addr` (a stale unix socket file is replaced), then spawn
/// `handler` for every connection until `stop` resolves; the socket file is
/// removed at the end. A bind error is returned before anything is served.
pub async fn serve<H, Fut>(addr: &FilterAddress, what: &'static str, handler: H, stop: impl Future<Output = ()>) -> std::io::Result<()>
where
    H: Fn(Box<dyn Stream>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    match addr {
        FilterAddress::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)?;
            tracing::info!(listen = %addr, "{what} ready");
            accept_until(|| async { l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>) }, &handler, stop).await;
            let _ = std::fs::remove_file(path);
        }
        FilterAddress::Tcp(a) => {
            let l = crate::net::listener::bind(*a)?;
            tracing::info!(listen = %addr, "{what} ready");
            accept_until(|| async { l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>) }, &handler, stop).await;
        }
    }
    Ok(())
}

async fn accept_until<A, AFut, H, Fut>(mut accept: A, handler: &H, mut stop: std::pin::Pin<&mut impl Future<Output = ()>>)
where
    A: FnMut() -> AFut,
    AFut: Future<Output = std::io::Result<Box<dyn Stream>>>,
    H: Fn(Box<dyn Stream>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            a = accept() => match a {
                Ok(s) => { tokio::spawn(handler(s)); }
                // Out of descriptors: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = &mut stop => break,
        }
    }
}
