//! One HTTPS/1.1 client connection (hyper over rustls) to `addr`, its
//! certificate verified for `host` by the given client config: what the
//! MTA-STS policy fetch ([`crate::mta_sts_fetch`]) and the TLS-RPT report
//! POST ([`crate::report_post`]) both open.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Where opening the connection failed.
#[derive(Debug)]
pub enum OpenError {
    Connect(SocketAddr, String),
    Tls(String, String),
    Http(String),
}

/// An open connection: send requests on it; the connection task ends when
/// it is dropped.
pub struct Connection<B> {
    pub sender: SendRequest<B>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl<B> Drop for Connection<B> {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub async fn open<B>(addr: SocketAddr, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<Connection<B>, OpenError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| OpenError::Connect(addr, e.to_string()))?;
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| OpenError::Tls(host.to_string(), e.to_string()))?;
    let stream =
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| OpenError::Tls(host.to_string(), e.to_string()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| OpenError::Http(e.to_string()))?;
    Ok(Connection { sender, driver: tokio::spawn(conn) })
}
