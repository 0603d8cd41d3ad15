//! The client connection as sessions see it: plain, or TLS after STARTTLS or
//! from the start on an implicit-TLS listener (RFC 8314). Generic over the
//! transport so the session driver runs as well over an in-memory stream in
//! tests as over TCP.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

pub enum Conn<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Append at most `max` octets to `buf`, read into its spare room.
    pub async fn read_buf(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let mut room = bytes::BufMut::limit(buf, max);
        match self {
            Conn::Plain(s) => s.read_buf(&mut room).await,
            Conn::Tls(s) => s.read_buf(&mut room).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Write everything and flush (TLS records are sent at once).
    pub async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Gone => Ok(()),
        }
    }

    /// End the connection after the last reply. TLS sends its close_notify;
    /// plain TCP needs nothing before the socket is dropped (closing it sends
    /// the FIN), which saves a system call per connection.
    pub async fn shutdown(&mut self) {
        if let Conn::Tls(s) = self {
            let _ = s.shutdown().await;
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// "TLSv1.3 with cipher …" when the connection is TLS.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Conn::Tls(t) => Some(crate::net::tls::describe(t.get_ref().1)),
            _ => None,
        }
    }
}
