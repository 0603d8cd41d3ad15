//! A connection to a content filter: TCP or a unix socket.

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
